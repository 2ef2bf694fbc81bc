import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Render a build's report as one static HTML page (per family: modules, profiles, failures).",
        discussion: """
        Reads the last build's report (cache/reports/last.json; every build writes it) or --input, and \
        writes DIR/index.html: one file with its style inline, no script, readable from disk or any web server.
        """)

    @OptionGroup var options: GlobalOptions

    @Option(name: .long, help: ArgumentHelp("The report to render (default: the cache's last build's).", valueName: "file.json"))
    var input: String?

    @Option(name: .shortAndLong, help: ArgumentHelp("The directory to write index.html into.", valueName: "dir"))
    var output = "report"

    func validate() throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw ValidationError("-o \(output) is a file; name a directory to write index.html into")
        }
    }

    func run() throws {
        let path = input ?? BuildReport.lastPath(cacheDirectory: options.cacheDirectory)
        guard input != nil || FileManager.default.fileExists(atPath: path) else {
            throw FarmError.badInput("no build report in \(options.cacheDirectory) (\(path)); run 'farm build' first, or pass --input FILE.json")
        }
        let report = try BuildReport.read(path)
        let page = output + "/index.html"
        try BuildReport.write(Data(report.html().utf8), to: page)
        print("farm: \(page): \(report.kernels.count) kernels of the \(report.command) finished \(report.finished)")
    }
}
