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

/// `repodata/repomd.xml`'s one `data type="primary"` entry.
public struct RepositoryIndex: Sendable, Hashable {
    public var revision: Int
    public var checksum: String
    public var openChecksum: String
    public var location: String
    public var timestamp: Int
    public var size: Int
    public var openSize: Int

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

    static func escape(_ text: String) -> String {
        var result = ""
        for character in text {
            switch character {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&apos;"
            default: result.append(character)
            }
        }
        return result
    }

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
        let xml = """
        <?xml version="1.0" encoding="UTF-8"?>
        <metadata>
          <revision>\(index.revision)</revision>
          <data type="primary">
            <checksum>\(index.checksum)</checksum>
            <open_checksum>\(index.openChecksum)</open_checksum>
            <location href="\(escape(index.location))"/>
            <timestamp>\(index.timestamp)</timestamp>
            <size>\(index.size)</size>
            <open_size>\(index.openSize)</open_size>
          </data>
        </metadata>

        """
        return Data(xml.utf8)
    }

    // MARK: reading

    /// Every href read is checked to stay inside the repository.
    public static func parseRepomd(_ data: Data, name: String) throws -> RepositoryIndex {
        let tree = try XMLTree.parse(data, name: name)
        guard tree.name == "metadata" else { throw FarmError("\(name): the root element is <\(tree.name)>, not <metadata>") }
        guard let revision = tree.child("revision").flatMap({ Int($0.text) }) else {
            throw FarmError("\(name): <revision> is missing or not an integer")
        }
        guard let data = tree.children.first(where: { $0.name == "data" && $0.attributes["type"] == "primary" }) else {
            throw FarmError("\(name): no <data type=\"primary\">")
        }
        func text(_ element: String) throws -> String {
            guard let value = data.child(element)?.text, !value.isEmpty else {
                throw FarmError("\(name): <data type=\"primary\"> has no <\(element)>")
            }
            return value
        }
        func number(_ element: String) throws -> Int {
            guard let value = Int(try text(element)) else { throw FarmError("\(name): <\(element)> is not an integer") }
            return value
        }
        guard let location = data.child("location")?.attributes["href"], !location.isEmpty else {
            throw FarmError("\(name): <data type=\"primary\"> has no <location href=...>")
        }
        try checkRelative(location, name: name)
        return RepositoryIndex(revision: revision, checksum: try text("checksum"), openChecksum: try text("open_checksum"),
                               location: location, timestamp: try number("timestamp"), size: try number("size"),
                               openSize: try number("open_size"))
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
