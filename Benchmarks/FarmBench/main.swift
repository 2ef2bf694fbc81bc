import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds

// The engine benchmark: a synthetic manifest of N kernels (5 tasks each) against ninja on a
// build.ninja with the same nodes and edges, both measured in this run.
//
//   swift run -c release farm-bench [--kernels 10000] [--runs 5]
//   swift run -c release farm-bench bundle [--release R]   (see BundleBenchmark.swift)
//   swift run -c release farm-bench compile [--kernels 8]  (see CompileBenchmark.swift)
//   swift run -c release farm-bench capture [--runs 3]     (see CaptureBenchmark.swift)
//
// Reports plan time, cold-cache dry-run time, and no-op build time (farm's whole process, the way
// a user runs it) next to `ninja -n` and a no-op `ninja`, as ratios.

if CommandLine.arguments.dropFirst().first == "compile" {
    try await compileBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    exit(0)
}
if CommandLine.arguments.dropFirst().first == "capture" {
    do {
        try await captureBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    } catch {
        print("farm-bench capture: \(error)")
        exit(1)
    }
    exit(0)
}
if CommandLine.arguments.dropFirst().first == "bundle" {
    try await bundleBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    exit(0)
}

var kernels = 10_000
var runs = 5
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--kernels": kernels = arguments.popFirst().flatMap(Int.init) ?? kernels
    case "--runs": runs = arguments.popFirst().flatMap(Int.init) ?? runs
    default:
        FileHandle.standardError.write(Data("usage: farm-bench [--kernels N] [--runs N]\n".utf8))
        exit(2)
    }
}

func seconds(_ duration: Duration) -> Double {
    duration.seconds
}

func time<T>(_ body: () async throws -> T) async rethrows -> (T, Double) {
    let start = ContinuousClock.now
    let value = try await body()
    return (value, seconds(ContinuousClock.now - start))
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

@discardableResult
func run(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> (status: Int32, seconds: Double) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    process.standardOutput = FileHandle.nullDevice
    let start = ContinuousClock.now
    try process.run()
    process.waitUntilExit()
    return (process.terminationStatus, seconds(ContinuousClock.now - start))
}

func which(_ name: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let path = "\(directory)/\(name)"
        if access(path, X_OK) == 0 { return path }
    }
    return nil
}

func fileSignature(_ path: String) -> String {
    var info = stat()
    guard stat(path, &info) == 0 else { return "absent" }
    return "\(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
}

let root = NSTemporaryDirectory() + "farm-bench-\(getpid())"
try AtomicFile.makeDirectory(root)
defer { try? FileManager.default.removeItem(atPath: root) }
let manifestPath = root + "/manifest.yml"
try Data(SyntheticManifest.text(kernels: kernels).utf8).write(to: URL(fileURLWithPath: manifestPath))
let cachePath = root + "/cache"
let driver = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("farm-test-driver").path

print("farm-bench: \(kernels) kernels, median of \(runs) runs, \(ProcessInfo.processInfo.activeProcessorCount) cores")

// Plan: parse the manifest, load recipes, build the graph.
var planTimes: [Double] = []
var graph = BuildGraph()
for _ in 0..<runs {
    let (planned, elapsed) = try await time {
        try Session(manifestPath: manifestPath, cacheDirectory: cachePath, rules: SyntheticRules()).plan([])
    }
    graph = planned
    planTimes.append(elapsed)
}
let taskCount = graph.count
print(String(format: "plan:               %7.3f s  (%d tasks)", median(planTimes), taskCount))

// Cold-cache dry run.
let session = try Session(manifestPath: manifestPath, cacheDirectory: cachePath, rules: SyntheticRules())
final class Quiet: BuildReporter { func report(_ event: BuildEvent) {} }
var dryTimes: [Double] = []
for _ in 0..<runs {
    let (_, elapsed) = try await time {
        try await session.build(patterns: [], options: BuildOptions(dryRun: true), reporter: Quiet())
    }
    dryTimes.append(elapsed)
}
print(String(format: "dry run, cold:      %7.3f s", median(dryTimes)))

// The real build once, then no-op builds as separate processes.
let (cold, coldTime) = try await time {
    try await session.build(patterns: [], options: BuildOptions(), reporter: Quiet())
}
print(String(format: "build, cold:        %7.3f s  (%d built)", coldTime, cold.built))
let databaseBefore = fileSignature(cachePath + "/farm.sqlite") + " " + fileSignature(cachePath + "/farm.sqlite-wal")
var noopTimes: [Double] = []
for _ in 0..<runs {
    let result = try run(driver, ["--manifest", manifestPath, "--cache", cachePath])
    guard result.status == 0 else { print("no-op build failed with status \(result.status)"); exit(1) }
    noopTimes.append(result.seconds)
}
let (inProcess, _) = try await time {
    try await session.build(patterns: [], options: BuildOptions(), reporter: Quiet())
}
let databaseAfter = fileSignature(cachePath + "/farm.sqlite") + " " + fileSignature(cachePath + "/farm.sqlite-wal")
let farmNoop = median(noopTimes)
print(String(format: "no-op build:        %7.3f s  (%d cached, %d database writes, database files %@)",
             farmNoop, inProcess.cached, inProcess.databaseWrites, databaseBefore == databaseAfter ? "untouched" : "CHANGED"))

// ninja on the same graph: one edge per task, the same inputs.
guard let ninja = which("ninja") else {
    print("ninja: not installed (apt-get install ninja-build); no ratio")
    exit(0)
}
let ninjaRoot = root + "/ninja"
try AtomicFile.makeDirectory(ninjaRoot + "/out")
var ninjaFile = "rule touch\n  command = touch $out\n"
func target(_ node: BuildGraph.Node) -> String {
    "out/" + node.name.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? String($0) : "_" }.joined()
}
for node in graph.nodes {
    let inputs = node.dependencies.map { target(graph.nodes[$0.node]) }.joined(separator: " ")
    ninjaFile += "build \(target(node)): touch \(inputs)\n"
}
try Data(ninjaFile.utf8).write(to: URL(fileURLWithPath: ninjaRoot + "/build.ninja"))
var ninjaDry: [Double] = []
for _ in 0..<runs { ninjaDry.append(try run(ninja, ["-n"], in: ninjaRoot).seconds) }
let ninjaBuild = try run(ninja, ["-j", "\(ProcessInfo.processInfo.activeProcessorCount + 1)"], in: ninjaRoot)
var ninjaNoop: [Double] = []
for _ in 0..<runs { ninjaNoop.append(try run(ninja, ["-n"], in: ninjaRoot).seconds) }
print(String(format: "ninja -n, cold:     %7.3f s  (%d edges)", median(ninjaDry), taskCount))
print(String(format: "ninja build, cold:  %7.3f s", ninjaBuild.seconds))
print(String(format: "ninja -n, no-op:    %7.3f s", median(ninjaNoop)))
print(String(format: "ratio no-op farm/ninja:   %.2fx", farmNoop / median(ninjaNoop)))
print(String(format: "ratio dry run farm/ninja: %.2fx", median(dryTimes) / median(ninjaDry)))
print(farmNoop < 1.0 ? "target met: no-op under 1 s" : "target MISSED: no-op over 1 s")
