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

    /// One gzip member of `input` at level 6, compressed on every core: `GzipWriter` in one call.
    public static func parallelGzip(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let writer = GzipWriter()
        writer.append(input)
        return try writer.finish()
    }

    /// Gzips what is appended the way pigz does it, compressing full blocks on other cores while
    /// the caller goes on appending: fixed blocks, each deflated at level 6 on its own with the
    /// previous 32 KiB as its dictionary and ended by a sync flush, then a last (possibly empty)
    /// block that finishes the stream, so the concatenation is one deflate stream; the CRC is
    /// combined over the blocks. The bytes depend only on the input, not on the number of cores
    /// or the timing: the header has no name and MTIME 0, the OS byte is Unix.
    public final class GzipWriter: @unchecked Sendable {
        private let queue = DispatchQueue(label: "farm.gzip", attributes: .concurrent)
        private let group = DispatchGroup()
        /// Blocks queued or being compressed at most, so memory stays bounded.
        private let slots = DispatchSemaphore(value: 2 * ProcessInfo.processInfo.activeProcessorCount + 2)
        private let lock = NSLock()
        // Guarded by `lock`: written by the compressing threads.
        private var outputs: [Int: (bytes: [UInt8], crc: UInt, length: Int)] = [:]
        private var failure: Int32 = Z_OK
        // Only touched by the appending thread.
        private var pending: [UInt8] = []
        private var previousTail: [UInt8] = []
        private var blocks = 0
        private var total = 0

        public init() {
            pending.reserveCapacity(Zlib.gzipBlockSize)
        }

        public func append(_ bytes: UnsafeRawBufferPointer) {
            var offset = 0
            while offset < bytes.count {
                let take = min(Zlib.gzipBlockSize - pending.count, bytes.count - offset)
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)]))
                offset += take
                if pending.count == Zlib.gzipBlockSize { dispatch(last: false) }
            }
        }

        /// The whole gzip member; the writer takes no more input.
        public func finish() throws -> [UInt8] {
            dispatch(last: true)
            group.wait()
            if failure != Z_OK {
                throw FarmError(message: "zlib failed to compress (status \(failure)); the machine may be out of memory")
            }
            var crc = crc32(0, nil, 0)
            var size = 10 + 8
            for index in 0..<blocks {
                let block = outputs[index]!
                crc = crc32_combine(crc, block.crc, off_t(block.length))
                size += block.bytes.count
            }
            // RFC 1952: magic, deflate, no flags, MTIME 0, XFL 0, OS 3 (Unix).
            var gzip: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]
            gzip.reserveCapacity(size)
            for index in 0..<blocks { gzip.append(contentsOf: outputs[index]!.bytes) }
            outputs = [:]
            let isize = UInt32(truncatingIfNeeded: total)
            for shift in stride(from: 0, to: 32, by: 8) { gzip.append(UInt8(truncatingIfNeeded: UInt32(crc) >> UInt32(shift))) }
            for shift in stride(from: 0, to: 32, by: 8) { gzip.append(UInt8(truncatingIfNeeded: isize >> UInt32(shift))) }
            return gzip
        }

        private func dispatch(last: Bool) {
            let block = pending, dictionary = previousTail, number = blocks
            previousTail = Array(pending.suffix(Zlib.dictionarySize))
            pending = []
            pending.reserveCapacity(Zlib.gzipBlockSize)
            blocks += 1
            total += block.count
            slots.wait()
            queue.async(group: group) { [self] in
                let result = block.withUnsafeBufferPointer { block in
                    dictionary.withUnsafeBufferPointer { Zlib.deflateBlock(block, dictionary: $0, last: last) }
                }
                let crc = block.withUnsafeBufferPointer { crc32(0, $0.baseAddress, uInt($0.count)) }
                lock.withLock {
                    outputs[number] = (result.output, crc, block.count)
                    if result.status != Z_OK { failure = result.status }
                }
                slots.signal()
            }
        }
    }

    /// Raw deflate of one block at level 6, ending on a byte boundary (sync flush) or, for the
    /// last block, with the final block marker.
    fileprivate static func deflateBlock(_ block: UnsafeBufferPointer<UInt8>, dictionary: UnsafeBufferPointer<UInt8>,
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

// MARK: Inflating (farm capture)
/// zlib's inflate, fed as bytes arrive. LiME's `compress=1` stream is
/// zlib format (RFC 1950: `zlib_deflateInit2` with positive window bits, so a 2-byte header and
/// an Adler-32 trailer), holding the same bytes, LiME headers included, as an uncompressed one.
final class Inflater {
    /// Heap-allocated: zlib's state points back at its `z_stream`, which must not move.
    private let stream: UnsafeMutablePointer<z_stream>
    /// The stream's end (its checksum checked) was reached.
    private(set) var ended = false

    init() throws {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = farm_inflate_init(stream)
        guard status == Z_OK else {
            stream.deallocate()
            throw FarmError("zlib could not start inflating (inflateInit: \(status))")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    /// Compressed bytes taken so far.
    var consumed: UInt64 { UInt64(stream.pointee.total_in) }
    /// Plain bytes given so far.
    var produced: UInt64 { UInt64(stream.pointee.total_out) }
    /// Whether the last `feed`'s bytes are all taken.
    var needsInput: Bool { stream.pointee.avail_in == 0 }

    /// The next compressed bytes; they must stay valid until `needsInput`.
    func feed(_ input: UnsafeRawBufferPointer) {
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
    }

    /// Inflates into `output`; returns the plain bytes written there (fewer than its size: the
    /// input is used up or the stream ended). Throws on bytes that are not a zlib stream, a
    /// checksum that does not match, or bytes after the stream's end.
    func inflate(into output: UnsafeMutableRawBufferPointer) throws -> Int {
        guard !ended else {
            if !needsInput { throw FarmError("\(stream.pointee.avail_in) byte(s) follow the end of the compressed stream") }
            return 0
        }
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(output.count)
        let status = CZlib.inflate(stream, Z_NO_FLUSH)
        let written = output.count - Int(stream.pointee.avail_out)
        switch status {
        case Z_OK, Z_BUF_ERROR:
            // Z_BUF_ERROR: no progress possible until more input arrives; not an error in a stream.
            return written
        case Z_STREAM_END:
            ended = true
            if !needsInput { throw FarmError("\(stream.pointee.avail_in) byte(s) follow the end of the compressed stream") }
            return written
        default:
            let detail = stream.pointee.msg.map { String(cString: $0) } ?? "zlib status \(status)"
            throw FarmError("the compressed stream is corrupt at compressed byte \(consumed): \(detail)")
        }
    }
}
