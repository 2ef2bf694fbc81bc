@testable import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import Testing

/// Bundles (tree unpacking and packing) have their own slots apart from compiles, and a build
/// says which chain of tasks decided its wall time.
struct SchedulingTests {
    struct Work: TaskAction {
        let name: String
        let resource: ResourceClass
        var kind: String { "work" }
        var version: Int { 1 }
        var parameters: [(name: String, value: String)] { [("name", name)] }
        func run(_ context: TaskContext) async throws -> [String: Digest] { ["out": try context.store(Data(name.utf8))] }
    }

    /// A download pinned by its digest: its output is known before it runs.
    struct Pinned: TaskAction {
        var kind: String { "pinned" }
        var version: Int { 1 }
        var parameters: [(name: String, value: String)] { [] }
        var resource: ResourceClass { .network }
        var knownOutputs: [String: Digest]? { ["out": SHA256.hash(Data("pinned".utf8))] }
        func run(_ context: TaskContext) async throws -> [String: Digest] { ["out": try context.store(Data("pinned".utf8))] }
    }

    /// Deferred in a whole build, where nothing reads it; asked for by name, it runs.
    @Test func aPinnedDownloadRunsWhenAskedForByNameAndNotOtherwise() async throws {
        let scratch = try Scratch()
        var graph = BuildGraph()
        let id = graph.add(Pinned(), label: "package")
        let cache = try BuildCache(directory: scratch.file("cache"))
        defer { cache.close() }
        let whole = try await Builder(cache: cache, options: BuildOptions(), reporter: EventLog()).build(graph)
        #expect(whole.built == 0 && whole.cached == 1)
        #expect(!cache.objects.isPresent(SHA256.hash(Data("pinned".utf8))))
        let named = try await Builder(cache: cache, options: BuildOptions(), reporter: EventLog()).build(graph, targets: [id], collecting: [id])
        #expect(named.built == 1 && named.collected[id]?["out"] == SHA256.hash(Data("pinned".utf8)))
        #expect(cache.objects.isPresent(SHA256.hash(Data("pinned".utf8))))
    }

    @Test func eachResourceClassRunsUpToItsOwnLimit() throws {
        var graph = BuildGraph()
        for index in 0..<4 {
            graph.add(Work(name: "bundle \(index)", resource: .io), label: "bundle \(index)")
            graph.add(Work(name: "compile \(index)", resource: .cpu), label: "compile \(index)")
            graph.add(Work(name: "fetch \(index)", resource: .network), label: "fetch \(index)")
        }
        var schedule = Schedule(graph: graph, targets: nil)
        while let id = schedule.nextReady() {
            guard case let .resolved(definition) = schedule.resolve(id) else { Issue.record("unresolved"); return }
            schedule.enqueue(id, definition)
        }
        let launched = schedule.launchable(limits: [.io: 1, .cpu: 3, .network: 2])
        let counts = Dictionary(grouping: launched.map { graph.nodes[$0.0].action.resource }, by: { $0 }).mapValues(\.count)
        #expect(counts == [.io: 1, .cpu: 3, .network: 2])
        #expect(schedule.launchable(limits: [.io: 1, .cpu: 3, .network: 2]).isEmpty, "every slot is taken")
    }

    @Test func theBuildReportsTheChainThatDecidedItsWallTime() throws {
        let scratch = try Scratch()
        let manifest = try scratch.write("manifest.yml", SyntheticManifest.text(kernels: 2))
        let result = try runProcess(Products.driver, ["--manifest", manifest, "--cache", scratch.file("cache")],
                                    environment: ["FARM_SYNTHETIC_DELAY_MS": "300"])
        #expect(result.status == 0, "\(result.stderr)")
        let completed = try #require(result.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.first { $0["event"] as? String == "completed" })
        let path = try #require(completed["critical_path"] as? [[String: Any]])
        let tasks = path.compactMap { $0["task"] as? String }
        #expect(tasks.last == "synthetic-publish:repository", "\(tasks)")
        #expect(tasks.first?.hasPrefix("synthetic-fetch:") == true || tasks.first?.hasPrefix("synthetic-toolchain:") == true, "\(tasks)")
        let compile = try #require(path.first { ($0["task"] as? String)?.hasPrefix("synthetic-compile:") == true })
        #expect((compile["seconds"] as? Double ?? 0) >= 0.3, "the compile that slept 300 ms is on the path: \(path)")
        #expect(CriticalPath.describe([.init(task: "bundle:x", seconds: 2, waited: 1.5)]) == "critical path 3.5 s: bundle:x 2.0 s (waited 1.5 s for a slot)")
    }
}
