import ArgumentParser
import FarmEngine
import FarmKit

struct ExplainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "explain", abstract: "Say why a task would run: never built, definition changed, input changed, output missing.")

    @OptionGroup var options: GlobalOptions
    @OptionGroup var sandbox: SandboxOption

    @Argument(help: "The task, as kind:label (see 'farm plan').")
    var task: String

    func run() throws {
        print(try options.session(sandbox: sandbox.sandbox).explain(task))
    }
}
