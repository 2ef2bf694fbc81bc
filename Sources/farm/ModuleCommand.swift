import ArgumentParser
import FarmKit

struct ModuleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "module",
        abstract: "Build one module for one kernel (and what it needs), signed when the manifest says so, and write it to a directory.")

    @OptionGroup var options: GlobalOptions

    @Option(name: .shortAndLong, help: "The directory to write the module (e.g. lime-<release>.ko) into.")
    var output: String = "."

    @Option(name: .long, help: "Downloads at once.")
    var netJobs: Int = 8

    @Option(name: .long, help: "The recipe whose module to build.")
    var recipe: String = "lime"

    @Flag(name: .long, help: "Write the module as compiled, without the module signature (it is signed when the manifest has 'signing:').")
    var unsigned = false

    @Option(name: .short, help: "CPU tasks at once.")
    var jobs: Int?

    @Argument(help: "The kernel release, as the manifest lists it (e.g. 6.1.0-56-amd64).")
    var release: String

    func run() async throws {
        let result: (summary: BuildSummary, path: String?)
        do {
            let session = try options.session()
            guard let module = session.recipes.recipes[recipe] else {
                throw ValidationError("no recipe '\(recipe)' among the manifest's modules (\(session.recipes.order.joined(separator: ", ")))")
            }
            var buildOptions = BuildOptions(networkJobs: netJobs)
            if let jobs { buildOptions.jobs = jobs }
            let kind = session.manifest.signing == nil || unsigned ? "compile" : "sign"
            let name = module.outputName(release: release)
            // A recipe with `compress:` also gets the signed module compressed, written beside it.
            let extras = module.compress.map { ["compressed": name + $0.suffix] } ?? [:]
            result = try await session.buildOne("\(kind):\(recipe)/\(release)", output: "module", into: output,
                                                as: name, extras: kind == "sign" ? extras : [:],
                                                options: buildOptions, reporter: options.reporter())
        } catch {
            throw exitReporting(error)
        }
        guard let path = result.path else { throw ExitCode(ExitStatus.failure) }
        print(path)
    }
}
