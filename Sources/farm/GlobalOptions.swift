import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

/// `--manifest` and `--cache`: the project and cache a command works on. Every other shared flag
/// is its own group, declared only by the commands that honour it.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The manifest to read.")
    var manifest = "manifest.yml"

    @Option(name: .long, help: "The cache directory (default: $FARM_CACHE, else cache/ beside the manifest).")
    var cache: String?

    var cacheDirectory: String { Session.cacheDirectory(option: cache, manifestPath: manifest) }

    func session(sandbox: SandboxBackend? = nil, dryRun: Bool = false) throws -> Session {
        try Session(manifestPath: manifest, cacheDirectory: cache, rules: FarmRules(sandbox: sandbox), writing: !dryRun)
    }
}

/// `--json` and `-v`: how a build's progress is shown.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print one JSON object per event, for machines.")
    var json = false

    @Flag(name: .shortAndLong, help: "Show each task's log as it finishes.")
    var verbose = false

    func reporter() -> any BuildReporter {
        json ? JSONReporter() : ConsoleReporter(style: ConsoleReporter.defaultStyle(), verbose: verbose)
    }
}

/// `--report` and `--junit`: files a CI reads after a build, written also when it fails.
struct ReportOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Write a JSON report of every kernel of the build (the README's 'Build reports' has its fields).", valueName: "file.json"))
    var report: String?

    @Option(name: .long, help: ArgumentHelp("Write a JUnit XML report: a test suite per family, a test case per kernel.", valueName: "file.xml"))
    var junit: String?

    var files: ReportFiles { ReportFiles(json: report, junit: junit) }

    /// Refused before the build, not after minutes of it: a path whose nearest existing
    /// ancestor is not a directory this user can write.
    func validate() throws {
        for (flag, path) in [("--report", report), ("--junit", junit)] {
            guard let path else { continue }
            if let problem = ReportFiles.problem(writing: path) { throw ValidationError("\(flag) \(path): \(problem)") }
        }
    }
}

/// `--sandbox`: for the commands whose plan holds compile tasks.
struct SandboxOption: ParsableArguments {
    @Option(name: .long, help: "Where builds run: bwrap (default), chroot (root only) or host (not reproducible). Overrides the manifest's 'sandbox:'.")
    var sandbox: SandboxBackend?
}

/// `-j` and `--net-jobs`: how many tasks run at once.
struct JobOptions: ParsableArguments {
    @Option(name: .short, help: "CPU tasks at once (default: cores + 1).")
    var jobs: Int = BuildOptions.defaultJobs

    @Option(name: .long, help: "Downloads at once.")
    var netJobs: Int = 8

    @Option(name: .long, help: "Bundle tasks (unpacking and packing header trees) at once, apart from -j (default: cores / 2).")
    var ioJobs: Int = BuildOptions.defaultIOJobs

    func validate() throws {
        guard jobs >= 1 else { throw ValidationError("-j takes a number of tasks of at least 1, not \(jobs)") }
        guard netJobs >= 1 else { throw ValidationError("--net-jobs takes a number of downloads of at least 1, not \(netJobs)") }
        guard ioJobs >= 1 else { throw ValidationError("--io-jobs takes a number of tasks of at least 1, not \(ioJobs)") }
    }

    func buildOptions(keepGoing: Bool = false, dryRun: Bool = false) -> BuildOptions {
        BuildOptions(jobs: jobs, networkJobs: netJobs, ioJobs: ioJobs, keepGoing: keepGoing, dryRun: dryRun)
    }
}

extension SandboxBackend: ExpressibleByArgument {}

/// `--shard I/N` on `build` and `plan`.
struct ShardOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Only shard I of N (numbered from 0): the kernels a hash of upstream and release puts there; for CI matrices and Slurm job arrays.",
                                            valueName: "I/N"))
    var shard: String?

    func kernelShard() throws -> KernelShard? { try shard.map(KernelShard.init(parsing:)) }
}

/// `--remote-cache URL` and `--remote-cache-read-only`: a cache shared between machines.
struct RemoteCacheOptions: ParsableArguments {
    @Option(name: .customLong("remote-cache"), help: ArgumentHelp(
        "A cache shared between machines, Bazel's HTTP cache protocol (URL/ac/, URL/cas/); overrides the manifest's 'remote-cache:'.",
        valueName: "url"))
    var url: String?

    @Flag(name: .customLong("remote-cache-read-only"), help: "Take results from the remote cache, never upload to it.")
    var readOnly = false

    func validate() throws {
        if let url, let problem = RemoteCacheSetting.problem(with: url) { throw ValidationError("--remote-cache: " + problem) }
    }

    var setting: RemoteCacheSetting { RemoteCacheSetting(url: url, readOnly: readOnly) }
}
