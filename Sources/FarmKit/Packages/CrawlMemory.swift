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

    /// When each pin was last found served.
    func served() -> [String: Double] {
        guard let data = FileManager.default.contents(atPath: servedPath) else { return [:] }
        return (try? JSONDecoder().decode([String: Double].self, from: data)) ?? [:]
    }

    /// Records the pins found served now, keeping the others' times, dropping what is older than a day.
    func rememberServed(_ packages: [PackageReference], now: Date) {
        var all = served().filter { now.timeIntervalSince1970 - $0.value < CrawlMemory.servedFor }
        for package in packages { all[CrawlMemory.servedKey(package)] = now.timeIntervalSince1970 }
        guard let data = try? JSONEncoder().encode(all), (try? AtomicFile.makeDirectory(directory)) != nil else { return }
        try? AtomicFile.write(data, to: servedPath, sync: false)
    }
}
