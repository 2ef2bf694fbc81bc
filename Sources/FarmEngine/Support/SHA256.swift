import Foundation

/// SHA-256 (through OpenSSL); the only place FarmKit hashes bytes.
public struct SHA256: ~Copyable {
    private let context = OpenSSL.SHA256Context()

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        context.update(bytes)
    }

    public mutating func update(_ data: Data) {
        data.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ string: String) {
        var string = string
        string.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }

    public consuming func finalize() -> Digest {
        Digest(bytes: context.finalize())
    }

    public static func hash(_ data: Data) -> Digest {
        var hasher = SHA256()
        hasher.update(data)
        return hasher.finalize()
    }

    public static func hash(_ string: String) -> Digest {
        var hasher = SHA256()
        hasher.update(string)
        return hasher.finalize()
    }

    /// Hashes a file in 1 MiB chunks and returns its digest and size.
    public static func hash(fileAt path: String) throws -> (digest: Digest, size: Int64) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileSystemError.io(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        var hasher = SHA256()
        var size: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileSystemError.io(operation: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            size += Int64(n)
        }
        return (hasher.finalize(), size)
    }
}
