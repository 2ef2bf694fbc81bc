import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds

// The engine benchmark: N synthetic kernels (5 tasks each) against ninja on a build.ninja with the
// same nodes and edges, all measured in this run, each side as a whole process: the engine alone
// (farm-bench-engine on a plan file, no product code) and the product's path (farm-test-driver:
// manifest, Session, as `farm build` runs).
//
//   swift run -c release farm-bench [--kernels 10000] [--runs 5]
//   swift run -c release farm-bench bundle [--release R]   (see BundleBenchmark.swift)
//   swift run -c release farm-bench compile [--kernels 8]  (see CompileBenchmark.swift)
//   swift run -c release farm-bench capture [--runs 3]     (see CaptureBenchmark.swift)
//   swift run -c release farm-bench plan [--kernels 10000] (see PlanBenchmark.swift)
//   swift run -c release farm-bench remote [--kernels N]    (see RemoteBenchmark.swift)
//
// Reports plan, cold-cache dry-run, cold build and no-op build times next to `ninja -n`, ninja's
// build and a no-op `ninja -n`, and the ratios.

if CommandLine.arguments.dropFirst().first == "compile" {
    do {
        try await compileBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    } catch {
        print("farm-bench compile: \(error)")
        exit(1)
    }
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
if CommandLine.arguments.dropFirst().first == "remote" {
    do {
        try await remoteBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    } catch {
        print("farm-bench remote: \(error)")
        exit(1)
    }
    exit(0)
}
if CommandLine.arguments.dropFirst().first == "plan" {
    do {
        try planBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    } catch {
        print("farm-bench plan: \(error)")
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
    case "--runs": runs = max(1, arguments.popFirst().flatMap(Int.init) ?? runs)
    default:
        FileHandle.standardError.write(Data("usage: farm-bench [--kernels N] [--runs N]\n".utf8))
        exit(2)
    }
}

func seconds(_ duration: Duration) -> Double {
    duration.seconds
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

/// How long a measured process took, and the end of what it printed: farm's two sides end with
/// their build summary as a JSON line.
struct Measured {
    var status: Int32
    var seconds: Double
    var tail: String
    var summary: BuildSummary? {
        tail.split(separator: "\n").last.flatMap { try? JSONDecoder().decode(BuildSummary.self, from: Data($0.utf8)) }
    }
}

/// Every side's output goes through the same pipe into this process, which keeps only the end.
@discardableResult
func run(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> Measured {
    var tail = Data()
    let start = ContinuousClock.now
    let end = try Executable.run(executable, arguments, environment: nil, directory: directory) { chunk in
        tail.append(chunk)
        if tail.count > 1 << 16 { tail.removeFirst(tail.count - (1 << 15)) }
    }
    return Measured(status: end.status, seconds: seconds(ContinuousClock.now - start), tail: String(decoding: tail, as: UTF8.self))
}

func fileSignature(_ path: String) -> String {
    var info = stat()
    guard stat(path, &info) == 0 else { return "absent" }
    return "\(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
}

func sibling(_ name: String) -> String {
    let path = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path
    guard access(path, X_OK) == 0 else {
        print("farm-bench: \(path) is missing; build every target with 'swift build -c release' (not --product farm-bench)")
        exit(2)
    }
    return path
}

let root = NSTemporaryDirectory() + "farm-bench-\(getpid())"
try AtomicFile.makeDirectory(root)
defer { try? FileManager.default.removeItem(atPath: root) }
let synthetic = SyntheticKernel.numbered(kernels)
let planPath = root + "/plan.txt"
let manifestPath = root + "/manifest.yml"
try Data(SyntheticPlan.text(synthetic).utf8).write(to: URL(fileURLWithPath: planPath))
try Data(SyntheticManifest.text(synthetic).utf8).write(to: URL(fileURLWithPath: manifestPath))

/// One of farm's two measured processes and how it is called.
struct Side {
    let name: String
    let executable: String
    let input: [String]
    let cache: String
    var database: String { fileSignature(cache + "/farm.sqlite") + " " + fileSignature(cache + "/farm.sqlite-wal") }
}
let sides = [
    Side(name: "engine", executable: sibling("farm-bench-engine"), input: ["--plan", planPath], cache: root + "/engine-cache"),
    Side(name: "farm path", executable: sibling("farm-test-driver"), input: ["--plain", "--manifest", manifestPath], cache: root + "/farm-cache"),
]
var graph = BuildGraph()
SyntheticPlan.add(synthetic, to: &graph)
let taskCount = graph.count

print("farm-bench: \(kernels) kernels, \(taskCount) tasks, median of \(runs) runs, \(ProcessInfo.processInfo.activeProcessorCount) cores")
print("engine: farm-bench-engine (plan file, Builder, BuildCache); farm path: farm-test-driver (manifest, Session);")
print("each a whole process printing what farm build prints into a pipe, as ninja does")

func measure(_ side: Side, _ arguments: [String], times: Int) throws -> (median: Double, last: Measured) {
    var durations: [Double] = []
    var last: Measured?
    for _ in 0..<times {
        let result = try run(side.executable, side.input + arguments)
        guard result.status == 0 else {
            print("\(side.name) \(arguments.joined(separator: " ")) exited with status \(result.status):\n\(result.tail.suffix(2000))")
            exit(1)
        }
        durations.append(result.seconds)
        last = result
    }
    return (median(durations), last!)
}

struct Figures {
    var plan = 0.0, dry = 0.0, cold = 0.0, noop = 0.0
    var built = 0, cached = 0, writes = -1
    var untouched = false
}
var figures: [String: Figures] = [:]
for side in sides {
    var figure = Figures()
    let planned = try measure(side, ["--plan-only"], times: runs)
    guard planned.last.tail.hasPrefix("\(taskCount) tasks") else {
        print("\(side.name) planned '\(planned.last.tail.prefix(80))', not \(taskCount) tasks")
        exit(1)
    }
    figure.plan = planned.median
    figure.dry = try measure(side, ["--cache", side.cache, "-n"], times: runs).median
    let cold = try measure(side, ["--cache", side.cache], times: 1)
    figure.cold = cold.median
    figure.built = cold.last.summary?.built ?? -1
    let before = side.database
    let noop = try measure(side, ["--cache", side.cache], times: runs)
    figure.noop = noop.median
    figure.cached = noop.last.summary?.cached ?? -1
    figure.writes = noop.last.summary?.databaseWrites ?? -1
    figure.untouched = before == side.database
    figures[side.name] = figure
}

// ninja on the same graph: one edge per task, the same inputs.
guard let ninja = Executable.find("ninja") else {
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
let ninjaFigures = (dry: median(ninjaDry), cold: ninjaBuild.seconds, noop: median(ninjaNoop))

let engine = figures["engine"]!, product = figures["farm path"]!
print("                        engine     farm path       ninja")
print(String(format: "plan:                 %7.3f s   %7.3f s", engine.plan, product.plan))
print(String(format: "dry run, cold:        %7.3f s   %7.3f s   %7.3f s", engine.dry, product.dry, ninjaFigures.dry))
print(String(format: "build, cold:          %7.2f s   %7.2f s   %7.2f s   (%d and %d built, %d edges)",
             engine.cold, product.cold, ninjaFigures.cold, engine.built, product.built, taskCount))
print(String(format: "no-op build:          %7.3f s   %7.3f s   %7.3f s", engine.noop, product.noop, ninjaFigures.noop))
for (name, figure) in [("engine", engine), ("farm path", product)] {
    print("\(name) no-op: \(figure.cached) cached, \(figure.writes) database writes, database files \(figure.untouched ? "untouched" : "CHANGED")")
}
print(String(format: "ratio no-op    engine/ninja: %.2fx   farm path/ninja: %.2fx", engine.noop / ninjaFigures.noop, product.noop / ninjaFigures.noop))
print(String(format: "ratio dry run  engine/ninja: %.2fx   farm path/ninja: %.2fx", engine.dry / ninjaFigures.dry, product.dry / ninjaFigures.dry))
print(String(format: "ratio cold     engine/ninja: %.2fx   farm path/ninja: %.2fx", engine.cold / ninjaFigures.cold, product.cold / ninjaFigures.cold))
print(product.noop < 1.0 ? "target met: no-op under 1 s" : "target MISSED: no-op over 1 s")
