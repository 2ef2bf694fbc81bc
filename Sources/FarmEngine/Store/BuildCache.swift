import Foundation

/// A cache directory: `farm.sqlite` (task results) and `cas/` (objects). Several farm processes may
/// share one: SQLite runs in WAL mode, objects are immutable, and `farm gc` takes the cache's lock
/// exclusively while builds hold it shared.
public final class BuildCache: @unchecked Sendable {
    public let directory: String
    public let objects: ContentStore
    let database: Database
    private var lockDescriptor: Int32 = -1
    /// Whether lookups mark the objects they find as used (not for what only looks).
    private let recordsUse: Bool
    /// Objects last used before this are marked used again on a hit (`ContentStore.useGranularity`).
    private let useCutoff = Date().timeIntervalSince1970 - ContentStore.useGranularity

    /// `shared` for builds, `exclusive` for `farm gc`, `readOnly` for what only looks (`farm
    /// status`, `log`, `explain`, a dry run): it writes nothing, works on a cache this user cannot
    /// write, and reads a cache that does not exist yet as an empty one.
    public enum Access { case shared, exclusive, readOnly }

    public init(directory: String, access: Access = .shared) throws {
        self.directory = directory
        recordsUse = access != .readOnly
        if access == .readOnly {
            objects = ContentStore(reading: directory + "/cas")
            let path = directory + "/farm.sqlite"
            guard FileManager.default.fileExists(atPath: path) else {
                // No cache yet: read as an empty one, and make nothing.
                database = try Database(path: ":memory:")
                try createSchema()
                return
            }
            // Opened plainly, a WAL database makes its -wal and -shm files. Without a writer
            // (no -wal file) or without write access, the file is taken as unchanging instead.
            let quiet = Glibc.access(directory, W_OK) != 0 || !FileManager.default.fileExists(atPath: path + "-wal")
            database = try Database(path: path, readOnly: true, immutable: quiet)
            try lock(access)
            return
        }
        try AtomicFile.makeDirectory(directory)
        guard Glibc.access(directory, W_OK) == 0 else {
            throw FarmError.environment("the cache \(directory) is not writable by this user (\(String(cString: strerror(errno))));"
                                   + " pass --cache DIR (or set FARM_CACHE) to a directory you can write, or fix its permissions")
        }
        objects = try ContentStore(root: directory + "/cas")
        database = try Database(path: directory + "/farm.sqlite")
        try lock(access)
        try migrate()
    }

    deinit { close() }

    /// Lets go of the cache's lock, so `farm gc` can run. Called when a command is done with the cache.
    public func close() {
        lockLock.withLock {
            if lockDescriptor >= 0 {
                Foundation.close(lockDescriptor)
                lockDescriptor = -1
            }
        }
    }

    private let lockLock = NSLock()

    private func lock(_ access: Access) throws {
        let path = directory + "/lock"
        let reading = access == .readOnly
        lockDescriptor = reading ? open(path, O_RDONLY | O_CLOEXEC) : open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        // A read-only look at a cache without a lock file (or one this user cannot read) goes unlocked.
        if lockDescriptor < 0, reading { return }
        guard lockDescriptor >= 0 else { throw FileSystemError.io(operation: "open", path: path, errno: errno) }
        let mode = access == .exclusive ? LOCK_EX : LOCK_SH
        if flock(lockDescriptor, mode | LOCK_NB) != 0 {
            FileHandle.standardError.write(Data("farm: waiting for another farm process to release \(directory) (farm gc runs alone)\n".utf8))
            guard flock(lockDescriptor, mode) == 0 else {
                throw FileSystemError.io(operation: "lock", path: path, errno: errno)
            }
        }
    }

    static let schemaVersion = 1

