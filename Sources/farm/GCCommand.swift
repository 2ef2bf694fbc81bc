import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove objects no current task result references.")

    @OptionGroup var options: GlobalOptions

    @Flag(name: .long, help: "Re-hash every kept object and report (and remove) corrupt ones.")
    var verify = false

    func run() throws {
        let report: BuildCache.CollectionReport
        let directory = options.cacheDirectory
        report = try BuildCache(directory: directory, access: .exclusive).collectGarbage(verify: verify)
        print("removed \(report.removedObjects) objects (\(ByteCountFormatter.string(fromByteCount: report.removedBytes, countStyle: .binary))), \(report.removedResults) superseded results and \(report.removedTrees) unpacked trees")
        if verify {
            print("verified \(report.checkedObjects) objects and \(report.checkedTrees) unpacked trees: \(report.corrupt.count) corrupt")
            for path in report.corrupt { print("corrupt (removed; the next build remakes it): \(path)") }
            if !report.corrupt.isEmpty { throw ExitCode(ExitStatus.failure) }
        }
    }
}
