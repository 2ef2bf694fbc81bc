import Foundation

public enum ContentStoreError: Error, CustomStringConvertible, LocalizedError {
    case corrupt(digest: Digest, path: String, actual: Digest)
    case missing(digest: Digest, path: String)

    public var description: String {
        switch self {
        case let .corrupt(digest, path, actual):
            return "\(path): object is corrupt (its content hashes to \(actual), not \(digest)); it was removed, run the build again to remake it"
        case let .missing(digest, path):
            return "\(path): object \(digest) is missing from the store; run the build again to remake it"
        }
    }

    public var errorDescription: String? { description }
}

/// `cache/cas/xx/<sha256>`: immutable files named by their own sha256, written to a temporary name,
/// fsynced, then renamed; checked against their name whenever they are read.
public struct ContentStore: Sendable {
    public let root: String
    let temporary: String
    /// Where tasks keep files on the cache's file system until they enter the store.
    public var temporaryDirectory: String { temporary }

    public init(root: String) throws {
        self.root = root
        self.temporary = root + "/tmp"
        try AtomicFile.makeDirectory(temporary)
    }

    /// A store only read from: nothing is created.
    public init(reading root: String) {
        self.root = root
        self.temporary = root + "/tmp"
    }

    public func path(of digest: Digest) -> String { ContentStore.path(in: root, of: digest) }

    public static func path(in root: String, of digest: Digest) -> String {
        let hex = digest.hex
        return "\(root)/\(hex.prefix(2))/\(hex)"
    }

    /// True when an object exists: the cheap check a no-op build makes. Its bytes are hashed
    /// whenever it is read and by `farm gc --verify`; a corrupt object is deleted on the spot, so
    /// the task that made it counts as not cached and runs again.
    public func isPresent(_ digest: Digest) -> Bool {
        access(path(of: digest), F_OK) == 0
    }

    /// The names of all objects, read directory by directory: for a large build, cheaper than one
    /// `stat` per object.
    public func listing() -> Set<String> {
        var names = Set<String>()
        for high in 0..<256 {
            let directory = root + "/" + String(format: "%02x", high)
            guard let handle = opendir(directory) else { continue }
            defer { closedir(handle) }
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name.utf8.count == 64 { names.insert(name) }
            }
        }
        return names
    }

    /// Marks an object used now (its mtime), which `farm gc --max-size` removes least recently used
    /// first. The object's bytes and its directory are untouched, so no up-to-date stamp changes.
    public func touch(_ digest: Digest) {
        utimensat(AT_FDCWD, path(of: digest), nil, 0)
    }

    /// How stale a last use may be before a hit records a new one: as `relatime` does for atime,
    /// so builds repeated within the hour cost one `stat` per object, not an inode write.
    public static let useGranularity: Double = 3600

    /// `touch`, unless the object was used after `cutoff` (seconds since 1970) already.
    public func markUsed(_ digest: Digest, ifUsedBefore cutoff: Double) {
        var info = stat()
        guard stat(path(of: digest), &info) == 0, Double(info.st_mtim.tv_sec) < cutoff else { return }
        touch(digest)
    }

    /// When the object was last used (made, or taken from the store by a build), as seconds since 1970.
    public func lastUse(of digest: Digest) -> Double? {
        var info = stat()
        guard stat(path(of: digest), &info) == 0 else { return nil }
        return Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
    }

    /// The object's disk use, in blocks as `du` counts them.
    public func diskUsage(of digest: Digest) -> Int64 {
        var info = stat()
        return stat(path(of: digest), &info) == 0 ? Int64(info.st_blocks) * 512 : 0
    }

    public func size(of digest: Digest) -> Int64? {
        var info = stat()
        return stat(path(of: digest), &info) == 0 ? Int64(info.st_size) : nil
    }

    /// A fresh, unique temporary path inside the store's file system, for a task to write into.
    public func temporaryPath(_ hint: String = "object") -> String {
        "\(temporary)/\(hint)-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    }

    public func put(_ data: Data) throws -> (digest: Digest, size: Int64) {
        let file = temporaryPath()
        try AtomicFile.write(data, to: file, mode: 0o444, sync: false)
        return try adopt(file)
    }

    /// Moves a finished file into the store under its own digest. The file must be on the cache's
    /// file system (see `temporaryPath`); it is gone from its old path afterwards.
    public func adopt(_ file: String) throws -> (digest: Digest, size: Int64) {
        let (digest, size) = try SHA256.hash(fileAt: file)
        try place(file, as: digest)
        return (digest, size)
    }

    /// Moves a file into the store only if its bytes hash to `expected` (a download from a server
    /// that does not check what it serves); otherwise removes it. Returns what the bytes hash to.
    public func adopt(_ file: String, expecting expected: Digest) throws -> (digest: Digest, size: Int64) {
        let (digest, size) = try SHA256.hash(fileAt: file)
        guard digest == expected else {
            unlink(file)
            return (digest, size)
        }
        try place(file, as: digest)
        return (digest, size)
    }

    private func place(_ file: String, as digest: Digest) throws {
        let target = path(of: digest)
        if isPresent(digest) {
            unlink(file)
            // Made again: as recently used as a new object.
            touch(digest)
            return
        }
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            fchmod(fd, 0o444)
            fsync(fd)
            close(fd)
        }
        let directory = (target as NSString).deletingLastPathComponent
        try AtomicFile.makeDirectory(directory)
        try AtomicFile.rename(file, to: target)
        AtomicFile.syncDirectory(directory)
    }

    /// Copies a file into the store (the original stays).
    public func putCopy(of source: String) throws -> (digest: Digest, size: Int64) {
        let file = temporaryPath()
        do {
            try FileManager.default.copyItem(atPath: source, toPath: file)
        } catch {
            throw FileSystemError.io(operation: "copy into the store", path: source, errno: errno == 0 ? EIO : errno)
        }
        return try adopt(file)
    }

    /// The path of an object after checking its bytes against its name. A corrupt object is
    /// removed, so the next build remakes it instead of serving it.
    public func verifiedPath(of digest: Digest) throws -> String {
        let file = path(of: digest)
        guard access(file, F_OK) == 0 else { throw ContentStoreError.missing(digest: digest, path: file) }
        let actual = try SHA256.hash(fileAt: file).digest
        guard actual == digest else {
            unlink(file)
            throw ContentStoreError.corrupt(digest: digest, path: file, actual: actual)
        }
        return file
    }

    public func read(_ digest: Digest) throws -> Data {
        let file = try verifiedPath(of: digest)
        guard let data = FileManager.default.contents(atPath: file) else { throw ContentStoreError.missing(digest: digest, path: file) }
        guard SHA256.hash(data) == digest else { throw ContentStoreError.missing(digest: digest, path: file) }
        return data
    }

    /// Every object in the store with its size, for `farm gc`.
    public func allObjects() -> [(digest: Digest, path: String)] {
        var found: [(Digest, String)] = []
        let manager = FileManager.default
        for prefix in (try? manager.contentsOfDirectory(atPath: root)) ?? [] where prefix.count == 2 {
            for name in (try? manager.contentsOfDirectory(atPath: "\(root)/\(prefix)")) ?? [] {
                if let digest = Digest(hex: name) { found.append((digest, "\(root)/\(prefix)/\(name)")) }
            }
        }
        return found
    }
}
