import Foundation

/// Proof, without planning, that a build has nothing to do: written after a build in which every
/// task succeeded, it holds the file-system state of every file the plan was made from and of
/// the store. When all of it is unchanged, the plan and every key are the same, every result is
/// still recorded and every output is still in the store, so the next identical build can report
/// the same outcome at once; anything different falls back to the full check. Content changes
/// that keep a file's size, times and inode (a bit flipped on disk) are `farm gc --verify`'s job.
public struct UpToDateStamp: Codable, Sendable {
    /// What a file or directory looked like: any write, rename or replacement changes it.
    public struct Signature: Codable, Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modified: Int64
        var changed: Int64

        /// nil for a path that does not exist (recorded as such: its appearing is a change).
        static func of(_ path: String) -> Signature? {
            var info = stat()
            guard lstat(path, &info) == 0 else { return nil }
            return Signature(device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
                             modified: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec),
                             changed: Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec))
        }
    }

    public struct Entry: Codable, Sendable, Equatable {
        var path: String
        var signature: Signature?
    }

    var inputs: [Entry]
    var store: [Entry]
    /// The build's outcome, reported again by a build the stamp proves has nothing to do.
    public var total: Int
    /// Outputs the build collected (e.g. the publication), by output name, for the caller to reuse.
    public var collected: [String: String]

    /// The store's state: the object directories (adding or removing an object changes its
    /// directory) and the results database (a new file is a new database).
    static func storeEntries(cacheDirectory: String) -> [Entry] {
        var paths = [cacheDirectory + "/cas"]
        for high in 0..<256 { paths.append(cacheDirectory + "/cas/" + String(format: "%02x", high)) }
        // The database by identity only: SQLite writes its file when it checkpoints its log on
        // close, after the stamp was made, with no result changed.
        var database = Signature.of(cacheDirectory + "/farm.sqlite")
        database?.size = 0
        database?.modified = 0
        database?.changed = 0
        return [Entry(path: cacheDirectory + "/farm.sqlite", signature: database)] + paths.map { Entry(path: $0, signature: .of($0)) }
    }

    /// Every path under each of `inputs` (a directory is walked: every entry in it counts), with its state.
    static func inputEntries(_ inputs: [String]) -> [Entry] {
        var entries: [Entry] = []
        for path in Set(inputs).sorted() {
            entries.append(Entry(path: path, signature: .of(path)))
            var info = stat()
            guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR,
                  let walker = FileManager.default.enumerator(atPath: path) else { continue }
            var names: [String] = []
            while let name = walker.nextObject() as? String { names.append(name) }
            for name in names.sorted() { entries.append(Entry(path: path + "/" + name, signature: .of(path + "/" + name))) }
        }
        return entries
    }

    /// A stamp of the current state, or nil when a recorded time is too recent to trust: a file
    /// written in the same clock tick as the stamp could change again without its time moving
    /// (git's "racy" index entries). The next full check then writes the stamp.
    public static func make(inputs: [String], cacheDirectory: String, total: Int, collected: [String: String]) -> UpToDateStamp? {
        let stamp = UpToDateStamp(inputs: inputEntries(inputs), store: storeEntries(cacheDirectory: cacheDirectory),
                                  total: total, collected: collected)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let horizon = (Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)) - 100_000_000
        // The database's entry records no times (see storeEntries), so it is never racy.
        let racy = (stamp.inputs + stamp.store).contains { entry in
            guard let signature = entry.signature else { return false }
            return signature.modified >= horizon || signature.changed >= horizon
        }
        return racy ? nil : stamp
    }

    /// Whether nothing the stamp recorded has changed. Every directory walked was recorded too,
    /// and its own signature changes when an entry is added or removed, so comparing the
    /// recorded entries also covers files that appeared since.
    public func holds(cacheDirectory: String) -> Bool {
        UpToDateStamp.storeEntries(cacheDirectory: cacheDirectory) == store
            && inputs.allSatisfy { Signature.of($0.path) == $0.signature }
    }

    /// `cache/stamps/<sha256 of identity>`: one stamp per kind of build (manifest, patterns, options).
    public static func path(cacheDirectory: String, identity: String) -> String {
        cacheDirectory + "/stamps/" + SHA256.hash(identity + "\n" + FarmVersion.current).hex
    }

    public static func read(cacheDirectory: String, identity: String) -> UpToDateStamp? {
        guard let data = FileManager.default.contents(atPath: path(cacheDirectory: cacheDirectory, identity: identity)) else { return nil }
        return try? JSONDecoder().decode(UpToDateStamp.self, from: data)
    }

    public func write(cacheDirectory: String, identity: String) throws {
        try AtomicFile.makeDirectory(cacheDirectory + "/stamps")
        try AtomicFile.write(try JSONEncoder().encode(self), to: UpToDateStamp.path(cacheDirectory: cacheDirectory, identity: identity), sync: false)
    }

    /// Removes the stamp, so the next build checks everything (e.g. after `farm gc`).
    public static func removeAll(cacheDirectory: String) {
        try? FileManager.default.removeItem(atPath: cacheDirectory + "/stamps")
    }
}
