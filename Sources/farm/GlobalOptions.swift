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
