import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import farm_test_driver

/// A reporter that keeps every event, so a test can say exactly which tasks ran.
final class EventLog: BuildReporter, @unchecked Sendable {
    private let lock = NSLock()
    private var events: [BuildEvent] = []
    /// Called with every event as it comes (to act in the middle of a build).
    private let hook: (@Sendable (BuildEvent) -> Void)?

    init(hook: (@Sendable (BuildEvent) -> Void)? = nil) { self.hook = hook }

    func report(_ event: BuildEvent) {
        lock.lock()
        events.append(event)
        lock.unlock()
        hook?(event)
    }

    private var all: [BuildEvent] {
        lock.lock()
        defer { lock.unlock() }
        return events
    }

    var built: Set<String> {
        Set(all.compactMap { if case let .built(task, _, _, _) = $0 { return task.name } else { return nil } })
    }

    var failed: [String: (error: String, log: String)] {
        var result: [String: (String, String)] = [:]
        for case let .failed(task, _, error, log) in all { result[task.name] = (error, log) }
        return result
    }

    var skipped: Set<String> {
        Set(all.compactMap { if case let .skipped(task, _, _) = $0 { return task.name } else { return nil } })
    }

    /// Tasks whose result came from the remote cache.
    var fetched: Set<String> {
        Set(all.compactMap { if case let .fetched(task, _, _) = $0 { return task.name } else { return nil } })
    }

    var warnings: [String] {
        all.compactMap { if case let .warning(text) = $0 { return text } else { return nil } }
    }

    var wouldRun: [String: String] {
        var result: [String: String] = [:]
        for case let .wouldRun(task, reason) in all { result[task.name] = reason }
        return result
    }
}

/// A project on disk with the synthetic rules: a manifest, a cache, and builds in this process.
struct SyntheticProject {
    let scratch: Scratch
    let manifestPath: String
    var cache: String { scratch.file("cache") }

    init(_ scratch: Scratch, kernels: Int = 4, failing: Set<Int> = []) throws {
        self.scratch = scratch
        manifestPath = try scratch.write("manifest.yml", SyntheticManifest.text(kernels: kernels, failing: failing))
    }

    func session() throws -> Session {
        try Session(manifestPath: manifestPath, cacheDirectory: cache, rules: SyntheticRules())
    }

    @discardableResult
    func build(_ patterns: [String] = [], keepGoing: Bool = false, dryRun: Bool = false, jobs: Int = 3,
               remoteCache: RemoteCacheSetting = .init(), log: EventLog = EventLog()) async throws -> (BuildSummary, EventLog) {
        // As `farm build` does: the up-to-date stamp first, then the full build.
        let summary = try await Session.build(manifestPath: manifestPath, cacheDirectory: cache, rules: SyntheticRules(), patterns: patterns,
                                              options: BuildOptions(jobs: jobs, keepGoing: keepGoing, dryRun: dryRun),
                                              reporter: log, remoteCache: remoteCache)
        return (summary, log)
    }

    /// Edits the manifest text in place.
    func edit(_ replace: String, with replacement: String) throws {
        let text = try String(contentsOfFile: manifestPath, encoding: .utf8)
        precondition(text.contains(replace), "the manifest has no '\(replace)'")
        try Data(text.replacingOccurrences(of: replace, with: replacement).utf8).write(to: URL(fileURLWithPath: manifestPath))
    }

    static func release(_ index: Int) -> String { "6.\(index / 1000).\(index % 1000)-\(index)-amd64" }
}
