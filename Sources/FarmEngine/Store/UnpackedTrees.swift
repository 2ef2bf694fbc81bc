import Foundation

/// `cache/unpacked/<sha256>`: a tarball from the CAS unpacked once per cache (toolchain roots,
/// bundle trees) and shared by every task that needs it. A tree appears under its final name only
/// when complete (unpacked beside it, then renamed), under a lock, so concurrent tasks and farm
/// processes unpack it once. The sandboxes mount these trees read-only, and the trees are
/// read-only on disk too (no write bit anywhere); `<sha256>.manifest` beside each lists its files
/// and links as unpacked, so `farm gc --verify` can find a tree edited behind farm's back.
public struct UnpackedTrees: Sendable {
    public let root: String
    let objects: ContentStore

    public init(objects: ContentStore) {
        self.objects = objects
        root = (objects.root as NSString).deletingLastPathComponent + "/unpacked"
    }

    public func path(of digest: Digest) -> String { root + "/" + digest.hex }

    /// The unpacked tree of the CAS object `digest` (a tar archive, compressed or not), made now if
    /// missing.
    public func tree(of digest: Digest, log: TaskLog) throws -> String {
        let final = path(of: digest)
        if FileManager.default.fileExists(atPath: final) { return final }
        try AtomicFile.makeDirectory(root)
        let lock = open(final + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw FileSystemError.io(operation: "open", path: final + ".lock", errno: errno) }
        defer { close(lock) }
        flock(lock, LOCK_EX)
        defer { flock(lock, LOCK_UN) }
        if FileManager.default.fileExists(atPath: final) { return final }

        let archive = try objects.verifiedPath(of: digest)
        // Under the lock nobody else unpacks this object: any other staging of it is a killed farm's.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where name.hasPrefix(".unpacking-\(digest.hex)-") {
            Leftovers.remove(root + "/" + name)
        }
        let staging = root + "/.unpacking-\(digest.hex)-\(getpid())"
        try AtomicFile.makeDirectory(staging)
        do {
            // Device nodes are left out: every sandbox brings its own /dev.
            try UnpackedTrees.untar(archive, into: staging, options: ["--numeric-owner", "--preserve-permissions", "--exclude=./dev/*"])
        } catch {
            Leftovers.remove(staging)
            throw error
        }
        do {
            try UnpackedTrees.makeReadOnly(staging)
            // Written before the rename: a tree under its final name always has its manifest.
            try AtomicFile.write(try JSONEncoder().encode(UnpackedTrees.listing(of: staging)), to: final + ".manifest")
        } catch {
            Leftovers.remove(staging)
            throw error
        }
        try AtomicFile.rename(staging, to: final)
        log.append("unpacked \(digest.short) into \(final)\n")
        return final
    }

    /// Extracts a tar archive (compressed or not) into an existing directory with GNU tar.
    public static func untar(_ archive: String, into directory: String, options: [String]) throws {
        guard let tar = Executable.find("tar") else { throw FarmError.toolMissing(tool: "tar", package: "tar", purpose: "unpacking trees") }
        let result = try Executable.run(tar, ["--extract", "--file", archive, "--directory", directory] + options)
        guard result.status == 0 else {
            throw FarmError(message: "unpacking \(archive) failed: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Removes the trees of objects that are no longer kept, trees without a manifest (unpacked
    /// by an older farm, and writable) and what killed unpacks left; returns how many trees.
    /// Only while no build runs (`farm gc` holds the cache's lock exclusively).
    public func prune(keeping kept: Set<String>) -> Int {
        var removed = 0
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        let present = Set(names)
        for name in names {
            if name.hasPrefix(".unpacking-") {
                Leftovers.remove(root + "/" + name)
                continue
            }
            let hex = name.split(separator: ".", maxSplits: 1).first.map(String.init) ?? name
            guard hex.utf8.count == 64 else { continue }
            let tree = name == hex
            if kept.contains(hex), tree ? present.contains(hex + ".manifest") : present.contains(hex) { continue }
            // A kept tree's lock stays; a lock of a tree that is going goes with it.
            if kept.contains(hex), name.hasSuffix(".lock") { continue }
            Leftovers.remove(root + "/" + name)
            if tree { removed += 1 }
        }
        return removed
    }

    /// The kept trees (those whose object is in `kept`) whose files or links differ from their
    /// manifest, each with what differs; those trees are removed, so the next use unpacks again.
    public func verify(keeping kept: Set<String>) -> (checked: Int, corrupt: [String]) {
        var checked = 0
        var corrupt: [String] = []
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted()
        where name.utf8.count == 64 && kept.contains(name) {
            checked += 1
            let tree = root + "/" + name
            guard let difference = UnpackedTrees.difference(tree) else { continue }
            corrupt.append("\(tree) (unpacked tree: \(difference))")
            Leftovers.remove(tree)
            unlink(tree + ".manifest")
        }
        return (checked, corrupt)
    }

    /// One file, symlink or other non-directory of a tree. Directories are left out: farm adds
    /// empty mount points to toolchain roots after unpacking (`Sandbox.prepareMountPoints`).
    struct Entry: Codable, Equatable {
        var path: String
        var mode: UInt32
        var size: Int64
        /// A regular file's sha256, a symlink's target.
        var content: String
    }

    static func listing(of tree: String) throws -> [Entry] {
        var entries: [Entry] = []
        try FileWalk.walk(tree) { relative, info in
            let type = info.st_mode & S_IFMT
            guard type != S_IFDIR else { return }
            let path = tree + "/" + relative
            var content = ""
            if type == S_IFREG {
                content = try SHA256.hash(fileAt: path).digest.hex
            } else if type == S_IFLNK {
                content = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? ""
            }
            entries.append(Entry(path: relative, mode: UInt32(info.st_mode), size: Int64(info.st_size), content: content))
        }
        return entries
    }

    /// What differs between a tree and its manifest, or nil when nothing does.
    static func difference(_ tree: String) -> String? {
        guard let data = FileManager.default.contents(atPath: tree + ".manifest"),
              let recorded = try? JSONDecoder().decode([Entry].self, from: data) else {
            return "its manifest \(tree).manifest is missing or unreadable"
        }
        guard let current = try? listing(of: tree) else { return "a file in it cannot be read" }
        let now = Dictionary(current.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
        let then = Set(recorded.map(\.path))
        for entry in recorded {
            guard let found = now[entry.path] else { return "\(entry.path) was removed" }
            if found.content != entry.content || found.size != entry.size { return "\(entry.path) was modified" }
            if found.mode != entry.mode { return "\(entry.path) changed mode to \(String(found.mode & 0o7777, radix: 8))" }
        }
        if let added = current.first(where: { !then.contains($0.path) }) { return "\(added.path) was added" }
        return nil
    }

    /// Takes every write bit away, contents before their directory.
    static func makeReadOnly(_ tree: String) throws {
        let strip = { (relative: String, info: stat) throws in
            guard info.st_mode & S_IFMT != S_IFLNK, info.st_mode & 0o222 != 0 else { return }
            let path = relative.isEmpty ? tree : tree + "/" + relative
            guard chmod(path, info.st_mode & 0o7555) == 0 else { throw FileSystemError.io(operation: "chmod", path: path, errno: errno) }
        }
        try FileWalk.walk(tree, entering: { relative, info in
            if info.st_mode & S_IFMT != S_IFDIR { try strip(relative, info) }
        }, leaving: strip)
    }

    /// Creates an empty directory (a mount point) inside the read-only tree `tree`, giving each
    /// parent its write bit only for the moment it takes, under the tree's lock: two tasks may
    /// add mount points to one toolchain root at once.
    public static func makeMountPoint(_ path: String, inTree tree: String) throws {
        if (try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)) != nil { return }
        let lock = open(tree + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw FileSystemError.io(operation: "open", path: tree + ".lock", errno: errno) }
        defer { close(lock) }
        flock(lock, LOCK_EX)
        var parent = tree
        for component in path.dropFirst(tree.count).split(separator: "/") {
            let directory = parent + "/" + component
            var info = stat()
            if lstat(directory, &info) != 0 {
                guard stat(parent, &info) == 0 else { throw FileSystemError.io(operation: "stat", path: parent, errno: errno) }
                chmod(parent, info.st_mode & 0o7777 | 0o200)
                let made = mkdir(directory, 0o555)
                let failure = errno
                chmod(parent, info.st_mode & 0o7777)
                guard made == 0 || failure == EEXIST else { throw FileSystemError.io(operation: "mkdir", path: directory, errno: failure) }
            }
            parent = directory
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FarmError(message: "\(path) exists in the unpacked tree \(tree) but is not a directory, so nothing can be mounted on it")
        }
    }
}
