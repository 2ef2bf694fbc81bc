import CDeflate
import FarmEngine
import Foundation

/// libdeflate behind Swift: the only file that imports `CDeflate`. Bundles are gzipped here:
/// libdeflate's level 6 gives zlib's level-6 size in a third of zlib's time.
public enum Deflate {
    /// The block size of `GzipWriter`. Fixed, because the blocks decide the output's bytes:
    /// changing it changes every bundle (and must bump the bundle task's version).
    public static let gzipBlockSize = 1 << 20
    static let level: Int32 = 6

    /// `input` gzipped on every core: `GzipWriter` in one call.
    public static func parallelGzip(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        let writer = GzipWriter()
        writer.append(input)
        return try writer.finish()
    }

    /// Gzips what is appended, compressing full blocks on other cores while the caller goes on
    /// appending. Each fixed-size block is one gzip member (RFC 1952 allows a file of several;
    /// gzip, tar, libarchive, Python and Go read them as one stream, as they read bgzip's).
    /// libdeflate compresses whole buffers only and cannot end a block short of final, so a
    /// member per block is how it runs in parallel; at 1 MiB a block's fresh start costs under
    /// 0.1% in size. The bytes depend only on the input, not on the number of cores or the
    /// timing: no name, MTIME 0, the OS byte is Unix.
    public final class GzipWriter: @unchecked Sendable {
        private let queue = DispatchQueue(label: "farm.gzip", attributes: .concurrent)
        private let group = DispatchGroup()
        /// Blocks queued or being compressed at most, so memory stays bounded.
        private let slots = DispatchSemaphore(value: 2 * ProcessInfo.processInfo.activeProcessorCount + 2)
        private let lock = NSLock()
        // Guarded by `lock`: written by the compressing threads.
        private var members: [Int: [UInt8]] = [:]
        private var failed = false
        // Only touched by the appending thread.
        private var pending: [UInt8] = []
        private var blocks = 0

        public init() {
            pending.reserveCapacity(Deflate.gzipBlockSize)
        }

        public func append(_ bytes: UnsafeRawBufferPointer) {
            var offset = 0
            while offset < bytes.count {
                let take = min(Deflate.gzipBlockSize - pending.count, bytes.count - offset)
                pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)]))
                offset += take
                if pending.count == Deflate.gzipBlockSize { dispatch() }
            }
        }

        /// The whole gzip file; the writer takes no more input.
        public func finish() throws -> [UInt8] {
            // Empty input still makes one (empty) member: a gzip file has at least one.
            if !pending.isEmpty || blocks == 0 { dispatch() }
            group.wait()
            if failed {
                throw FarmError(message: "libdeflate could not allocate a compressor; the machine may be out of memory")
            }
            var gzip: [UInt8] = []
            gzip.reserveCapacity((0..<blocks).reduce(0) { $0 + members[$1]!.count })
            for index in 0..<blocks { gzip.append(contentsOf: members[index]!) }
            members = [:]
            return gzip
        }

        private func dispatch() {
            let block = pending, number = blocks
            pending = []
            pending.reserveCapacity(Deflate.gzipBlockSize)
            blocks += 1
            slots.wait()
            queue.async(group: group) { [self] in
                let member = block.withUnsafeBytes { Deflate.gzipMember($0) }
                lock.withLock {
                    if let member { members[number] = member } else { failed = true }
                }
                slots.signal()
            }
        }
    }

    /// One gzip member of `block`; nil when libdeflate cannot allocate its compressor.
    static func gzipMember(_ block: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let compressor = libdeflate_alloc_compressor(level) else { return nil }
        defer { libdeflate_free_compressor(compressor) }
        // RFC 1952: magic, deflate, no flags, MTIME 0, XFL 0, OS 3 (Unix).
        let header: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]
        let bound = libdeflate_deflate_compress_bound(compressor, block.count)
        var member = [UInt8](repeating: 0, count: header.count + bound + 8)
        let written = member.withUnsafeMutableBytes { out -> Int in
            out.copyMemory(from: UnsafeRawBufferPointer(start: header, count: header.count))
            return libdeflate_deflate_compress(compressor, block.baseAddress, block.count,
                                               out.baseAddress! + header.count, bound)
        }
        // The bound is libdeflate's own worst case, so 0 (did not fit) cannot happen.
        precondition(written > 0, "libdeflate wrote nothing within its own bound")
        member.removeSubrange((header.count + written)...)
        let crc = libdeflate_crc32(0, block.baseAddress, block.count)
        let size = UInt32(truncatingIfNeeded: block.count)
        for shift in stride(from: 0, to: 32, by: 8) { member.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        for shift in stride(from: 0, to: 32, by: 8) { member.append(UInt8(truncatingIfNeeded: size >> UInt32(shift))) }
        return member
    }
}
