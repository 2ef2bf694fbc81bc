import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds

// Runs `farm build` over synthetic task kinds in its own process, so tests can SIGKILL a build
// mid-way and run two builds at once on one cache, and farm-bench can time the product's path:
//   farm-test-driver --manifest M --cache C [-k] [-n] [-j N] [PATTERN...]
// Prints the JSON event stream; exits 0, 1 (a task failed) or 2 (bad input) like farm. With
// --plain it prints what `farm build` prints into a pipe, then the summary as one JSON line.
//   farm-test-driver --manifest M --cache C --plan-only
// reads the manifest and plans, then prints the number of tasks.
// --remote-cache URL and --remote-cache-read-only are farm build's.
//   farm-test-driver --cache C --install PUBLICATION-DIGEST DIR
// writes a publication the cache holds into DIR (Publisher.install alone, to kill it mid-way).

var manifest = "manifest.yml"
var cache: String?
var keepGoing = false
var dryRun = false
var planOnly = false
var plain = false
var jobs = BuildOptions.defaultJobs
var patterns: [String] = []
var install: (publication: String, directory: String)?
var remoteCache = RemoteCacheSetting()
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--manifest": manifest = arguments.popFirst() ?? manifest
    case "--cache": cache = arguments.popFirst()
    case "-k": keepGoing = true
    case "-n": dryRun = true
    case "--plan-only": planOnly = true
    case "--plain": plain = true
    case "-j": jobs = arguments.popFirst().flatMap(Int.init) ?? jobs
    case "--install": install = (arguments.popFirst() ?? "", arguments.popFirst() ?? "")
    case "--remote-cache": remoteCache.url = arguments.popFirst()
    case "--remote-cache-read-only": remoteCache.readOnly = true
    default: patterns.append(argument)
    }
}

do {
    if let install, let cache, let digest = Digest(hex: install.publication) {
        let store = try BuildCache(directory: cache)
        let publication = try PublicationFiles.decode(try store.objects.read(digest))
        let report = try Publisher.install(publication, objects: store.objects, into: install.directory)
        print("\(report.written.count) written")
        exit(0)
    }
    if planOnly {
        let session = try Session(manifestPath: manifest, cacheDirectory: cache, rules: SyntheticRules(), writing: false)
        print("\(try session.plan(patterns).count) tasks")
        exit(0)
    }
    // As `farm build`: the up-to-date stamp first, then the full build.
    let summary = try await Session.build(manifestPath: manifest, cacheDirectory: cache, rules: SyntheticRules(), patterns: patterns,
                                          options: BuildOptions(jobs: jobs, keepGoing: keepGoing, dryRun: dryRun),
                                          reporter: plain ? ConsoleReporter(style: .plain) : JSONReporter(), remoteCache: remoteCache)
    if plain { print(String(decoding: try JSONEncoder().encode(summary), as: UTF8.self)) }
    exit(summary.succeeded ? 0 : 1)
} catch {
    FileHandle.standardError.write(Data("farm-test-driver: \(error)\n".utf8))
    exit(ExitStatus.code(for: error))
}
