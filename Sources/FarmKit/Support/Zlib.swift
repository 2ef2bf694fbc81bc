import CZlib
import FarmEngine
import Foundation

/// zlib behind Swift: the only file that imports `CZlib`.
public enum Zlib {
    /// The block size of `parallelGzip`. Fixed, because the blocks decide the output's bytes:
    /// changing it changes every bundle (and must bump the bundle task's version).
    public static let gzipBlockSize = 256 << 10
    /// What each block is primed with: deflate's whole window, so a block boundary costs almost
    /// nothing in size.
    static let dictionarySize = 32 << 10

    /// One gzip member of `input` at level 6, compressed on every core the way pigz does it: fixed
    /// blocks, each deflated on its own with the previous 32 KiB as its dictionary and ended by a
    /// sync flush (the last by finishing the stream), so the concatenation is one deflate stream;
    /// the CRC is combined over the blocks. The bytes depend only on `input`, not on the number of
    /// cores or the timing: the header has no name and MTIME 0, the OS byte is Unix.
    public static func parallelGzip(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let size = gzipBlockSize
        let blocks = max(1, (input.count + size - 1) / size)
        nonisolated(unsafe) var outputs = [[UInt8]](repeating: [], count: blocks)
        nonisolated(unsafe) var crcs = [UInt](repeating: 0, count: blocks)
        nonisolated(unsafe) var failures = [Int32](repeating: Z_OK, count: blocks)
        nonisolated(unsafe) let base = input.baseAddress.map { UnsafePointer<UInt8>($0.assumingMemoryBound(to: UInt8.self)) }
        let count = input.count
        outputs.withUnsafeMutableBufferPointer { outputs in
            crcs.withUnsafeMutableBufferPointer { crcs in
                failures.withUnsafeMutableBufferPointer { failures in
                    nonisolated(unsafe) let outputs = outputs, crcs = crcs, failures = failures
                    DispatchQueue.concurrentPerform(iterations: blocks) { index in
                        let start = index * size
                        let length = min(size, count - start)
                        let dictionaryStart = max(0, start - dictionarySize)
                        let block = base.map { UnsafeBufferPointer(start: $0 + start, count: length) } ?? UnsafeBufferPointer(start: nil, count: 0)
                        let dictionary = base.map { UnsafeBufferPointer(start: $0 + dictionaryStart, count: start - dictionaryStart) } ?? UnsafeBufferPointer(start: nil, count: 0)
                        let result = deflateBlock(block, dictionary: dictionary, last: index == blocks - 1)
                        outputs[index] = result.output
                        failures[index] = result.status
                        crcs[index] = crc32(0, block.baseAddress, uInt(length))
                    }
                }
            }
        }
        if let failure = failures.first(where: { $0 != Z_OK }) {
            throw FarmError(message: "zlib failed to compress (status \(failure)); the machine may be out of memory")
        }
        var crc = crc32(0, nil, 0)
        for index in 0..<blocks {
            let length = min(size, count - index * size)
            crc = crc32_combine(crc, crcs[index], off_t(max(length, 0)))
        }
        // RFC 1952: magic, deflate, no flags, MTIME 0, XFL 0, OS 3 (Unix).
        var gzip: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]
        gzip.reserveCapacity(10 + outputs.reduce(0) { $0 + $1.count } + 8)
        for output in outputs { gzip.append(contentsOf: output) }
        let isize = UInt32(truncatingIfNeeded: count)
        for shift in stride(from: 0, to: 32, by: 8) { gzip.append(UInt8(truncatingIfNeeded: UInt32(crc) >> UInt32(shift))) }
        for shift in stride(from: 0, to: 32, by: 8) { gzip.append(UInt8(truncatingIfNeeded: isize >> UInt32(shift))) }
        return gzip
    }

    /// Raw deflate of one block at level 6, ending on a byte boundary (sync flush) or, for the
    /// last block, with the final block marker.
    private static func deflateBlock(_ block: UnsafeBufferPointer<UInt8>, dictionary: UnsafeBufferPointer<UInt8>,
                                     last: Bool) -> (output: [UInt8], status: Int32) {
        var stream = z_stream()
        // windowBits -15: raw deflate, the gzip wrapper is written once around all blocks.
        var status = deflateInit2_(&stream, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { return ([], status) }
        defer { deflateEnd(&stream) }
        if dictionary.count > 0 {
            status = deflateSetDictionary(&stream, dictionary.baseAddress, uInt(dictionary.count))
            guard status == Z_OK else { return ([], status) }
        }
        let bound = Int(deflateBound(&stream, uLong(block.count))) + 64
        var output = [UInt8](repeating: 0, count: bound)
        let produced: Int = output.withUnsafeMutableBufferPointer { out in
            stream.next_in = UnsafeMutablePointer(mutating: block.baseAddress)
            stream.avail_in = uInt(block.count)
            stream.next_out = out.baseAddress
            stream.avail_out = uInt(out.count)
            status = deflate(&stream, last ? Z_FINISH : Z_SYNC_FLUSH)
            return out.count - Int(stream.avail_out)
        }
        // A full output buffer after a flush may hide pending output: the bound is generous, so refuse it.
        let done = stream.avail_out > 0 && (last ? status == Z_STREAM_END : status == Z_OK && stream.avail_in == 0)
        guard done else { return ([], status == Z_OK ? Z_BUF_ERROR : status) }
        output.removeSubrange(produced...)
        return (output, Z_OK)
    }
}
