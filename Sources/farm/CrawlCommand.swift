import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct CrawlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crawl",
        abstract: "Discover kernel header packages upstream and pin them by sha256 in the manifest.")

    @OptionGroup var options: GlobalOptions

    @Flag(name: .shortAndLong, help: "Print each index and file the crawl reads.")
    var verbose = false

    @Flag(name: .long, help: "Remove kernels that are gone from a suite that was read.")
    var prune = false

    @Flag(name: .long, help: "Print one JSON object: added, pruned, missing and unserved kernels, warnings, unmatched packages, failures.")
    var json = false

    func run() async throws {
        let outcome = try await Crawler.updateManifest(at: options.manifest, cacheDirectory: options.cacheDirectory, prune: prune) { line in
            if verbose { FileHandle.standardError.write(Data(line.utf8)) }
        }
        let result = outcome.result
        if json {
            print(String(decoding: result.json(manifest: options.manifest, changed: outcome.changed), as: UTF8.self))
        } else {
            for kernel in result.added { print("new kernel: \(kernel)") }
            for kernel in result.removed { print("pruned: \(kernel)") }
            for kernel in result.missing { print("not seen upstream (kept; --prune removes it): \(kernel)") }
            for warning in result.warnings { print("warning: \(warning)") }
            for name in result.unmatched { print("warning: no rule of its family takes \(name)") }
            print("\(options.manifest): \(result.kernels.count) kernels, \(result.packages.count) pinned packages; "
                  + (outcome.changed ? "updated" : "unchanged"))
        }
        // On stderr in both modes: a script reading --json still shows a person why it failed.
        for failure in result.failures { FileHandle.standardError.write(Data("farm: crawl failed for \(failure)\n".utf8)) }
        if !result.failures.isEmpty { throw ExitCode(ExitStatus.failure) }
    }
}
