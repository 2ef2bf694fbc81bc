import ArgumentParser
import FarmEngine
import FarmKit

struct ModuleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "module",
        abstract: "Build one module for one kernel (and what it needs), signed when the manifest says so, and write it to a directory.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var sandbox: SandboxOption
    @OptionGroup var jobs: JobOptions

    @Option(name: [.customShort("o"), .customLong("output")], help: "The directory to write the module (e.g. lime-<release>.ko) into.")
    var directory: String = "."

    @Option(name: .long, help: "The recipe whose module to build.")
    var recipe: String = "lime"

    @Flag(name: .long, help: "Write the module as compiled, without the module signature (it is signed when the manifest has 'signing:').")
    var unsigned = false

    @Argument(help: "The kernel release, as the manifest lists it (e.g. 6.1.0-56-amd64; release@upstream when two upstreams ship it).")
    var release: String

    func run() async throws {
        let session = try options.session(sandbox: sandbox.sandbox)
        guard let module = session.recipes.recipes[recipe] else {
            throw ValidationError("no recipe '\(recipe)' among the manifest's modules (\(session.recipes.order.joined(separator: ", ")))")
        }
        let kernel = try session.kernel(release)
        let signed = session.manifest.signing != nil && !unsigned
        let task: FarmTask = signed ? .sign(recipe: recipe, kernel: kernel.name) : .compile(recipe: recipe, kernel: kernel.name)
        let name = module.outputName(release: kernel.release)
        // A recipe with `compress:` also gets the signed module compressed, written beside it.
        let extras = module.compress.map { ["compressed": name + $0.suffix] } ?? [:]
        let result = try await session.buildOne(task, output: "module", into: directory,
                                                as: name, extras: signed ? extras : [:],
                                                options: jobs.buildOptions(), reporter: output.reporter())
        guard let path = result.path else { throw ExitCode(ExitStatus.failure) }
        print(path)
    }
}