    private func migrate() throws {
        var version: Int64 = 0
        try database.query("PRAGMA user_version") { version = $0.integer(0) }
        // A no-op build must not write: only set the schema up when it is not there yet.
        if version == BuildCache.schemaVersion {
            return
        }
        // Two farm processes opening a new cache at once must not both set it up: switching to
        // WAL fails with "database is locked" rather than waiting. One sets up, the other waits.
        let schemaLock = open(directory + "/schema.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard schemaLock >= 0 else { throw FileSystemError.io(operation: "open", path: directory + "/schema.lock", errno: errno) }
        defer { Foundation.close(schemaLock) }
        flock(schemaLock, LOCK_EX)
        try database.query("PRAGMA user_version") { version = $0.integer(0) }
        if version == BuildCache.schemaVersion {
            return
        }
        guard version == 0 else {
            throw FarmError(message: "\(database.path) has schema version \(version), this farm knows \(BuildCache.schemaVersion); use a newer farm or another --cache")
        }
        try database.execute("PRAGMA journal_mode=WAL")
        try createSchema()
    }

    private func createSchema() throws {
        try database.transaction {
            try database.execute("""
            CREATE TABLE IF NOT EXISTS results(
                key TEXT PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, definition TEXT NOT NULL,
                outputs TEXT NOT NULL, log TEXT, started REAL NOT NULL, duration REAL NOT NULL,
                status INTEGER NOT NULL, error TEXT, farm_version TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS results_by_task ON results(kind, label);
            CREATE TABLE IF NOT EXISTS latest(
                kind TEXT NOT NULL, label TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY(kind, label)) WITHOUT ROWID;
            PRAGMA user_version = \(BuildCache.schemaVersion);
            """)
        }
    }

    // MARK: Results

    private static let columns = "key, kind, label, definition, outputs, log, started, duration, status, error, farm_version"

    private static func record(_ row: Database.Row) -> TaskRecord? {
        guard let key = row.text(0).flatMap(Digest.init(hex:)) else { return nil }
        return TaskRecord(key: key, kind: row.text(1) ?? "", label: row.text(2) ?? "", definition: row.text(3) ?? "",
                          outputs: TaskRecord.decode(row.text(4) ?? ""), log: row.text(5).flatMap(Digest.init(hex:)),
                          started: Date(timeIntervalSince1970: row.real(6)), duration: row.real(7),
                          status: Int(row.integer(8)), error: row.text(9), farmVersion: row.text(10) ?? "")
    }

    public func record(forKey key: Digest) throws -> TaskRecord? {
        var found: TaskRecord?
        try database.query("SELECT \(BuildCache.columns) FROM results WHERE key = ?", [.text(key.hex)]) { found = BuildCache.record($0) }
        return found
    }

    private let preloadLock = NSLock()
    nonisolated(unsafe) private var preloaded: [String: String]?
    nonisolated(unsafe) private var listed: Set<String>?

    /// Reads every successful result's outputs in one scan. A large build (a no-op over 50,000
    /// tasks) then looks keys up in memory instead of issuing one query per task.
    public func preloadResults() throws {
        var table: [String: String] = [:]
        try database.query("SELECT count(*) FROM results") { table.reserveCapacity(Int($0.integer(0))) }
        try database.query("SELECT key, outputs FROM results WHERE status = 0") { row in
            if let key = row.text(0), let outputs = row.text(1) { table[key] = outputs }
        }
        let names = objects.listing()
        preloadLock.withLock {
            preloaded = table
            listed = names
        }
    }

    private func isPresent(_ digest: Digest) -> Bool {
        if preloadLock.withLock({ listed?.contains(digest.hex) }) == true { return true }
        return objects.isPresent(digest)
    }

    /// The outputs of a successful result for `key`, when every object is still in the store.
    public func cachedOutputs(forKey key: Digest) throws -> [TaskRecord.Output]? {
        var outputs: [TaskRecord.Output]?
        if let text = preloadLock.withLock({ preloaded?[key.hex] }) {
            outputs = TaskRecord.decode(text)
        } else {
            // Not preloaded, or written since by this or another farm process.
            try database.query("SELECT outputs FROM results WHERE key = ? AND status = 0", [.text(key.hex)]) {
                outputs = TaskRecord.decode($0.text(0) ?? "")
            }
        }
        guard let outputs, outputs.allSatisfy({ isPresent($0.digest) }) else { return nil }
        if recordsUse { for output in outputs { objects.markUsed(output.digest, ifUsedBefore: useCutoff) } }
        return outputs
    }

    /// Runs many lookups in one read transaction: in WAL mode each statement outside a transaction
    /// takes and drops the read lock, which costs more than the lookup itself.
    public func readBatch<T>(_ body: () throws -> T) throws -> T {
        try database.readTransaction(body)
    }

    /// The last recorded run of a task, by kind and label, whatever its key was.
    public func latestRecord(kind: String, label: String) throws -> TaskRecord? {
        var key: Digest?
        try database.query("SELECT key FROM latest WHERE kind = ? AND label = ?", [.text(kind), .text(label)]) {
            key = $0.text(0).flatMap(Digest.init(hex:))
        }
        return try key.flatMap { try record(forKey: $0) }
    }

    /// Records one finished task in its own transaction, after its objects are in the store.
    public func save(_ record: TaskRecord) throws {
        try database.transaction {
            try database.query("INSERT OR REPLACE INTO results(\(BuildCache.columns)) VALUES (?,?,?,?,?,?,?,?,?,?,?)", [
                .text(record.key.hex), .text(record.kind), .text(record.label), .text(record.definition),
                .text(TaskRecord.encode(record.outputs)), record.log.map { .text($0.hex) } ?? .null,
                .real(record.started.timeIntervalSince1970), .real(record.duration), .integer(Int64(record.status)),
                record.error.map { .text($0) } ?? .null, .text(record.farmVersion),
            ])
            try database.query("INSERT OR REPLACE INTO latest(kind, label, key) VALUES (?,?,?)",
                               [.text(record.kind), .text(record.label), .text(record.key.hex)])
        }
    }

    /// Finds recorded tasks by `kind:label`, by label alone, or by a key prefix (at least 6 digits).
    public func findRecords(_ name: String) throws -> [TaskRecord] {
        var keys: [Digest] = []
        if let colon = name.firstIndex(of: ":") {
            let kind = String(name[..<colon]), label = String(name[name.index(after: colon)...])
            try database.query("SELECT key FROM latest WHERE kind = ? AND label = ?", [.text(kind), .text(label)]) {
                if let key = $0.text(0).flatMap(Digest.init(hex:)) { keys.append(key) }
            }
        } else {
            try database.query("SELECT key FROM latest WHERE label = ?", [.text(name)]) {
                if let key = $0.text(0).flatMap(Digest.init(hex:)) { keys.append(key) }
            }
            if keys.isEmpty, name.count >= 6, name.allSatisfy(\.isHexDigit) {
                try database.query("SELECT key FROM results WHERE key >= ? AND key < ? LIMIT 2",
                                   [.text(name.lowercased()), .text(name.lowercased() + "g")]) {
                    if let key = $0.text(0).flatMap(Digest.init(hex:)) { keys.append(key) }
                }
            }
        }
        return try keys.compactMap { try record(forKey: $0) }
    }

    public var databaseChanges: Int { database.totalChanges }

    // MARK: Status and garbage collection

    public struct Statistics: Sendable {
        public var results: Int
        public var failed: Int
        public var objects: Int
        /// Everything under the cache directory on disk, as `du` counts it.
        public var bytes: Int64
        /// `bytes` by part: each directory of the cache by name (`cas`, `unpacked`, `git`,
        /// `labs`, ...), and `files` for the database and the other files at the top.
        public var parts: [(name: String, bytes: Int64)]
    }

    public func statistics() throws -> Statistics {
        var results = 0, failed = 0
        try database.query("SELECT count(*), coalesce(sum(status != 0), 0) FROM results r JOIN latest l ON r.key = l.key") {
            results = Int($0.integer(0))
            failed = Int($0.integer(1))
        }
        var parts: [(name: String, bytes: Int64)] = []
        var files: Int64 = 0
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted() {
            let path = directory + "/" + name
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            if info.st_mode & S_IFMT == S_IFDIR {
                parts.append((name, FileWalk.diskUsage(path)))
            } else {
                files += Int64(info.st_blocks) * 512
            }
        }
        parts.append(("files", files))
        return Statistics(results: results, failed: failed, objects: objects.allObjects().count,
                          bytes: parts.reduce(0) { $0 + $1.bytes }, parts: parts)
    }

    public struct CollectionReport: Sendable {
        public var removedObjects = 0
        public var removedBytes: Int64 = 0
        public var removedResults = 0
        public var removedTrees = 0
        public var checkedObjects = 0
        public var checkedTrees = 0
        /// Paths of corrupt objects and unpacked trees (the latter saying what changed); all removed.
        public var corrupt: [String] = []
        /// `--max-size`: latest results dropped, least recently used first, to fit the size.
        public var droppedResults = 0
        /// Of those, results the last build used (dropped only when the rest did not free enough).
        public var droppedFromLastBuild = 0
        /// The cache's disk use when gc is done (everything under it, as `farm status` counts).
        public var bytesAfter: Int64 = 0
    }

    /// Keeps the latest result of every task and the objects they reference; removes the rest.
    /// With `verify`, re-hashes every kept object and removes (and reports) the corrupt ones.
    /// With `maxBytes`, then drops latest results, least recently used first, until the cache fits.
    /// Call it on a cache opened with `.exclusive` access, so no build writes meanwhile.
    public func collectGarbage(verify: Bool, maxBytes: Int64? = nil) throws -> CollectionReport {
        var report = CollectionReport()
        // gc may drop results a stamp's build recorded while keeping their objects: the next build checks all.
        UpToDateStamp.removeAll(cacheDirectory: directory)
        try database.transaction {
            try database.query("SELECT count(*) FROM results WHERE key NOT IN (SELECT key FROM latest)") {
                report.removedResults = Int($0.integer(0))
            }
            try database.execute("DELETE FROM results WHERE key NOT IN (SELECT key FROM latest)")
        }
        var referenced = Set<Digest>()
        try database.query("SELECT outputs, log FROM results") { row in
            for output in TaskRecord.decode(row.text(0) ?? "") { referenced.insert(output.digest) }
            if let log = row.text(1).flatMap(Digest.init(hex:)) { referenced.insert(log) }
        }
        for object in objects.allObjects() {
            if referenced.contains(object.digest) {
                guard verify else { continue }
                report.checkedObjects += 1
                let actual = try? SHA256.hash(fileAt: object.path).digest
                if actual != object.digest {
                    report.corrupt.append(object.path)
                    unlink(object.path)
                }
            } else {
                report.removedBytes += objects.size(of: object.digest) ?? 0
                report.removedObjects += 1
                unlink(object.path)
            }
        }
        // Temporary files and work directories left by builds that were killed mid-task.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: objects.temporary)) ?? [] {
            Leftovers.remove(objects.temporary + "/" + name)
        }
        // Unpacked roots and bundles whose tarball is gone or was found corrupt just now.
        let kept = Set(referenced.map(\.hex)).subtracting(report.corrupt.map { ($0 as NSString).lastPathComponent })
        let trees = UnpackedTrees(objects: objects)
        report.removedTrees = trees.prune(keeping: kept)
        if verify {
            let (checked, corrupt) = trees.verify(keeping: kept)
            report.checkedTrees = checked
            report.corrupt += corrupt
        }
        try database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if let maxBytes { try shrink(to: maxBytes, report: &report) }
        report.bytesAfter = try statistics().bytes
        return report
    }

