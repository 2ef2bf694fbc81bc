import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import Testing

/// Builds in separate processes: killed mid-way, or two at once on one cache.
@Suite("Crashes and concurrent builds")
struct ProcessTests {
    /// Starts the test driver with its event stream going to a file; returns the process and file.
    func startBuild(_ manifest: String, cache: String, output: String, delayMs: Int) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Products.driver)
        process.arguments = ["--manifest", manifest, "--cache", cache, "-j", "2"]
        process.environment = ProcessInfo.processInfo.environment.merging(["FARM_SYNTHETIC_DELAY_MS": "\(delayMs)"]) { _, new in new }
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    func builtTasks(in output: String) -> Set<String> {
        ProcessResult(status: 0, stdout: (try? String(contentsOfFile: output, encoding: .utf8)) ?? "", stderr: "").tasks("built")
    }

    @Test func buildKilledMidwayCompletesAndLeavesNothingCorrupt() throws {
        let scratch = try Scratch()
        let manifest = try scratch.write("manifest.yml", SyntheticManifest.text(kernels: 60))
        let cache = scratch.file("cache")
        var finishedBeforeKills = Set<String>()

        for round in 0..<2 {
            let output = scratch.file("run-\(round).jsonl")
            let process = try startBuild(manifest, cache: cache, output: output, delayMs: 200)
            let deadline = ContinuousClock.now + .seconds(60)
            // Polled on this thread, not with Task.sleep: other tests' blocking waits can hold
            // the cooperative pool for seconds, long enough for the build to finish unkilled.
            while builtTasks(in: output).filter({ $0.hasPrefix("synthetic-compile:") }).count < 3, ContinuousClock.now < deadline {
                usleep(10_000)
            }
            #expect(process.isRunning, "the build finished before it could be killed; the test must kill it mid-way")
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal)
            finishedBeforeKills.formUnion(builtTasks(in: output))
        }
        #expect(finishedBeforeKills.count >= 6)

        let resumed = try runProcess(Products.driver, ["--manifest", manifest, "--cache", cache])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        // Every task that finished before a kill was kept: none of them ran again.
        #expect(resumed.tasks("built").isDisjoint(with: finishedBeforeKills))
        let completed = try #require(resumed.events.last)
        #expect(completed["failed"] as? Int == 0)

        let verify = try runProcess(Products.farm, ["gc", "--verify", "--cache", cache, "--manifest", manifest])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        #expect(verify.stdout.contains(": 0 corrupt"))

        let again = try runProcess(Products.driver, ["--manifest", manifest, "--cache", cache])
        #expect(again.status == 0)
        #expect(again.tasks("built").isEmpty)
    }

    @Test func twoConcurrentBuildsOnOneCacheBothSucceed() async throws {
        let scratch = try Scratch()
        let manifest = try scratch.write("manifest.yml", SyntheticManifest.text(kernels: 12))
        let cache = scratch.file("cache")
        let first = try startBuild(manifest, cache: cache, output: scratch.file("a.jsonl"), delayMs: 30)
        let second = try startBuild(manifest, cache: cache, output: scratch.file("b.jsonl"), delayMs: 30)
        first.waitUntilExit()
        second.waitUntilExit()
        #expect(first.terminationStatus == 0)
        #expect(second.terminationStatus == 0)
        for name in ["a.jsonl", "b.jsonl"] {
            let events = ProcessResult(status: 0, stdout: try scratch.read(name), stderr: "").events
            #expect(events.last?["event"] as? String == "completed")
            #expect(events.last?["failed"] as? Int == 0)
        }
        let again = try runProcess(Products.driver, ["--manifest", manifest, "--cache", cache])
        #expect(again.status == 0)
        #expect(again.tasks("built").isEmpty)
        let verify = try runProcess(Products.farm, ["gc", "--verify", "--cache", cache, "--manifest", manifest])
        #expect(verify.status == 0)
    }
}
