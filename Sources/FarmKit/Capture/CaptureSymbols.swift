import FarmEngine
import Foundation

/// The Volatility 3 symbol table written beside an image.
public struct CaptureSymbols: Sendable, Codable, Equatable {
    /// In the repository, relative to `symbols/`.
    public var location: String
    /// `<output>/symbols/<location>`.
    public var file: String
    public var sha256: String
    /// The `vol` command that analyses the image with it.
    public var command: String
}

/// The sidecar's `symbols`: the table's record, or `null` (with `symbolsMissing` saying why),
/// written out rather than left out, so a reader sees that farm looked.
public enum SymbolTableResult: Sendable, Codable, Equatable {
    case written(CaptureSymbols)
    case none

    public var symbols: CaptureSymbols? {
        if case let .written(symbols) = self { return symbols }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = container.decodeNil() ? .none : .written(try container.decode(CaptureSymbols.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .written(symbols): try container.encode(symbols)
        case .none: try container.encodeNil()
        }
    }
}

/// What looking for a table gave: a table, a plain absence (the image is still good), or a
/// refusal (the repository's symbols did not check out).
public enum SymbolTableOutcome: Sendable, Equatable {
    case written(CaptureSymbols)
    case missing(String)
    case refused(String)
}

extension Capture {
    /// The table for the kernel whose `/proc/version` is `procVersion`, from the repository's
    /// `symbols/banners.json` (its signature checked as `repomd.xml`'s, unless `--gpg-no-verify`;
    /// the table's sha256 always), written to `<output>/symbols/<location>`.
    public func fetchSymbols(procVersion: String, image: String) -> SymbolTableOutcome {
        do {
            guard let indexBytes = try repository.read(SymbolIndex.path) else {
                return .missing("\(repository.name(SymbolIndex.path)) is absent: the repository has no symbol tables")
            }
            if let fingerprint {
                let checker = RepositoryVerifier(source: repository, fingerprint: fingerprint)
                let key = try repository.require(RepositoryFormat.keyPath, because: "the repository's public key")
                try checker.withVerifier(key) { verifier in
                    try GnuPG.withScratch { scratch in
                        try checker.checkSignature(of: indexBytes, at: SymbolIndex.path, signature: SymbolIndex.signaturePath,
                                                   using: verifier, scratch: scratch)
                    }
                }
            }
            let indexName = repository.name(SymbolIndex.path)
            let index = try SymbolIndex.parse(indexBytes, name: indexName, repository: repository)
            guard let location = index.tables(procVersion: procVersion).first else {
                return .missing("\(indexName) lists no table for this kernel's banner '\(procVersion.trimmingCharacters(in: .whitespacesAndNewlines))'")
            }
            guard let expected = index.sha256[location] else { throw FarmError("\(indexName): no sha256 for '\(location)'") }
            let path = SymbolIndex.directory + "/" + location
            let table = try repository.require(path, because: "\(indexName) names it")
            guard SHA256.hash(table).hex == expected else {
                throw FarmError("\(repository.name(path)): sha256 \(SHA256.hash(table).hex) is not \(indexName)'s \(expected)")
            }
            let symbols = output + "/" + SymbolIndex.directory
            let file = symbols + "/" + location
            try AtomicFile.makeDirectory((file as NSString).deletingLastPathComponent)
            try AtomicFile.write(table, to: file, mode: 0o644)
            let command = ["vol", "-s", symbols, "-f", image, "linux.pslist"].map(\.shellWord).joined(separator: " ")
            return .written(CaptureSymbols(location: location, file: file, sha256: expected, command: command))
        } catch {
            return .refused("\(error)")
        }
    }
}

extension String {
    /// As a shell word, quoted only when it needs to be, so the usual line reads as typed.
    var shellWord: String {
        let plain = !isEmpty && unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "_-./:@%+=,".unicodeScalars.contains($0)
        }
        return plain ? self : shellQuoted
    }
}
