import FarmEngine
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// One module as `*-primary.xml` lists it (specs/repository.md: all nine parts required).
public struct RepositoryModule: Sendable, Hashable, Codable {
    public var type: String
    public var name: String
    public var arch: String
    /// sha256 of the module file, lowercase hex.
    public var checksum: String
    /// The kernel release (`uname -r`) it is for.
    public var version: String
    public var packager: String
    public var location: String
    public var signature: String
    public var platform: String

    public init(type: String = "lime", name: String, arch: String, checksum: String, version: String,
                packager: String = "farm", location: String, signature: String, platform: String = "linux") {
        self.type = type
        self.name = name
        self.arch = arch
        self.checksum = checksum
        self.version = version
        self.packager = packager
        self.location = location
        self.signature = signature
        self.platform = platform
    }
}

/// `repodata/repomd.xml`: its `data type="primary"` entry, and farm's `data type="symbols"`
/// entry when the repository carries symbol tables (Margarita Shotgun ignores other entries).
public struct RepositoryIndex: Sendable, Hashable {
    public var revision: Int
    public var checksum: String
    public var openChecksum: String
    public var location: String
    public var timestamp: Int
    public var size: Int
    public var openSize: Int
    /// The symbol-table index (`repodata/<open_checksum>-symbols.json.gz`), the same children as primary's.
    public var symbols: Entry?

    public struct Entry: Sendable, Hashable {
        public var checksum: String
        public var openChecksum: String
        public var location: String
        public var size: Int
        public var openSize: Int
        public init(checksum: String, openChecksum: String, location: String, size: Int, openSize: Int) {
            self.checksum = checksum
            self.openChecksum = openChecksum
            self.location = location
            self.size = size
            self.openSize = openSize
        }
    }

    public init(revision: Int, checksum: String, openChecksum: String, location: String, timestamp: Int, size: Int, openSize: Int) {
        self.revision = revision
        self.checksum = checksum
        self.openChecksum = openChecksum
        self.location = location
        self.timestamp = timestamp
        self.size = size
        self.openSize = openSize
    }
}

/// One symbol table as farm's index lists it (specs/repository.md, "Symbol tables").
public struct SymbolTableEntry: Sendable, Hashable, Codable {
    /// The kernel release (`uname -r`).
    public var release: String
    /// `uname -m`.
    public var arch: String
    public var family: String
    /// base64 of `linux_banner` with its trailing "\n\0": what volatility3 matches an image by.
    public var banner: String
    public var location: String
    /// sha256 of the `.json.xz`, lowercase hex.
    public var checksum: String
    public var signature: String

    public init(release: String, arch: String, family: String, banner: String, location: String, checksum: String, signature: String) {
        self.release = release
        self.arch = arch
        self.family = family
        self.banner = banner
        self.location = location
        self.checksum = checksum
        self.signature = signature
    }

    /// The banner's text as `/proc/version` shows it: without the trailing newline and NUL.
    public var bannerText: String? {
        Data(base64Encoded: banner).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "\n\0")) }
    }
}

struct SymbolsIndex: Codable {
    var version: Int
    var tables: [SymbolTableEntry]
}

/// Writes and reads the repository's two XML files exactly as specs/repository.md says.
public enum RepositoryFormat {
    public static let repomdPath = "repodata/repomd.xml"
    public static let repomdSignaturePath = "repodata/repomd.xml.sig"
    public static let keyPath = "REPO_SIGNING_KEY.asc"
    public static let keyDescriptionPath = "REPO_SIGNING_KEY.json"

    /// `uname -m` for a Debian architecture.
    public static func unameMachine(debianArchitecture: String) -> String {
        switch debianArchitecture {
        case "amd64": "x86_64"
        case "arm64": "aarch64"
        case "i386": "i686"
        case "armhf", "armel": "armv7l"
        case "ppc64el": "ppc64le"
        default: debianArchitecture
        }
    }

    /// One escaping for every XML farm writes (repository metadata, reports).
    static func escape(_ text: String) -> String { Markup.escape(text) }

