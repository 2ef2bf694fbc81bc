import ArgumentParser
import FarmKit

struct BuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "build", abstract: "Build what the manifest asks for, reusing every cached result.")

    @OptionGroup var options: GlobalOptions

    @Option(name: .short, help: "CPU tasks at once (default: cores + 1).")
    var jobs: Int = BuildOptions.defaultJobs

    @Option(name: .long, help: "Downloads at once.")
    var netJobs: Int = 8

    @Flag(name: [.customShort("k"), .long], help: "Build everything that does not depend on a failure.")
    var keepGoing = false

    @Flag(name: [.customShort("n"), .long], help: "Say what would run and why; run nothing.")
    var dryRun = false

    @Argument(help: "Shell globs over kernel releases (e.g. '6.1.*'); none means all kernels.")
    var patterns: [String] = []

    func run() async throws {
        let summary: BuildSummary
        do {
            let session = try options.session()
            summary = try await session.build(patterns: patterns,
                                              options: BuildOptions(jobs: jobs, networkJobs: netJobs, keepGoing: keepGoing, dryRun: dryRun),
                                              reporter: options.reporter())
        } catch {
            throw exitReporting(error)
        }
        if !summary.succeeded { throw ExitCode(ExitStatus.failure) }
    }
}
