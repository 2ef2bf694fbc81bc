import FarmEngine
import Foundation
import SyntheticKinds

// The engine alone, as farm-bench measures it against ninja: reads a synthetic plan file (the
// engine's build.ninja), builds the graph and runs the Builder on a cache. No manifest, no product.
//   farm-bench-engine --plan FILE --cache DIR [-n] [-j N]
// Prints what `farm build` prints into a pipe, then the summary as one JSON line; exits 0, 1 (a
// task failed) or 2 (bad input) like farm.
//   farm-bench-engine --plan FILE --plan-only
// reads the plan file and builds the graph, then prints the number of tasks.

var planPath: String?
var cache: String?
var dryRun = false
var planOnly = false
var jobs = BuildOptions.defaultJobs
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--plan": planPath = arguments.popFirst()
    case "--cache": cache = arguments.popFirst()
    case "-n": dryRun = true
    case "--plan-only": planOnly = true
    case "-j": jobs = arguments.popFirst().flatMap(Int.init) ?? jobs
    default:
        FileHandle.standardError.write(Data("farm-bench-engine: unknown argument '\(argument)'; usage: farm-bench-engine --plan FILE (--cache DIR [-n] [-j N] | --plan-only)\n".utf8))
        exit(2)
    }
}

do {
    let usage = FarmError.badInput("usage: farm-bench-engine --plan FILE (--cache DIR [-n] [-j N] | --plan-only)")
    guard let planPath else { throw usage }
    var graph = BuildGraph()
    SyntheticPlan.add(try SyntheticPlan.read(planPath), to: &graph)
    if planOnly {
        print("\(graph.count) tasks")
        exit(0)
    }
    guard let cache else { throw usage }
    // As `farm build -n`: a dry run only reads the cache, and takes a missing one as empty.
    let store = try BuildCache(directory: cache, access: dryRun ? .readOnly : .shared)
    let summary = try await Builder(cache: store, options: BuildOptions(jobs: jobs, dryRun: dryRun),
                                    reporter: ConsoleReporter(style: .plain)).build(graph)
    store.close()
    print(String(decoding: try JSONEncoder().encode(summary), as: UTF8.self))
    exit(summary.succeeded ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("farm-bench-engine: \(error)\n".utf8))
    exit(ExitStatus.code(for: error))
}
