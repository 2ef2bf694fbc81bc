import ArgumentParser
import FarmEngine
import FarmKit

struct BuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "build", abstract: "Build what the manifest asks for, reusing every cached result.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var sandbox: SandboxOption
    @OptionGroup var jobs: JobOptions
    @OptionGroup var shard: ShardOption
    @OptionGroup var remote: RemoteCacheOptions
    @OptionGroup var reports: ReportOptions

    @Flag(name: [.customShort("k"), .long], help: "Build everything that does not depend on a failure.")
    var keepGoing = false

    @Flag(name: [.customShort("n"), .long], help: "Say what would run and why; run nothing.")
    var dryRun = false

    @Argument(help: "Shell globs over kernel releases (e.g. '6.1.*'); none means all kernels.")
    var patterns: [String] = []

    func run() async throws {
        let summary = try await Session.build(manifestPath: options.manifest, cacheDirectory: options.cache,
                                              rules: FarmRules(sandbox: sandbox.sandbox), patterns: patterns, shard: try shard.kernelShard(),
                                              options: jobs.buildOptions(keepGoing: keepGoing, dryRun: dryRun), reporter: output.reporter(),
                                              remoteCache: remote.setting, reports: reports.files)
        if !summary.succeeded { throw ExitCode(ExitStatus.failure) }
    }
}
