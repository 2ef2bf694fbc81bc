import ArgumentParser
import FarmKit
import Foundation

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The manifest to read.")
    var manifest = "manifest.yml"

    @Option(name: .long, help: "The cache directory (default: $FARM_CACHE, else cache/ beside the manifest).")
    var cache: String?

    @Flag(name: .long, help: "Print one JSON object per event, for machines.")
    var json = false

    @Flag(name: .shortAndLong, help: "Show each task's log as it finishes.")
    var verbose = false

    @Option(name: .long, help: "Where builds run: bwrap (default), chroot (root only) or host (not reproducible). Overrides the manifest's 'sandbox:'.")
    var sandbox: SandboxBackend?

    func session() throws -> Session {
        try Session(manifestPath: manifest, cacheDirectory: cache, rules: FarmRules(sandbox: sandbox))
    }

    func reporter() -> any BuildReporter {
        json ? JSONReporter() : ConsoleReporter(style: ConsoleReporter.defaultStyle(), verbose: verbose)
    }
}

extension SandboxBackend: ExpressibleByArgument {}
