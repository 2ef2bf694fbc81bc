import FarmEngine
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// One repository of a yum upstream, read the way dnf does: `repodata/repomd.xml` (its
/// `repomd.xml.asc` verified when the upstream has a keyring), then the `primary` metadata whose
/// sha256 and size repomd lists. `primary_db` is never needed (createrepo_c 1.0 stopped making it).
public struct YumRepository: PackageIndexSource {
    /// Where repository paths (the upstream's `suites:`) are looked up: the `mirror:` URL, or every
    /// base URL of the `mirrorlist:` in its order, the first that serves repomd.xml winning.
    public let mirror: String?
    public let mirrorlist: String?
    public let keyring: String?

    public init(mirror: String?, mirrorlist: String? = nil, keyring: String?) {
        self.mirror = mirror
        self.mirrorlist = mirrorlist
        self.keyring = keyring
    }

    /// The base URLs to try, in order; reads the mirrorlist when there is one. Blocking.
    public func baseURLs(workDirectory: String, downloader: Downloader) throws -> [String] {
        var bases: [String]
        if let mirror, !mirror.isEmpty {
            bases = [mirror]
        } else if let mirrorlist {
            let path = workDirectory + "/mirrorlist"
            unlink(path)
            try downloader.download(mirrorlist, to: path, limit: YumRepository.mirrorlistLimit)
            bases = YumRepository.baseURLs(mirrorlist: (try? String(contentsOfFile: path, encoding: .utf8)) ?? "")
            guard !bases.isEmpty else {
                throw FarmError("\(mirrorlist): the mirrorlist names no http(s):// or file:// base URL; check 'mirrorlist:' in the manifest")
            }
        } else {
            bases = []
        }
        return bases.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
    }

    /// repomd.xml has no pin; Fedora's are a few KiB.
    public static let repomdLimit = SizeLimit(bytes: 16 << 20, what: "the 16 MiB farm allows for a repomd.xml")
    public static let signatureLimit = SizeLimit(bytes: 1 << 20, what: "the 1 MiB farm allows for a repomd.xml.asc")
    /// A mirrorlist is a list of URLs, one per line.
    public static let mirrorlistLimit = SizeLimit(bytes: 1 << 20, what: "the 1 MiB farm allows for a mirrorlist")
    /// For a primary repomd gives no size for (old createrepo); Fedora's is about 100 MiB unpacked.
    public static let primaryLimit = SizeLimit(bytes: 1 << 30, what: "the 1 GiB farm allows for a primary.xml")

    /// The URL of a repository path under a base URL; `.` is the base itself.
    public static func url(base: String, path: String) -> String {
        let trimmed = relative(path)
        return trimmed.isEmpty ? base : base + "/" + trimmed
    }

    /// A repository path without `.` components or extra slashes (`./Packages//a.rpm` is `Packages/a.rpm`).
    static func relative(_ path: String) -> String {
        path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
    }

    /// The base URLs a mirrorlist body names: one URL per line, `#` comments and blank lines
    /// ignored, as yum reads it.
    public static func baseURLs(mirrorlist body: String) -> [String] {
        body.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") && ($0.hasPrefix("http://") || $0.hasPrefix("https://") || $0.hasPrefix("file://")) }
    }

    public func index(of upstream: Upstream, suite: String, component: String, architecture: String, workDirectory: String,
                      downloader: Downloader, relevant: @escaping (String) -> Bool) throws -> SuiteIndex {
        var failures: [String] = []
        for base in try baseURLs(workDirectory: workDirectory, downloader: downloader) {
            let repository = YumRepository.url(base: base, path: suite)
            let repomdPath = workDirectory + "/repomd.xml"
            unlink(repomdPath)
            do {
                try downloader.download(repository + "/repodata/repomd.xml", to: repomdPath, limit: YumRepository.repomdLimit)
            } catch {
                // Another mirror of the list may have it; the index itself is never taken unverified.
                failures.append("\(error)")
                continue
            }
            let (packages, warnings) = try read(repository: repository, repomd: repomdPath, upstream: upstream, suite: suite,
                                    architecture: architecture, workDirectory: workDirectory, downloader: downloader, relevant: relevant)
            var index = SuiteIndex(upstream: upstream, suite: suite, architecture: architecture, codename: nil, version: nil, packages: packages)
            index.warnings = warnings
            return index
        }
        if failures.isEmpty { throw FarmError.badInput("upstream '\(upstream.name)' has no base URL to read \(suite) from") }
        throw FarmError(failures.joined(separator: "; "))
    }

