import FarmEngine
import Foundation

/// A repository's `symbols/banners.json`: which Volatility 3 symbol table (ISF) fits which
/// kernel, by the kernel's `linux_banner`, in the format `vol --remote-isf-url` reads:
/// `{"version": 1, "linux": {"<base64 of the banner with its trailing \n\0>": ["linux/<file>.json.xz"]},
/// "sha256": {"linux/<file>.json.xz": "<hex>"}}`, locations relative to `symbols/`.
public struct SymbolIndex: Sendable, Equatable {
    public static let directory = "symbols"
    public static let path = "symbols/banners.json"
    public static let signaturePath = "symbols/banners.json.sig"

    public struct Entry: Sendable, Equatable {
        /// The banner as the table stores it (`Linux version ...\n\0`).
        public var banner: [UInt8]
        /// Relative to `symbols/`, under `linux/` (where `vol -s DIR` looks for Linux tables).
        public var locations: [String]
    }

    public var entries: [Entry]
    /// Location → sha256 (lowercase hex).
    public var sha256: [String: String]

    /// Parses and checks every location, so nothing it names can lead outside `symbols/`: a
    /// location is a relative path under `linux/` without `..`, or a URL of this repository's
    /// own `symbols/` (taken as the path after it).
    public static func parse(_ data: Data, name: String, repository: RepositorySource) throws -> SymbolIndex {
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw FarmError("\(name): not a JSON object")
        }
        guard let linux = root["linux"] as? [String: Any] else { throw FarmError("\(name): no \"linux\" object of banners") }
        var entries: [Entry] = []
        for (key, value) in linux.sorted(by: { $0.key < $1.key }) {
            guard let banner = Data(base64Encoded: key) else { throw FarmError("\(name): the banner key '\(key.prefix(40))' is not base64") }
            guard let raw = value as? [String] else { throw FarmError("\(name): the banner '\(key.prefix(40))' does not map to a list of locations") }
            entries.append(Entry(banner: Array(banner), locations: try raw.map { try location($0, name: name, repository: repository) }))
        }
        var sha256: [String: String] = [:]
        for (key, value) in (root["sha256"] as? [String: Any]) ?? [:] {
            guard let hex = value as? String, hex.count == 64, hex.allSatisfy(\.isHexDigit) else {
                throw FarmError("\(name): the sha256 of '\(key)' is not 64 hex digits")
            }
            sha256[try location(key, name: name, repository: repository)] = hex.lowercased()
        }
        return SymbolIndex(entries: entries, sha256: sha256)
    }

    static func location(_ raw: String, name: String, repository: RepositorySource) throws -> String {
        var path = raw
        if raw.contains("://") {
            let own = repository.name(directory) + "/"
            guard raw.hasPrefix(own) else {
                throw FarmError("\(name): the location '\(raw)' is a URL outside this repository's \(directory)/; farm fetches tables"
                                   + " only from the repository whose signature it checked")
            }
            path = String(raw.dropFirst(own.count))
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.hasPrefix("/"), !path.contains("://"), !parts.contains(".."), !parts.contains(""), !parts.contains("."),
              parts.count >= 2, parts[0] == "linux", !path.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw FarmError("\(name): the location '\(raw)' is not a relative path under \(directory)/linux/ (no '..', not absolute);"
                               + " refused, nothing written")
        }
        return path
    }

    /// The locations of the tables for the kernel whose `/proc/version` is `procVersion`.
    public func tables(procVersion: String) -> [String] {
        let running = Self.trimmed(Array(procVersion.utf8))
        return entries.filter { Self.trimmed($0.banner) == running }.flatMap(\.locations)
    }

    /// `/proc/version` is `linux_banner` without its NUL; volatility3 compares banners with
    /// trailing newlines and NULs stripped, and so does farm.
    static func trimmed(_ bytes: [UInt8]) -> ArraySlice<UInt8> {
        var slice = bytes[...]
        while let last = slice.last, last == 0x0A || last == 0 { slice = slice.dropLast() }
        return slice
    }
}
