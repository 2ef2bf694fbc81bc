import FarmEngine
import Foundation

/// The report files a build writes besides `cache/reports/last.json`: `--report` (JSON) and `--junit`.
public struct ReportFiles: Sendable {
    public var json: String?
    public var junit: String?

    public init(json: String? = nil, junit: String? = nil) {
        (self.json, self.junit) = (json, junit)
    }

    public var isEmpty: Bool { json == nil && junit == nil }

    /// Each file whole or not at all: a CI job reading one mid-build sees the last complete report.
    func write(_ report: BuildReport, cacheDirectory: String) throws {
        let data = try report.encoded()
        try BuildReport.write(data, to: BuildReport.lastPath(cacheDirectory: cacheDirectory))
        for (flag, path, bytes) in [("--report", json, data), ("--junit", junit, Data(report.junit().utf8))] {
            guard let path else { continue }
            do {
                try BuildReport.write(bytes, to: path)
            } catch {
                throw FarmError.environment("\(flag) \(path): the report could not be written (\(error)); \(BuildReport.lastPath(cacheDirectory: cacheDirectory)) has it")
            }
        }
    }

    /// Why `path` cannot take a report file, or nil: it must not be a directory, and its nearest
    /// existing ancestor must be a directory this user can write (missing ones are made).
    public static func problem(writing path: String) -> String? {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return "is a directory; name the file to write"
        }
        var ancestor = (path as NSString).deletingLastPathComponent
        if ancestor.isEmpty { ancestor = "." }
        while !FileManager.default.fileExists(atPath: ancestor, isDirectory: &isDirectory) {
            let parent = (ancestor as NSString).deletingLastPathComponent
            if parent.isEmpty || parent == ancestor { break }
            ancestor = parent
        }
        guard FileManager.default.fileExists(atPath: ancestor, isDirectory: &isDirectory) else { return nil }
        if !isDirectory.boolValue { return "\(ancestor) is a file, not a directory" }
        if access(ancestor, W_OK) != 0 { return "\(ancestor) is not writable by this user" }
        return nil
    }
}
