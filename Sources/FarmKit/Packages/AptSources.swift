import FarmEngine
import Foundation

/// The host's apt sources: deb822 `.sources` files and one-line `.list` files.
public struct AptSources: Sendable {
    public struct Entry: Sendable, Hashable {
        public var uri: String
        public var suites: [String]
        public var components: [String]
        public var signedBy: String?
        public var file: String
    }

    public var entries: [Entry]
    /// The host's release codename (`VERSION_CODENAME` in os-release), e.g. `bookworm`.
    public var codename: String?

    /// Reads `etc/apt/sources.list`, `etc/apt/sources.list.d/*.{list,sources}` and `etc/os-release`
    /// under `root` (`/` on a real host; a test directory in tests).
    public static func load(root: String = "/") throws -> AptSources {
        let base = root.hasSuffix("/") ? root : root + "/"
        var entries: [Entry] = []
        var files = [base + "etc/apt/sources.list"]
        let directory = base + "etc/apt/sources.list.d"
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
        where name.hasSuffix(".list") || name.hasSuffix(".sources") {
            files.append(directory + "/" + name)
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            entries += file.hasSuffix(".sources") ? parseDeb822(data, file: file) : parseOneLine(data, file: file)
        }
        var codename: String?
        for osRelease in [base + "etc/os-release", base + "usr/lib/os-release"] {
            guard let text = try? String(contentsOfFile: osRelease, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("VERSION_CODENAME=") {
                codename = String(line.dropFirst("VERSION_CODENAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
            }
            if codename != nil { break }
        }
        return AptSources(entries: entries, codename: codename)
    }

    static func parseDeb822(_ data: Data, file: String) -> [Entry] {
        ControlFile.parse(data).compactMap { stanza in
            guard (stanza["Types"] ?? "").split(separator: " ").contains("deb"),
                  (stanza["Enabled"] ?? "yes").lowercased() != "no",
                  let uri = stanza["URIs"]?.split(whereSeparator: \.isWhitespace).first else { return nil }
            return Entry(uri: String(uri), suites: words(stanza["Suites"]), components: words(stanza["Components"]),
                         signedBy: stanza["Signed-By"], file: file)
        }
    }

    static func parseOneLine(_ data: Data, file: String) -> [Entry] {
        String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { raw in
            var line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            line = line.trimmingCharacters(in: .whitespaces)
            guard line.hasPrefix("deb ") || line.hasPrefix("deb\t") else { return nil }
            line = String(line.dropFirst(4)).trimmingCharacters(in: .whitespaces)
            var signedBy: String?
            if line.hasPrefix("["), let close = line.firstIndex(of: "]") {
                for option in line[line.index(after: line.startIndex)..<close].split(separator: " ") where option.hasPrefix("signed-by=") {
                    signedBy = String(option.dropFirst("signed-by=".count))
                }
                line = String(line[line.index(after: close)...]).trimmingCharacters(in: .whitespaces)
            }
            let parts = line.split(whereSeparator: \.isWhitespace).map(String.init)
            guard parts.count >= 2 else { return nil }
            return Entry(uri: parts[0], suites: [parts[1]], components: Array(parts.dropFirst(2)), signedBy: signedBy, file: file)
        }
    }

    private static func words(_ value: String?) -> [String] {
        (value ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
    }

    /// Where to find `suite`: `*-security` suites at the URI of the entry carrying the host's
    /// security suite, every other suite at the main archive's URI (the entry carrying the host's
    /// own codename). The manifest's suites need not be the host's.
    public func entry(for suite: String) throws -> Entry {
        let isSecurity = suite.hasSuffix("-security")
        let debs = entries
        let pick: Entry?
        if isSecurity {
            pick = debs.first { entry in entry.suites.contains { $0 == "\(codename ?? "")-security" } }
                ?? debs.first { entry in entry.suites.contains { $0.hasSuffix("-security") } }
        } else {
            pick = debs.first { entry in entry.suites.contains { $0 == codename } }
                ?? debs.first { entry in !entry.suites.contains { $0.hasSuffix("-security") } }
        }
        guard let pick else {
            let kind = isSecurity ? "a security suite (e.g. \(codename ?? "bookworm")-security)" : "the main archive (suite \(codename ?? "?"))"
            throw FarmError.environment("the host's apt sources have no entry for \(kind), needed for suite '\(suite)'; add one to /etc/apt/sources.list.d or give the upstream an explicit 'mirror: URL'")
        }
        return pick
    }
}