    /// Drops latest results, least recently used first, and the objects (and unpacked trees) no
    /// remaining result references, until the cache's disk use is at most `limit`. A result's last
    /// use is the newest mtime of its outputs (set when made and when a build takes them from the
    /// store, to the hour); the results the last build used (`last-build.keys`) go only after every
    /// other. Records are deleted before
    /// their objects: a record never names a missing object, even if gc is killed midway, and the
    /// next build reruns exactly the dropped tasks.
    private func shrink(to limit: Int64, report: inout CollectionReport) throws {
        var size = try statistics().bytes
        guard size > limit else { return }
        struct Entry {
            var key: String
            var objects: Set<Digest>
            var used: Double
        }
        var entries: [Entry] = []
        var references: [Digest: Int] = [:]
        try database.query("SELECT key, outputs, log, started FROM results") { row in
            let outputs = TaskRecord.decode(row.text(1) ?? "").map(\.digest)
            let used = outputs.compactMap { objects.lastUse(of: $0) }.max() ?? row.real(3)
            let all = Set(outputs + (row.text(2).flatMap(Digest.init(hex:)).map { [$0] } ?? []))
            for digest in all { references[digest, default: 0] += 1 }
            entries.append(Entry(key: row.text(0) ?? "", objects: all, used: used))
        }
        let lastBuild = lastBuildKeys()
        let trees = UnpackedTrees(objects: objects)
        var dropped: [String] = []
        var freed: [Digest] = []
        let order = entries.map { (last: lastBuild.contains($0.key) ? 1 : 0, entry: $0) }
            .sorted { ($0.last, $0.entry.used, $0.entry.key) < ($1.last, $1.entry.used, $1.entry.key) }
        for (last, entry) in order where size > limit {
            dropped.append(entry.key)
            report.droppedFromLastBuild += last
            for digest in entry.objects {
                references[digest, default: 1] -= 1
                guard references[digest] == 0 else { continue }
                freed.append(digest)
                size -= objects.diskUsage(of: digest) + FileWalk.diskUsage(trees.path(of: digest))
            }
        }
        try database.transaction {
            for key in dropped {
                try database.query("DELETE FROM results WHERE key = ?", [.text(key)])
                try database.query("DELETE FROM latest WHERE key = ?", [.text(key)])
            }
        }
        for digest in freed {
            report.removedBytes += objects.size(of: digest) ?? 0
            report.removedObjects += 1
            unlink(objects.path(of: digest))
        }
        report.droppedResults = dropped.count
        report.removedTrees += trees.prune(keeping: Set(references.filter { $0.value > 0 }.keys.map(\.hex)))
        try database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    }

