import FarmEngine
import Foundation

/// Where a repository is read from: a directory, or an http(s):// or file:// URL.
public struct RepositorySource: Sendable, CustomStringConvertible {
    public let location: String
    let isURL: Bool

    public init(_ location: String) {
        isURL = location.contains("://")
        self.location = location.hasSuffix("/") && location.count > 1 ? String(location.dropLast()) : location
    }

    public var description: String { location }

    /// How errors name a file of the repository: its path or URL.
    public func name(_ path: String) -> String { location + "/" + path }

    /// No file of a repository is larger (modules are a few hundred KiB); a server that sends
    /// more is cut off rather than allowed to fill the disk.
    public static let largestFile: Int64 = 256 << 20

    /// The file's bytes, or nil when the repository does not have it.
    public func read(_ path: String) throws -> Data? {
        try RepositoryFormat.checkRelative(path, name: location)
        guard isURL else { return FileManager.default.contents(atPath: name(path)) }
        var template = Array((NSTemporaryDirectory() + "farm-fetch-XXXXXX").utf8CString)
        let descriptor = mkstemp(&template)
        guard descriptor >= 0 else { throw FileSystemError.io(operation: "mkstemp", path: NSTemporaryDirectory(), errno: errno) }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer {
            close(descriptor)
            unlink(temporary)
        }
        do {
            _ = try HTTPClient.get(name(path), into: descriptor, limit: RepositorySource.largestFile)
        } catch let error as HTTPError where error.status == 404 || error.status == 410 {
            return nil
        } catch let error as HTTPError where name(path).hasPrefix("file://") && error.status == nil && !FileManager.default.fileExists(atPath: String(name(path).dropFirst(7))) {
            return nil
        }
        return FileManager.default.contents(atPath: temporary)
    }

    /// Like `read`, for files the repository must have.
    public func require(_ path: String, because reason: String) throws -> Data {
        guard let data = try read(path) else { throw FarmError("\(name(path)): missing (\(reason))") }
        return data
    }
}

/// Checks a repository as a careful client does: `repomd.xml`'s OpenPGP signature against the
/// pinned key, the manifest's two checksums and sizes, then every module's checksum and
/// signature (and, given the certificate, its Linux module signature).
public struct RepositoryVerifier: Sendable {
    public struct Report: Sendable {
        public var revision: Int
        public var modules: [RepositoryModule]
        /// The symbol tables farm's index lists (none when the repository has no index).
        public var tables: [SymbolTableEntry] = []
        /// One line per file that failed, naming it; empty when the repository checks out.
        public var problems: [String]
    }

    public let source: RepositorySource
    /// The repository key's fingerprint the user trusts.
    public let fingerprint: String
    /// The module-signing certificate, to check the modules' appended signatures too.
    public let certificate: String?

    public init(source: RepositorySource, fingerprint: String, certificate: String? = nil) {
        self.source = source
        self.fingerprint = fingerprint.uppercased().replacingOccurrences(of: " ", with: "")
        self.certificate = certificate
    }

    /// The signed index and manifest; throws, naming the file, when either does not check out.
    /// Without a verifier (`--gpg-no-verify`) only the signatures are left unchecked.
    public func index(using verifier: GnuPG.Verifier?, scratch: String) throws -> (RepositoryIndex, [RepositoryModule]) {
        let repomd = try source.require(RepositoryFormat.repomdPath, because: "every repository has one")
        if let verifier {
            try checkSignature(of: repomd, at: RepositoryFormat.repomdPath, signature: RepositoryFormat.repomdSignaturePath,
                               using: verifier, scratch: scratch)
        }
        let index = try RepositoryFormat.parseRepomd(repomd, name: source.name(RepositoryFormat.repomdPath))
        let gzipped = try source.require(index.location, because: "repomd.xml names it")
        let gzName = source.name(index.location)
        guard SHA256.hash(gzipped).hex == index.checksum.lowercased(), gzipped.count == index.size else {
            throw FarmError("\(gzName): its sha256 or size (\(gzipped.count) bytes) is not what repomd.xml says (\(index.checksum), \(index.size) bytes)")
        }
        let xml: Data
        do { xml = try Archive.decompress(gzipped) } catch { throw FarmError("\(gzName): not a gzip file (\(error))") }
        guard SHA256.hash(xml).hex == index.openChecksum.lowercased(), xml.count == index.openSize else {
            throw FarmError("\(gzName): the decompressed manifest's sha256 or size is not repomd.xml's open_checksum/open_size")
        }
        return (index, try RepositoryFormat.parsePrimary(xml, name: gzName))
    }