    private func read(repository: String, repomd repomdPath: String, upstream: Upstream, suite: String, architecture: String,
                      workDirectory: String, downloader: Downloader, relevant: @escaping (String) -> Bool) throws -> (packages: [IndexPackage], warnings: [String]) {
        let repomdURL = repository + "/repodata/repomd.xml"
        if let keyring {
            let signature = repomdPath + ".asc"
            unlink(signature)
            do {
                try downloader.download(repomdURL + ".asc", to: signature, limit: YumRepository.signatureLimit)
            } catch {
                throw FarmError("\(repomdURL).asc: cannot fetch the repository's signature (\(error)); the upstream '\(upstream.name)' has a keyring,"
                                + " so an unsigned repository is refused. Sign repomd.xml (gpg --detach-sign --armor) or remove 'keyring:'")
            }
            try DetachedSignature.verify(signature: signature, data: repomdPath, keyring: keyring, workDirectory: workDirectory, what: repomdURL)
        }
        guard let repomdData = FileManager.default.contents(atPath: repomdPath) else {
            throw FarmError("\(repomdPath): cannot read the downloaded repomd.xml")
        }
        let primary = try YumRepository.primaryRecord(repomdData, url: repomdURL)
        let primaryURL = primary.href.contains("://") ? primary.href : repository + "/" + primary.href
        let compressed = workDirectory + "/" + ((primary.href as NSString).lastPathComponent)
        unlink(compressed)
        if let size = primary.size {
            try downloader.fetchPinned(urls: [primaryURL], to: compressed, sha256: primary.sha256, size: size)
        } else {
            try downloader.download(primaryURL, to: compressed, limit: YumRepository.primaryLimit)
            let (actual, _) = try SHA256.hash(fileAt: compressed)
            guard actual == primary.sha256 else {
                unlink(compressed)
                throw FarmError("\(primaryURL): checksum mismatch: repomd.xml lists sha256 \(primary.sha256.hex), got \(actual.hex); the index is not used")
            }
        }
        guard let data = FileManager.default.contents(atPath: compressed) else {
            throw FarmError("\(compressed): cannot read the downloaded primary metadata")
        }
        let xml = primary.href.hasSuffix(".xml") ? data : try Archive.decompress(data)
        let parser = PrimaryParser(suite: suite, relevant: relevant)
        let packages = try parser.parse(xml, url: primaryURL)
        return (packages, parser.sha1Only.map { "\(primaryURL): \($0) has no sha256 checksum; left out (farm pins by sha256 only)" })
    }

    /// The `primary` entry of repomd.xml: where it is, its sha256 and size.
    struct PrimaryRecord {
        var href: String
        var sha256: Digest
        var size: Int64?
    }

    static func primaryRecord(_ data: Data, url: String) throws -> PrimaryRecord {
        let delegate = RepomdDelegate()
        let parser = XMLParser(data: data)
        parser.delegate = delegate
        parser.shouldResolveExternalEntities = false
        guard parser.parse() else {
            throw FarmError("\(url): not a repomd.xml: line \(parser.lineNumber): \(parser.parserError.map { "\($0)" } ?? "unreadable XML")")
        }
        guard let record = delegate.primary else {
            throw FarmError("\(url): repomd.xml lists no 'primary' metadata; the repository is incomplete (regenerate it with createrepo_c)")
        }
        guard let href = record.href, !href.isEmpty else { throw FarmError("\(url): the primary entry has no location href") }
        guard record.checksumType == "sha256", let sha = record.checksum.flatMap({ Digest(hex: $0) }) else {
            throw FarmError("\(url): the primary entry's checksum is '\(record.checksumType ?? "none")', not sha256; farm pins by sha256 only."
                            + " Regenerate the repository with createrepo_c (its default is sha256)")
        }
        return PrimaryRecord(href: href, sha256: sha, size: record.size)
    }
}

/// Collects repomd.xml's `<data type="primary">` record.
private final class RepomdDelegate: NSObject, XMLParserDelegate {
    struct Record {
        var href: String?
        var checksumType: String?
        var checksum: String?
        var size: Int64?
    }

    var primary: Record?
    private var current: Record?
    private var text = ""
    private var depth = 0
    private var dataDepth = 0

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        depth += 1
        text = ""
        switch name {
        case "data" where attributes["type"] == "primary":
            current = Record()
            dataDepth = depth
        case "location" where current != nil:
            current?.href = attributes["href"]
        case "checksum" where current != nil && depth == dataDepth + 1:
            current?.checksumType = attributes["type"]
        default:
            break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        defer { depth -= 1 }
        guard current != nil else { return }
        switch name {
        case "checksum" where depth == dataDepth + 1:
            current?.checksum = text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        case "size" where depth == dataDepth + 1:
            current?.size = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines))
        case "data" where depth == dataDepth:
            primary = current
            current = nil
        default:
            break
        }
    }
}

