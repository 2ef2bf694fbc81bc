import CLZMA
import FarmEngine
import Foundation

/// liblzma behind Swift: the only file that imports `CLZMA`. libarchive decodes xz on one core;
/// a .deb's `data.tar.xz` written by dpkg-deb on several cores has independent blocks (Debian's
/// 6.1 headers: three of 24 MiB), which liblzma's threaded decoder decodes at once.
enum LZMA {
    /// The decoded bytes of the xz stream `data` (from `name`, for messages), decoded on every
    /// core; refused past `limit` bytes so a small bomb cannot fill memory.
    static func decompressXZ(_ data: Data, name: String, limit: Int) throws -> Data {
        var stream = lzma_stream()
        var options = lzma_mt()
        options.threads = UInt32(max(1, ProcessInfo.processInfo.activeProcessorCount))
        // Threads need memory per block (about twice a block); past this, liblzma decodes on one
        // thread rather than fail. Nothing stops it: `limit` bounds the output.
        options.memlimit_threading = 1 << 30
        options.memlimit_stop = UInt64.max
        var status = lzma_stream_decoder_mt(&stream, &options)
        guard status == LZMA_OK else { throw FarmError(message: "\(name): liblzma could not start decoding (status \(status.rawValue)); the machine may be out of memory") }
        defer { lzma_end(&stream) }
        // Headers compress about sixfold; room for eightfold so the buffer is seldom grown (and
        // copied). Untouched pages of the reserve cost nothing.
        var output = Data(count: min(limit, max(1 << 16, data.count * 8)))
        var produced = 0
        try data.withUnsafeBytes { (input: UnsafeRawBufferPointer) in
            stream.next_in = input.bindMemory(to: UInt8.self).baseAddress
            stream.avail_in = input.count
            while true {
                if produced == output.count {
                    guard output.count < limit else {
                        throw FarmError(message: "\(name): decompresses to more than \(limit) bytes; the package is malformed or hostile")
                    }
                    output.count = min(limit, output.count * 2)
                }
                status = output.withUnsafeMutableBytes { out in
                    stream.next_out = out.bindMemory(to: UInt8.self).baseAddress! + produced
                    // At most 1 MiB a call: handed the whole buffer at once, liblzma decodes straight
                    // into it on one thread (0.8 s for Debian's 6.1 common headers, 0.45 s in steps).
                    stream.avail_out = min(1 << 20, out.count - produced)
                    let result = lzma_code(&stream, LZMA_FINISH)
                    produced = stream.next_out - out.bindMemory(to: UInt8.self).baseAddress!
                    return result
                }
                if status == LZMA_STREAM_END { break }
                guard status == LZMA_OK else {
                    throw FarmError(message: "\(name): not a valid xz stream (liblzma status \(status.rawValue) at compressed byte \(stream.total_in)); the package is damaged: fetch it again")
                }
            }
        }
        output.count = produced
        return output
    }
}
