import Foundation

/// Writes files so that a reader, or a crash, sees either the old content or the new, never a part.
public enum AtomicFile {
    /// Writes `data` to a temporary file in `path`'s directory, fsyncs it, renames it over `path`
    /// and fsyncs the directory.
    public static func write(_ data: Data, to path: String, mode: mode_t = 0o644, sync: Bool = true) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = directory + "/.tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))-" + (path as NSString).lastPathComponent
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw FileSystemError.io(operation: "create", path: temporary, errno: errno) }
        var ok = false
        defer {
            if !ok { unlink(temporary) }
        }
        do {
            defer { close(fd) }
            try data.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let n = Foundation.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw FileSystemError.io(operation: "write", path: temporary, errno: errno)
                    }
                    offset += n
                }
            }
            if fchmod(fd, mode) != 0 { throw FileSystemError.io(operation: "chmod", path: temporary, errno: errno) }
            if sync, fsync(fd) != 0 { throw FileSystemError.io(operation: "fsync", path: temporary, errno: errno) }
        }
        try rename(temporary, to: path)
        ok = true
        if sync { syncDirectory(directory) }
    }

    public static func rename(_ from: String, to: String) throws {
        if Foundation.rename(from, to) != 0 {
            throw FileSystemError.io(operation: "rename to \(to)", path: from, errno: errno)
        }
    }

    /// Makes a rename durable: the directory entry reaches the disk.
    public static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    /// Creates a directory and its parents; an existing directory is fine.
    public static func makeDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw FileSystemError.io(operation: "mkdir", path: path, errno: errno == 0 ? EIO : errno)
        }
    }
}
