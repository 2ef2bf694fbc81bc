import ArgumentParser
import FarmEngine
import FarmKit

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "log", abstract: "Print the log of a task's last run.")

    @OptionGroup var options: GlobalOptions

    @Argument(help: "The task, as kind:label, label or key prefix.")
    var task: String

    func run() throws {
        let (record, text) = try options.session().log(task)
        print("# \(record.name) key \(record.key.hex) \(record.status == 0 ? "succeeded" : "failed") at \(record.started) in \(String(format: "%.2f", record.duration))s")
        print(text, terminator: text.hasSuffix("\n") || text.isEmpty ? "" : "\n")
    }
}
