import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

@main
struct Farm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "farm",
        abstract: "A content-addressed build tool for kernel-module farms.",
        discussion: """
        Exit codes: 0 ok, 1 a task or capture failed, 2 bad input (manifest, recipe, arguments), \
        3 the environment lacks something farm needs (a tool, a key, a sandbox that cannot start).
        """,
        version: FarmVersion.current,
        subcommands: [CrawlCommand.self, PlanCommand.self, BuildCommand.self, BundleCommand.self, ModuleCommand.self, ProfileCommand.self, KeysCommand.self, PublishCommand.self, VerifyCommand.self, LabCommand.self, CaptureCommand.self, ExplainCommand.self, LogCommand.self,
                      StatusCommand.self, GCCommand.self, ReportCommand.self]
    )

    /// The one place where an error becomes what the user reads and the exit code the README
    /// documents: commands throw, this prints.
    static func main() async {
        // A blocked signal mask survives exec: a caller that blocks SIGINT or SIGTERM (the Swift
        // test runner's threads do) would make farm deaf to Ctrl-C and to kill. Threads farm starts
        // later inherit this thread's mask.
        var deliverable = sigset_t()
        sigemptyset(&deliverable)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] { sigaddset(&deliverable, signal) }
        pthread_sigmask(SIG_UNBLOCK, &deliverable, nil)
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            Foundation.exit(reportParsing(error))
        }
        do {
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            Foundation.exit(report(error))
        }
    }

    /// Usage errors print as ArgumentParser prints them (with the usage line) and are bad input;
    /// `--help` and `--version` succeed.
    static func reportParsing(_ error: any Error) -> Int32 {
        let message = fullMessage(for: error)
        if exitCode(for: error) == .success {
            print(message)
            return ExitStatus.success
        }
        FileHandle.standardError.write(Data((message + "\n").utf8))
        return ExitStatus.badInput
    }

    static func report(_ error: any Error) -> Int32 {
        if let exit = error as? ExitCode { return exit.rawValue }
        // `farm help` and `--help` come back from ArgumentParser's own help command's run.
        if String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") { return reportParsing(error) }
        FileHandle.standardError.write(Data("farm: \(error)\n".utf8))
        // A bad argument found after parsing (an unknown recipe, a directory where a file belongs).
        if error is ValidationError { return ExitStatus.badInput }
        return ExitStatus.code(for: error)
    }
}
