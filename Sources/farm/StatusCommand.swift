import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the cache's size, its tasks and the last run's hit rate.")

    @OptionGroup var options: GlobalOptions

    @Flag(name: .long, help: "Print one JSON object, for machines.")
    var json = false

    func run() throws {
        let directory = options.cacheDirectory
        guard FileManager.default.fileExists(atPath: directory + "/farm.sqlite") else {
            if json {
                let data = try JSONSerialization.data(withJSONObject: ["cache": directory, "tasks": 0, "objects": 0, "bytes": 0],
                                                      options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print("cache:    \(directory) (empty: no build has used it yet)")
            }
            return
        }
        let cache = try BuildCache(directory: directory, access: .readOnly)
        let statistics = try cache.statistics()
        let last = cache.lastRun()
        if json {
            var object: [String: Any] = ["cache": directory, "tasks": statistics.results, "failed_tasks": statistics.failed,
                                         "objects": statistics.objects, "bytes": statistics.bytes,
                                         "parts": Dictionary(statistics.parts.map { ($0.name, $0.bytes) }, uniquingKeysWith: +)]
            if let last {
                object["last_run"] = ["command": last.command, "started": ISO8601DateFormatter().string(from: last.started),
                                      "duration": last.duration, "total": last.total, "built": last.built,
                                      "cached": last.cached, "failed": last.failed, "hit_rate": last.hitRate,
                                      "critical_path": (last.criticalPath ?? []).map { ["task": $0.task, "seconds": $0.seconds, "waited": $0.waited] }]
            }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("cache:    \(directory)")
        let size = { ByteCountFormatter.string(fromByteCount: $0, countStyle: .binary) }
        print("size:     \(size(statistics.bytes)) on disk (\(statistics.objects) objects)")
        print("          " + statistics.parts.map { "\($0.name) \(size($0.bytes))" }.joined(separator: ", "))
        print("tasks:    \(statistics.results) recorded, \(statistics.failed) failed")
        if let last {
            print(String(format: "last run: %@ %@, %d tasks: %d built, %d cached, %d failed; hit rate %.1f%%",
                         last.command, ISO8601DateFormatter().string(from: last.started), last.total, last.built,
                         last.cached, last.failed, last.hitRate * 100))
            if let path = last.criticalPath, !path.isEmpty { print("          " + CriticalPath.describe(path)) }
        } else {
            print("last run: none")
        }
    }
}
