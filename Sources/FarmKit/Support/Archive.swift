import CArchive
import Foundation

// Placeholder until the bundle work's full libarchive wrapper lands: only raw decompression.
public enum Archive {
    public struct Failure: Error, CustomStringConvertible, LocalizedError {
        public let message: String
        public var description: String { message }
        public var errorDescription: String? { message }
    }

    public static func decompress(_ data: Data) throws -> Data {
        guard let reader = archive_read_new() else { throw Failure(message: "libarchive: out of memory") }
        defer { archive_read_free(reader) }
        archive_read_support_filter_all(reader)
        archive_read_support_format_raw(reader)
        var output = Data()
        try data.withUnsafeBytes { raw in
            guard archive_read_open_memory(reader, raw.baseAddress, raw.count) == ARCHIVE_OK else {
                throw Failure(message: "libarchive: \(String(cString: archive_error_string(reader)))")
            }
            var entry: OpaquePointer?
            guard archive_read_next_header(reader, &entry) == ARCHIVE_OK else {
                throw Failure(message: "libarchive: \(String(cString: archive_error_string(reader)))")
            }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let n = archive_read_data(reader, &buffer, buffer.count)
                if n < 0 { throw Failure(message: "libarchive: \(String(cString: archive_error_string(reader)))") }
                if n == 0 { break }
                output.append(buffer, count: n)
            }
        }
        return output
    }
}
