import Foundation

public struct UnpackError: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// `cache/unpacked/<sha256>`: a tarball from the CAS unpacked once per cache (toolchain roots,
/// bundle trees) and shared by every task that needs it. A tree appears under its final name only
/// when complete (unpacked beside it, then renamed), under a lock, so concurrent tasks and farm
/// processes unpack it once. The sandboxes mount these trees read-only.
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
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        try AtomicFile.rename(staging, to: final)
        log.append("unpacked \(digest.short) into \(final)\n")
        return final
    }

    /// Extracts a tar archive (compressed or not) into an existing directory with GNU tar.
    public static func untar(_ archive: String, into directory: String, options: [String]) throws {
        guard let tar = Executable.find("tar") else { throw ToolMissing(tool: "tar", package: "tar", purpose: "unpacking trees") }
        let result = try Executable.run(tar, ["--extract", "--file", archive, "--directory", directory] + options)
        guard result.status == 0 else {
            throw UnpackError(message: "unpacking \(archive) failed: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// Removes the trees of objects that are no longer kept, and half-unpacked ones; returns how
    /// many trees of objects it removed.
    public func prune(keeping kept: Set<String>) -> Int {
        var removed = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            // Half-unpacked trees of killed builds (gc runs alone on the cache).
            if name.hasPrefix(".unpacking-") {
                Leftovers.remove(root + "/" + name)
                continue
            }
            let hex = name.hasSuffix(".lock") ? String(name.dropLast(5)) : name
            guard hex.utf8.count == 64, !kept.contains(hex) else { continue }
            if (try? FileManager.default.removeItem(atPath: root + "/" + name)) != nil, !name.hasSuffix(".lock") { removed += 1 }
        }
        return removed
    }
}
