import ArgumentParser
import FarmEngine
import FarmKit

extension PlanCommand.Format: ExpressibleByArgument {}

struct PlanCommand: ParsableCommand {
    typealias Format = PlanFormatter.Format

    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Show the tasks a build would consist of.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var sandbox: SandboxOption
    @OptionGroup var shard: ShardOption

    @Option(name: .long, help: "text, json or dot.")
    var format: Format = .text

    @Argument(help: "Shell globs over kernel releases (e.g. '6.1.*'); none means all kernels.")
    var patterns: [String] = []

    func run() throws {
        var timer = PhaseTimer()
        let session = try options.session(sandbox: sandbox.sandbox)
        let graph = try session.plan(patterns, shard: try shard.kernelShard())
        timer.mark("plan")
        PlanFormatter.print(graph, as: format)
        timer.mark("print")
    }
}