    /// The manifest, modules sorted by version. Margarita Shotgun 0.4.1 cannot read a manifest
    /// with exactly one `<module>` (xmltodict gives it a mapping, not a list), so a lone module
    /// is listed twice: the same entry, which every client resolves to the same file.
    public static func primaryXML(_ modules: [RepositoryModule]) -> Data {
        var listed = modules.sorted { ($0.version, $0.name) < ($1.version, $1.name) }
        if listed.count == 1 { listed.append(listed[0]) }
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<modules>\n"
        for module in listed {
            xml += """
              <module type="\(escape(module.type))">
                <name>\(escape(module.name))</name>
                <arch>\(escape(module.arch))</arch>
                <checksum>\(module.checksum)</checksum>
                <version>\(escape(module.version))</version>
                <packager>\(escape(module.packager))</packager>
                <location href="\(escape(module.location))"/>
                <signature href="\(escape(module.signature))"/>
                <platform>\(escape(module.platform))</platform>
              </module>

            """
        }
        xml += "</modules>\n"
        return Data(xml.utf8)
    }

    public static func repomdXML(_ index: RepositoryIndex) -> Data {
        func entry(_ type: String, _ checksum: String, _ openChecksum: String, _ location: String, _ size: Int, _ openSize: Int) -> String {
            """
              <data type="\(type)">
                <checksum>\(checksum)</checksum>
                <open_checksum>\(openChecksum)</open_checksum>
                <location href="\(escape(location))"/>
                <timestamp>\(index.timestamp)</timestamp>
                <size>\(size)</size>
                <open_size>\(openSize)</open_size>
              </data>

            """
        }
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata>\n  <revision>\(index.revision)</revision>\n"
        xml += entry("primary", index.checksum, index.openChecksum, index.location, index.size, index.openSize)
        if let symbols = index.symbols {
            xml += entry("symbols", symbols.checksum, symbols.openChecksum, symbols.location, symbols.size, symbols.openSize)
        }
        xml += "</metadata>\n"
        return Data(xml.utf8)
    }