/// Reads primary.xml with Foundation's event parser, keeping the packages `relevant` names;
/// a Fedora primary lists some 70,000 packages and only a handful of them are kernels.
final class PrimaryParser: NSObject, XMLParserDelegate {
    let suite: String
    let relevant: (String) -> Bool
    private(set) var packages: [IndexPackage] = []
    /// Relevant packages left out because they carry no sha256, by name and version.
    private(set) var sha1Only: [String] = []

    private struct Entry {
        var name = ""
        var architecture = ""
        var version = ""
        var checksumType = ""
        var checksum = ""
        var size: Int64 = -1
        var href = ""
        var base: String?
        var source = ""
        var requires: [String] = []
        var keep: Bool?
    }

    private var entry: Entry?
    private var text = ""
    private var inRequires = false

    init(suite: String, relevant: @escaping (String) -> Bool) {
        self.suite = suite
        self.relevant = relevant
    }

    func parse(_ data: Data, url: String) throws -> [IndexPackage] {
        let parser = XMLParser(data: data)
        parser.delegate = self
        parser.shouldProcessNamespaces = false
        parser.shouldResolveExternalEntities = false
        guard parser.parse() else {
            throw FarmError("\(url): not a primary.xml: line \(parser.lineNumber): \(parser.parserError.map { "\($0)" } ?? "unreadable XML")")
        }
        return packages
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        text = ""
        if name == "package" {
            entry = Entry()
            return
        }
        guard entry != nil, entry?.keep != false else { return }
        switch name {
        case "version":
            let epoch = attributes["epoch"].flatMap { $0 == "0" || $0.isEmpty ? nil : $0 }
            let version = (attributes["ver"] ?? "") + "-" + (attributes["rel"] ?? "")
            entry?.version = epoch.map { "\($0):\(version)" } ?? version
        case "checksum":
            entry?.checksumType = attributes["type"] ?? ""
        case "size":
            entry?.size = attributes["package"].flatMap { Int64($0) } ?? -1
        case "location":
            entry?.href = attributes["href"] ?? ""
            entry?.base = attributes["xml:base"]
        case "rpm:requires":
            inRequires = true
        case "rpm:entry" where inRequires:
            guard let dependency = attributes["name"], !dependency.hasPrefix("rpmlib("), !dependency.hasPrefix("/"),
                  !dependency.contains("("), !dependency.contains(",") else { return }
            let relations = ["EQ": "=", "GE": ">=", "LE": "<=", "GT": ">>", "LT": "<<"]
            if let flags = attributes["flags"], let relation = relations[flags], let ver = attributes["ver"] {
                var version = ver
                if let rel = attributes["rel"] { version += "-" + rel }
                if let epoch = attributes["epoch"], epoch != "0" { version = epoch + ":" + version }
                entry?.requires.append("\(dependency) (\(relation) \(version))")
            } else {
                entry?.requires.append(dependency)
            }
        default:
            break
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        if entry != nil, entry?.keep != false { text += string }
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        guard entry != nil else { return }
        switch name {
        case "name" where entry?.keep == nil:
            // The name comes first in an entry: everything after it is skipped for other packages.
            let packageName = text.trimmingCharacters(in: .whitespacesAndNewlines)
            entry?.name = packageName
            entry?.keep = relevant(packageName)
        case "arch" where entry?.keep == true:
            entry?.architecture = text.trimmingCharacters(in: .whitespacesAndNewlines)
        case "checksum" where entry?.keep == true:
            entry?.checksum = text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        case "rpm:sourcerpm" where entry?.keep == true:
            entry?.source = text.trimmingCharacters(in: .whitespacesAndNewlines)
        case "rpm:requires":
            inRequires = false
        case "package":
            defer { entry = nil }
            guard let done = entry, done.keep == true else { return }
            guard done.checksumType == "sha256", let sha = Digest(hex: done.checksum) else {
                sha1Only.append("\(done.name)-\(done.version).\(done.architecture) (checksum \(done.checksumType))")
                return
            }
            guard done.size >= 0, !done.href.isEmpty else { return }
            let filename: String
            if let base = done.base, base.contains("://") {
                filename = (base.hasSuffix("/") ? base : base + "/") + done.href
            } else {
                filename = YumRepository.relative(suite + "/" + done.href)
            }
            packages.append(IndexPackage(name: done.name, version: done.version, architecture: done.architecture, source: done.source,
                                         depends: done.requires.joined(separator: ", "), filename: filename, size: done.size,
                                         sha256: sha, suite: suite))
        default:
            break
        }
    }
}
