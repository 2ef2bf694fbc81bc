import ArgumentParser
import FarmEngine
import FarmKit

struct ProfileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Build one kernel's Volatility 3 symbol table (from its image package; no debug package) and write it to a directory.",
        discussion: "The file is <family>_<release>_<package version>_<arch>.json.xz; 'vol -s DIR' finds it when it is under DIR/linux/.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var jobs: JobOptions

    @Option(name: [.customShort("o"), .customLong("output")], help: "The directory to write the table into.")
    var directory: String = "."

    @Argument(help: "The kernel release, as the manifest lists it (e.g. 6.1.0-56-amd64; release@upstream when two upstreams ship it).")
    var release: String

    func run() async throws {
        let session = try options.session()
        let kernel = try session.kernel(release)
        let result = try await session.buildOne(.profile(kernel: kernel.name), output: "table", into: directory,
                                                as: ProfileAction.fileName(for: kernel), graph: try session.profileGraph(kernel),
                                                options: jobs.buildOptions(), reporter: output.reporter())
        guard let path = result.path else { throw ExitCode(ExitStatus.failure) }
        print(path)
    }
}