    /// The symbol-table index's bytes (sorted, so the same tables give the same file).
    public static func symbolsJSON(_ tables: [SymbolTableEntry]) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(SymbolsIndex(version: 1, tables: tables.sorted { ($0.release, $0.location) < ($1.release, $1.location) }))
    }

    public static func parseSymbols(_ data: Data, name: String) throws -> [SymbolTableEntry] {
        let index: SymbolsIndex
        do {
            index = try JSONDecoder().decode(SymbolsIndex.self, from: data)
        } catch {
            throw FarmError("\(name): not farm's symbol-table index (\(error))")
        }
        guard index.version == 1 else { throw FarmError("\(name): symbol-table index version \(index.version); this farm reads version 1, so upgrade farm") }
        for table in index.tables {
            try checkRelative(table.location, name: name)
            try checkRelative(table.signature, name: name)
        }
        return index.tables
    }

    /// volatility3's remote identifier list (`symbols/banners.json`, read by `vol --remote-isf-url`):
    /// banner → the tables' absolute URLs under `baseURL`.
    public static func bannersJSON(_ tables: [SymbolTableEntry], baseURL: String) throws -> Data {
        var linux: [String: [String]] = [:]
        for table in tables { linux[table.banner, default: []].append(baseURL + "/" + table.location) }
        struct Banners: Encodable { let version: Int; let linux: [String: [String]] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(Banners(version: 1, linux: linux.mapValues { $0.sorted() }))
    }

    // MARK: reading

    /// Every href read is checked to stay inside the repository.
    public static func parseRepomd(_ data: Data, name: String) throws -> RepositoryIndex {
        let tree = try XMLTree.parse(data, name: name)
        guard tree.name == "metadata" else { throw FarmError("\(name): the root element is <\(tree.name)>, not <metadata>") }
        guard let revision = tree.child("revision").flatMap({ Int($0.text) }) else {
            throw FarmError("\(name): <revision> is missing or not an integer")
        }
        func entry(_ type: String) throws -> (entry: RepositoryIndex.Entry, timestamp: Int)? {
            guard let data = tree.children.first(where: { $0.name == "data" && $0.attributes["type"] == type }) else { return nil }
            func text(_ element: String) throws -> String {
                guard let value = data.child(element)?.text, !value.isEmpty else {
                    throw FarmError("\(name): <data type=\"\(type)\"> has no <\(element)>")
                }
                return value
            }
            func number(_ element: String) throws -> Int {
                guard let value = Int(try text(element)) else { throw FarmError("\(name): <data type=\"\(type)\"> <\(element)> is not an integer") }
                return value
            }
            guard let location = data.child("location")?.attributes["href"], !location.isEmpty else {
                throw FarmError("\(name): <data type=\"\(type)\"> has no <location href=...>")
            }
            try checkRelative(location, name: name)
            return (RepositoryIndex.Entry(checksum: try text("checksum"), openChecksum: try text("open_checksum"), location: location,
                                          size: try number("size"), openSize: try number("open_size")), try number("timestamp"))
        }
        guard let (primary, timestamp) = try entry("primary") else { throw FarmError("\(name): no <data type=\"primary\">") }
        var index = RepositoryIndex(revision: revision, checksum: primary.checksum, openChecksum: primary.openChecksum,
                                    location: primary.location, timestamp: timestamp, size: primary.size, openSize: primary.openSize)
        index.symbols = try entry("symbols")?.entry
        return index
    }

    public static func parsePrimary(_ data: Data, name: String) throws -> [RepositoryModule] {
        let tree = try XMLTree.parse(data, name: name)
        guard tree.name == "modules" else { throw FarmError("\(name): the root element is <\(tree.name)>, not <modules>") }
        return try tree.children.filter { $0.name == "module" }.enumerated().map { index, element in
            func text(_ child: String) throws -> String {
                guard let value = element.child(child)?.text, !value.isEmpty else {
                    throw FarmError("\(name): module \(index + 1) has no <\(child)>")
                }
                return value
            }
            func href(_ child: String) throws -> String {
                guard let value = element.child(child)?.attributes["href"], !value.isEmpty else {
                    throw FarmError("\(name): module \(index + 1) has no <\(child) href=...>")
                }
                try checkRelative(value, name: name)
                return value
            }
            return RepositoryModule(type: element.attributes["type"] ?? "", name: try text("name"), arch: try text("arch"),
                                    checksum: try text("checksum").lowercased(), version: try text("version"),
                                    packager: try text("packager"), location: try href("location"),
                                    signature: try href("signature"), platform: try text("platform"))
        }
    }

    /// A repository-relative path that stays inside the repository.
    public static func checkRelative(_ path: String, name: String) throws {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, !path.hasPrefix("/"), !path.contains("://"), !parts.contains(".."), !parts.contains("") else {
            throw FarmError("\(name): the href '\(path)' is not a relative path inside the repository")
        }
    }
}

/// A small element tree from Foundation's XMLParser: enough for the two files above.
struct XMLTree {
    var name: String
    var attributes: [String: String]
    var text: String
    var children: [XMLTree]

    func child(_ name: String) -> XMLTree? { children.first { $0.name == name } }

    static func parse(_ data: Data, name: String) throws -> XMLTree {
        final class Builder: NSObject, XMLParserDelegate {
            var stack: [XMLTree] = []
            var root: XMLTree?
            func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                        qualifiedName: String?, attributes: [String: String] = [:]) {
                stack.append(XMLTree(name: elementName, attributes: attributes, text: "", children: []))
            }
            func parser(_ parser: XMLParser, foundCharacters string: String) {
                if !stack.isEmpty { stack[stack.count - 1].text += string }
            }
            func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?) {
                guard var element = stack.popLast() else { return }
                element.text = element.text.trimmingCharacters(in: .whitespacesAndNewlines)
                if stack.isEmpty { root = element } else { stack[stack.count - 1].children.append(element) }
            }
        }
        let parser = XMLParser(data: data)
        let builder = Builder()
        parser.delegate = builder
        parser.shouldResolveExternalEntities = false
        guard parser.parse(), let root = builder.root else {
            let line = parser.lineNumber, column = parser.columnNumber
            throw FarmError("\(name):\(line):\(column): not well-formed XML (\(parser.parserError.map { "\($0)" } ?? "no root element"))")
        }
        return root
    }
}
