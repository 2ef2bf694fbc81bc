import FarmEngine
import FarmKit
import Foundation

/// `farm-bench remote [--manifest manifest.yml] [--kernels N] [-j N] [--remote-cache URL]`: a cold
/// build of the manifest that fills a remote cache (Debian's nginx with WebDAV, started by
/// scripts/cache-server unless a URL is given), then the same build from an empty local cache
/// against it, read-only: each one's time, what ran, and the bytes that moved (from the server's
/// access log), and the ratio of the second to the first.
func remoteBenchmark(_ arguments: [String]) async throws {
    var manifestPath = "manifest.yml"
    var count: Int?
    var jobs = BuildOptions.defaultJobs
    var given: String?
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        switch argument {
        case "--manifest": manifestPath = rest.popFirst() ?? manifestPath
        case "--kernels": count = rest.popFirst().flatMap(Int.init)
        case "-j": jobs = rest.popFirst().flatMap(Int.init) ?? jobs
        case "--remote-cache": given = rest.popFirst()
        default:
            FileHandle.standardError.write(Data("usage: farm-bench remote [--manifest PATH] [--kernels N] [-j N] [--remote-cache URL]\n".utf8))
            exit(2)
        }
    }
    let farm = sibling("farm")
    let source = URL(fileURLWithPath: manifestPath).standardizedFileURL.deletingLastPathComponent().path
    let work = "/var/tmp/farm-bench-remote-\(getpid())"
    // Leftovers.remove: the caches hold read-only unpacked trees, which FileManager leaves behind.
    defer { _ = Leftovers.remove(work) }
    try FileManager.default.createDirectory(atPath: work + "/project", withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: source + "/recipes", toPath: work + "/project/recipes")
    var text = try String(contentsOfFile: manifestPath, encoding: .utf8)
    let kernels = try ManifestLoader.load(path: manifestPath).kernels
    if let count { text = ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: Array(kernels.prefix(count))), in: text) }
    try Data(text.utf8).write(to: URL(fileURLWithPath: work + "/project/manifest.yml"))
    let manifest = work + "/project/manifest.yml"
    // The project's own keys when it has them (signing is part of the build), else new ones.
    if FileManager.default.fileExists(atPath: source + "/keys") {
        try FileManager.default.copyItem(atPath: source + "/keys", toPath: work + "/project/keys")
    } else {
        guard try run(farm, ["keys", "init", "--manifest", manifest]).status == 0 else { print("farm keys init failed"); exit(1) }
    }

    // Our own server unless one is given: its access log counts the bytes.
    let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    var serverLog: String?
    let base: String
    if let given {
        base = given + "/farm-bench-\(getpid())"
    } else {
        let started = try run(repository + "/scripts/cache-server", [work + "/server", String(Int.random(in: 20_000...40_000))])
        guard started.status == 0 else { print("scripts/cache-server failed: \(started.tail)"); exit(1) }
        base = started.tail.trimmingCharacters(in: .whitespacesAndNewlines)
        serverLog = work + "/server/access.log"
    }
    defer { if given == nil { _ = try? run(repository + "/scripts/cache-server", [work + "/server", "stop"]) } }
    let shown = count.map { min($0, kernels.count) } ?? kernels.count
    print("farm-bench remote: \(shown) kernels of \(manifestPath), farm build -j \(jobs), remote cache \(base)")

    struct Side { var seconds: Double; var summary: [String: Any]; var fetches: Int; var lines: [String] }
    func side(_ cache: String, _ extra: [String]) throws -> Side {
        var output = Data()
        let start = ContinuousClock.now
        let end = try Executable.run(farm, ["build", "--json", "-j", String(jobs), "--manifest", manifest, "--cache", work + "/" + cache,
                                            "--remote-cache", base] + extra, environment: nil, directory: nil) { output.append($0) }
        let seconds = (ContinuousClock.now - start).seconds
        let lines = String(decoding: output, as: UTF8.self).split(separator: "\n").map(String.init)
        let events = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        guard end.status == 0, let summary = events.last(where: { $0["event"] as? String == "completed" }) else {
            print("farm build failed (exit \(end.status)):\n" + lines.suffix(30).joined(separator: "\n"))
            exit(1)
        }
        let fetches = events.filter { $0["event"] as? String == "built" && $0["kind"] as? String == "fetch" }.count
        return Side(seconds: seconds, summary: summary, fetches: fetches, lines: lines)
    }
    func traffic(since line: Int) -> (lines: Int, up: Int64, down: Int64, puts: Int, gets: Int) {
        guard let serverLog, let text = try? String(contentsOfFile: serverLog, encoding: .utf8) else { return (0, 0, 0, 0, 0) }
        let all = text.split(separator: "\n")
        var (up, down, puts, gets) = (Int64(0), Int64(0), 0, 0)
        for entry in all.dropFirst(line) {
            let fields = entry.split(separator: " ")
            guard fields.count >= 5 else { continue }
            if fields[0] == "PUT" { puts += 1; up += Int64(fields[4]) ?? 0 }
            if fields[0] == "GET" { gets += 1; down += Int64(fields[3]) ?? 0 }
        }
        return (all.count, up, down, puts, gets)
    }
    func mib(_ bytes: Int64) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
    func int(_ summary: [String: Any], _ key: String) -> Int { summary[key] as? Int ?? 0 }

    let cold = try side("cold", [])
    let afterCold = traffic(since: 0)
    print(String(format: "  cold local build, uploading:   %7.1f s  %d built, %d cached (%d packages downloaded); %@ up in %d PUTs",
                 cold.seconds, int(cold.summary, "built"), int(cold.summary, "cached"), cold.fetches, mib(afterCold.up), afterCold.puts))
    let remote = try side("empty", ["--remote-cache-read-only"])
    let afterRemote = traffic(since: afterCold.lines)
    print(String(format: "  empty local cache vs server:   %7.1f s  %d from the server, %d built here (%d packages downloaded); %@ down in %d GETs",
                 remote.seconds, int(remote.summary, "remote"), int(remote.summary, "built"), remote.fetches, mib(afterRemote.down), afterRemote.gets))
    print(String(format: "  ratio remote/cold: %.2fx (%.1fx faster)", remote.seconds / cold.seconds, cold.seconds / remote.seconds))
}