    // MARK: Last run

    public struct RunSummary: Codable, Sendable {
        public var command: String
        public var started: Date
        public var duration: Double
        public var total: Int
        public var built: Int
        public var cached: Int
        public var failed: Int
        public var skipped: Int
        /// The chain of tasks that decided the run's wall time (absent in records of older farms).
        public var criticalPath: [CriticalPath.Step]?
        public var hitRate: Double { total == 0 ? 1 : Double(cached) / Double(total) }

        public init(command: String, started: Date, duration: Double, total: Int, built: Int, cached: Int, failed: Int, skipped: Int,
                    criticalPath: [CriticalPath.Step] = []) {
            (self.command, self.started, self.duration, self.total) = (command, started, duration, total)
            (self.built, self.cached, self.failed, self.skipped) = (built, cached, failed, skipped)
            self.criticalPath = criticalPath.isEmpty ? nil : criticalPath
        }
    }

    /// The last run's figures live beside the database, not in it, so a no-op build writes no row.
    public func saveLastRun(_ summary: RunSummary) {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        if let data = try? encoder.encode(summary) {
            try? AtomicFile.write(data, to: directory + "/last-run.json", sync: false)
        }
    }

    /// The keys of the results the last build used, one per line in a file beside the database (a
    /// 50,000-task build writes 3.2 MB, no row), so `gc --max-size` drops those last.
    public func saveLastBuildKeys(_ keys: [Digest]) {
        let text = keys.map(\.hex).sorted().joined(separator: "\n") + "\n"
        try? AtomicFile.write(Data(text.utf8), to: directory + "/last-build.keys", sync: false)
    }

    func lastBuildKeys() -> Set<String> {
        guard let data = FileManager.default.contents(atPath: directory + "/last-build.keys") else { return [] }
        return Set(String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init))
    }

    public func lastRun() -> RunSummary? {
        guard let data = FileManager.default.contents(atPath: directory + "/last-run.json") else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(RunSummary.self, from: data)
    }
}