    /// Checks `data`, the repository's file at `path`, against its detached signature at
    /// `signaturePath` by the pinned key; the error names the file at fault.
    public func checkSignature(of data: Data, at path: String, signature signaturePath: String, using verifier: GnuPG.Verifier,
                               scratch: String) throws {
        let signature = try source.require(signaturePath, because: "the signature of \((path as NSString).lastPathComponent)")
        let file = scratch + "/" + (path as NSString).lastPathComponent
        try data.write(to: URL(fileURLWithPath: file))
        try signature.write(to: URL(fileURLWithPath: file + ".sig"))
        defer {
            unlink(file)
            unlink(file + ".sig")
        }
        do {
            try verifier.check(signature: file + ".sig", of: file)
        } catch let error as OpenPGPError where error.badSignature {
            // A good signature of other bytes: either file may have been changed.
            throw FarmError("\(source.name(path)): bad signature: its bytes do not match \(source.name(signaturePath)); one of the two was changed")
        } catch {
            // Not a signature, or not the pinned key's: the .sig file is at fault.
            throw FarmError("\(source.name(signaturePath)): \(error)")
        }
    }

    /// A verifier for the pinned key, which the repository's `REPO_SIGNING_KEY.asc` must hold.
    public func withVerifier<T>(_ key: Data, _ body: (GnuPG.Verifier) throws -> T) throws -> T {
        var entered = false
        do {
            return try GnuPG.withVerifier(publicKey: key, fingerprint: fingerprint) { verifier in
                entered = true
                return try body(verifier)
            }
        } catch let error as OpenPGPError where !entered {
            throw FarmError("\(source.name(RepositoryFormat.keyPath)): \(error); if the repository's key was replaced on purpose,"
                                  + " check the new fingerprint with its owner and pin it with --fingerprint")
        }
    }

    /// The symbol tables `repomd.xml`'s `symbols` entry lists, its checksums checked as the
    /// manifest's are; empty when the repository has no tables.
    public func tables(_ index: RepositoryIndex) throws -> [SymbolTableEntry] {
        guard let entry = index.symbols else { return [] }
        let gzipped = try source.require(entry.location, because: "repomd.xml names it")
        let gzName = source.name(entry.location)
        guard SHA256.hash(gzipped).hex == entry.checksum.lowercased(), gzipped.count == entry.size else {
            throw FarmError("\(gzName): its sha256 or size (\(gzipped.count) bytes) is not what repomd.xml says (\(entry.checksum), \(entry.size) bytes)")
        }
        let json: Data
        do { json = try Archive.decompress(gzipped) } catch { throw FarmError("\(gzName): not a gzip file (\(error))") }
        guard SHA256.hash(json).hex == entry.openChecksum.lowercased(), json.count == entry.openSize else {
            throw FarmError("\(gzName): the decompressed index's sha256 or size is not repomd.xml's open_checksum/open_size")
        }
        return try RepositoryFormat.parseSymbols(json, name: gzName)
    }

    /// Checks one symbol table's bytes and OpenPGP signature; returns the table's bytes.
    public func check(_ table: SymbolTableEntry, using verifier: GnuPG.Verifier?, scratch: String) throws -> Data {
        try checkFile(table.location, checksum: table.checksum, signature: table.signature, listedIn: "the symbol-table index", using: verifier, scratch: scratch)
    }

    /// Checks one module's bytes and signatures; returns the module's bytes.
    public func check(_ module: RepositoryModule, using verifier: GnuPG.Verifier?, scratch: String) throws -> Data {
        let bytes = try checkFile(module.location, checksum: module.checksum, signature: module.signature, listedIn: "the manifest",
                                  using: verifier, scratch: scratch)
        if verifier != nil, let certificate {
            do {
                _ = try ModuleVerifier.verify(bytes, name: source.name(module.location), certificate: certificate)
            } catch {
                throw FarmError("\(error)")
            }
        }
        return bytes
    }

    /// A file the signed index lists: its sha256, then its detached OpenPGP signature.
    func checkFile(_ location: String, checksum: String, signature path: String, listedIn index: String,
                   using verifier: GnuPG.Verifier?, scratch: String) throws -> Data {
        let name = source.name(location)
        let bytes = try source.require(location, because: "\(index) lists it")
        guard SHA256.hash(bytes).hex == checksum.lowercased() else {
            throw FarmError("\(name): sha256 \(SHA256.hash(bytes).hex) is not \(index)'s \(checksum)")
        }
        guard let verifier else { return bytes }
        try checkSignature(of: bytes, at: location, signature: path, using: verifier, scratch: scratch)
        return bytes
    }

    /// The whole repository. Throws when the index cannot be trusted; module problems are listed.
    public func verify() throws -> Report {
        let key = try source.require(RepositoryFormat.keyPath, because: "the repository's public key")
        return try withVerifier(key) { verifier in
            try GnuPG.withScratch { scratch in
                let (index, modules) = try self.index(using: verifier, scratch: scratch)
                var problems: [String] = []
                var seen = Set<String>()
                for module in modules where seen.insert(module.location).inserted {
                    do { _ = try check(module, using: verifier, scratch: scratch) } catch { problems.append("\(error)") }
                }
                let tables = try self.tables(index)
                for table in tables where seen.insert(table.location).inserted {
                    do { _ = try check(table, using: verifier, scratch: scratch) } catch { problems.append("\(error)") }
                }
                return Report(revision: index.revision, modules: modules, tables: tables, problems: problems)
            }
        }
    }
}
