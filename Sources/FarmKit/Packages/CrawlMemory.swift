import FarmEngine
import Foundation

/// What the last crawls learnt, kept in `cache/crawl/` so a crawl of an unchanged upstream is
/// quick: the packages each verified index listed, by the digest of the signed Release text
/// (an unchanged Release names unchanged `Packages` files, so they need not be fetched and
/// parsed again), and the pins a mirror was last seen to serve (not asked again for a day).
/// Only a speed-up: a memory that cannot be read or written is simply not there next time.
public struct CrawlMemory: Sendable {
    public let directory: String
    /// How long a pin found served is not asked again: mirrors drop superseded packages, but not within hours.
    public static let servedFor: TimeInterval = 24 * 3600
    /// How long a pin a mirror did not serve is taken as still missing (its kernel left out): an
    /// index keeps listing such packages for weeks; an hour keeps repeated crawls quick and still
    /// notices a mirror that catches up the same day.
    public static let unservedFor: TimeInterval = 3600

    public init(directory: String) { self.directory = directory }

    // MARK: Indices

    private struct StoredIndex: Codable {
        var release: String
        var packages: [[String]]
    }

    private func indexPath(_ key: String) -> String { directory + "/index-" + SHA256.hash(key).hex.prefix(32) + ".json" }

    /// The packages an index listed when its verified Release text had digest `release`.
    func packages(key: String, release: Digest) -> [IndexPackage]? {
        guard let data = FileManager.default.contents(atPath: indexPath(key)),
              let stored = try? JSONDecoder().decode(StoredIndex.self, from: data), stored.release == release.hex else { return nil }
        var packages: [IndexPackage] = []
        packages.reserveCapacity(stored.packages.count)
        for fields in stored.packages {
            guard fields.count == 9, let size = Int64(fields[6]), let sha = Digest(hex: fields[7]) else { return nil }
            packages.append(IndexPackage(name: fields[0], version: fields[1], architecture: fields[2], source: fields[3], depends: fields[4],
                                         filename: fields[5], size: size, sha256: sha, suite: fields[8]))
        }
        return packages
    }

    func remember(key: String, release: Digest, packages: [IndexPackage]) {
        let stored = StoredIndex(release: release.hex, packages: packages.map {
            [$0.name, $0.version, $0.architecture, $0.source, $0.depends, $0.filename, String($0.size), $0.sha256.hex, $0.suite]
        })
        guard let data = try? JSONEncoder().encode(stored), (try? AtomicFile.makeDirectory(directory)) != nil else { return }
        try? AtomicFile.write(data, to: indexPath(key), sync: false)
    }

    // MARK: Served pins

    private var servedPath: String { directory + "/served.json" }

    static func servedKey(_ package: PackageReference) -> String { "\(package.url) \(package.sha256.hex) \(package.size)" }

    /// When each pin was last found served, and when each was last found not served.
    struct Mirrors: Codable {
        var served: [String: Double] = [:]
        var unserved: [String: Double] = [:]

        /// true: served within a day; false: not served within the hour; nil: ask.
        func known(_ package: PackageReference, now: Date) -> Bool? {
            let key = CrawlMemory.servedKey(package), time = now.timeIntervalSince1970
            if let seen = served[key], time - seen < CrawlMemory.servedFor { return true }
            if let missed = unserved[key], time - missed < CrawlMemory.unservedFor { return false }
            return nil
        }
    }

    func mirrors() -> Mirrors {
        guard let data = FileManager.default.contents(atPath: servedPath) else { return Mirrors() }
        return (try? JSONDecoder().decode(Mirrors.self, from: data)) ?? Mirrors()
    }

    /// Records what was asked now, keeping the other answers until they are too old to use.
    func remember(served: [PackageReference], unserved: [PackageReference], now: Date) {
        var all = mirrors()
        let time = now.timeIntervalSince1970
        all.served = all.served.filter { time - $0.value < CrawlMemory.servedFor }
        all.unserved = all.unserved.filter { time - $0.value < CrawlMemory.unservedFor }
        for package in served {
            all.served[CrawlMemory.servedKey(package)] = time
            all.unserved[CrawlMemory.servedKey(package)] = nil
        }
        for package in unserved { all.unserved[CrawlMemory.servedKey(package)] = time }
        guard let data = try? JSONEncoder().encode(all), (try? AtomicFile.makeDirectory(directory)) != nil else { return }
        try? AtomicFile.write(data, to: servedPath, sync: false)
    }
}
