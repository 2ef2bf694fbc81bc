import ArgumentParser
import FarmKit
import Foundation

@main
struct Farm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "farm",
        abstract: "A content-addressed build tool for kernel-module farms.",
        discussion: """
        Exit codes: 0 ok, 1 a task or capture failed, 2 bad input (manifest, recipe, arguments), \
        3 a required tool or library is missing.
        """,
        version: FarmVersion.current,
        subcommands: [CrawlCommand.self, PlanCommand.self, BuildCommand.self, BundleCommand.self, ModuleCommand.self, KeysCommand.self, PublishCommand.self, VerifyCommand.self, LabCommand.self, CaptureCommand.self, ExplainCommand.self, LogCommand.self,
                      StatusCommand.self, GCCommand.self]
    )
}

/// Prints an error the way farm's users read them and exits with the documented code.
func exitReporting(_ error: any Error) -> ExitCode {
    if let exit = error as? ExitCode { return exit }
    FileHandle.standardError.write(Data("farm: \(error)\n".utf8))
    // A bad argument found after parsing (an unknown recipe, a directory where a file belongs) is bad input.
    if error is ValidationError { return ExitCode(ExitStatus.badInput) }
    return ExitCode(ExitStatus.code(for: error))
}
