import ArgumentParser
import FarmKit

struct BundleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bundle",
        abstract: "Build one kernel's bundle (kernel-packer layout) and write it to a directory.")

    @OptionGroup var options: GlobalOptions

    @Option(name: .shortAndLong, help: "The directory to write bundle-<release>.tgz into.")
    var output: String = "."

    @Option(name: .long, help: "Downloads at once.")
    var netJobs: Int = 8

    @Argument(help: "The kernel release, as the manifest lists it (e.g. 6.1.0-56-amd64).")
    var release: String

    func run() async throws {
        let result: (summary: BuildSummary, path: String?)
        do {
            result = try await options.session().buildOne("bundle:\(release)", output: "bundle", into: output,
                                                          as: "bundle-\(release).tgz",
                                                          options: BuildOptions(networkJobs: netJobs), reporter: options.reporter())
        } catch {
            throw exitReporting(error)
        }
        guard let path = result.path else { throw ExitCode(ExitStatus.failure) }
        print(path)
    }
}
