import CZlib
import FarmEngine
import Foundation

// zlib behind Swift: the only file that imports `CZlib`. It inflates what LiME deflates; bundles
// are gzipped by `Deflate` (libdeflate).

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
