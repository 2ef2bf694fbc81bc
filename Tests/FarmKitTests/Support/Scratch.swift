import FarmEngine
import FarmKit
import Foundation

/// A temporary directory for one test, removed when the test ends.
final class Scratch {
    let path: String

    init(_ name: String = #function) throws {
        // Short: gpg-agent's socket lives under a GnuPG home here, and a socket path has 108 bytes.
        let safe = String(name.filter { $0.isLetter || $0.isNumber }.prefix(24))
        path = NSTemporaryDirectory() + "farm-test-\(safe)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ relative: String) -> String { path + "/" + relative }

    @discardableResult
    func write(_ relative: String, _ text: String) throws -> String {
        let target = file(relative)
        try FileManager.default.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: target))
        return target
    }

    func read(_ relative: String) throws -> String {
        try String(contentsOfFile: file(relative), encoding: .utf8)
    }
}

/// The executables `swift build` put beside the test bundle.
enum Products {
    static let directory: String = {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        if FileManager.default.isExecutableFile(atPath: beside + "/farm") { return beside }
        // Fallback: the package's own debug products.
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/", !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            url.deleteLastPathComponent()
        }
        return url.appendingPathComponent(".build/debug").path
    }()

    static var farm: String { directory + "/farm" }
    static var driver: String { directory + "/farm-test-driver" }
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String

    /// The JSON events a `--json` run printed, one object per line.
    var events: [[String: Any]] {
        stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    func tasks(_ event: String) -> Set<String> {
        Set(events.filter { $0["event"] as? String == event }.compactMap { $0["task"] as? String })
    }
}

/// Runs a program to its end and collects what it printed.
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                directory: String? = nil) throws -> ProcessResult {
    let merged = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let result = try Executable.run(executable, arguments, environment: merged, directory: directory)
    return ProcessResult(status: result.status, stdout: result.stdout, stderr: result.stderr)
}

/// Every file under a directory with its sha256, to prove that a command wrote nothing.
func treeDigest(_ directory: String) -> [String: String] {
    var result: [String: String] = [:]
    guard let walker = FileManager.default.enumerator(atPath: directory) else { return result }
    while let relative = walker.nextObject() as? String {
        let path = directory + "/" + relative
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            result[relative] = (try? SHA256.hash(fileAt: path).digest.hex) ?? "unreadable"
        }
    }
    return result
}
