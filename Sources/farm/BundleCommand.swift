import ArgumentParser
import FarmEngine
import FarmKit

struct BundleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bundle",
        abstract: "Build one kernel's bundle (kernel-packer layout) and write it to a directory.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var jobs: JobOptions

    @Option(name: [.customShort("o"), .customLong("output")], help: "The directory to write bundle-<release>.tgz into.")
    var directory: String = "."

    @Argument(help: "The kernel release, as the manifest lists it (e.g. 6.1.0-56-amd64; release@upstream when two upstreams ship it).")
    var release: String

    func run() async throws {
        let session = try options.session()
        let kernel = try session.kernel(release)
        let result = try await session.buildOne(.bundle(kernel: kernel.name), output: "bundle", into: directory,
                                                as: "bundle-\(kernel.release).tgz",
                                                          options: jobs.buildOptions(), reporter: output.reporter())
        guard let path = result.path else { throw ExitCode(ExitStatus.failure) }
        print(path)
    }
}
