import ArgumentParser
import FarmEngine
import FarmKit

struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Build, sign and publish every module of the manifest to its 'publish:' directory.",
        discussion: """
        The same as 'farm build -k' on the whole manifest: a kernel whose module fails is left out of \
        the repository (and reported, exit 1) instead of stopping the publication. Readers of the \
        directory see the old repository or the new one, never a mix; unchanged modules are not \
        signed or written again.
        """)

    @OptionGroup var options: GlobalOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var sandbox: SandboxOption
    @OptionGroup var jobs: JobOptions
    @OptionGroup var remote: RemoteCacheOptions
    @OptionGroup var reports: ReportOptions

    func run() async throws {
        let session = try options.session(sandbox: sandbox.sandbox)
        guard session.manifest.publish != nil, session.manifest.signing != nil else {
            throw ValidationError("\(session.manifest.path) needs 'signing:' and 'publish:' to publish a repository"
                                  + " (e.g. signing: {module-key: keys/module, repo-key: keys/repo} and publish: {dir: repo})")
        }
        let summary = try await session.build(patterns: [], options: jobs.buildOptions(keepGoing: true),
                                              reporter: output.reporter(), command: "publish", remoteCache: remote.setting,
                                              reports: reports.files)
        if !summary.succeeded { throw ExitCode(ExitStatus.failure) }
    }
}
