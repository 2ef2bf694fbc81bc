import FarmEngine
import Foundation

/// The X.509 module-signing key pair under `keys/`, made as the kernel's `certs/Makefile` makes
/// `signing_key.pem`: `openssl req -x509` with basicConstraints CA:FALSE, keyUsage
/// digitalSignature and a subject key id. For a manifest's `module-key: keys/module`:
///
/// - `keys/module.key`: the private key (PEM, mode 0600; nothing else of farm reads it but the sign task)
/// - `keys/module.crt`: the certificate (PEM, for `CONFIG_SYSTEM_TRUSTED_KEYS`)
/// - `keys/module.der`: the certificate (DER, for `mokutil --import`)
/// - `keys/module.json`: what farm knows about it (type, hash, created, refresh period, fingerprint)
public struct ModuleKey: Sendable, Codable, Equatable {
    public enum KeyType: String, Sendable, Codable, CaseIterable {
        case rsa, ecdsa
    }

    public var type: KeyType
    /// RSA modulus bits, or the ECDSA curve's size (384 for secp384r1).
    public var bits: Int
    /// The digest of the certificate's self-signature (`-sha256` in certs/Makefile).
    public var hash: String
    public var created: Date
    /// `farm keys rotate` makes a new key when this one is older.
    public var refreshDays: Int
    /// SHA-256 of the DER certificate, lowercase hex: the sign tasks' key uses it, never the key.
    public var fingerprint: String
    public var subject: String

    public static let hashes = ["sha256", "sha384", "sha512"]

    /// The files of the key whose prefix is `base` (`keys/module`).
    public struct Paths: Sendable {
        public let base: String
        public init(base: String) { self.base = base }
        public var privateKey: String { base + ".key" }
        public var certificate: String { base + ".crt" }
        public var der: String { base + ".der" }
        public var metadata: String { base + ".json" }
        public var directory: String { (base as NSString).deletingLastPathComponent }
    }

    /// Reads the key's metadata (not the private key). nil when there is no key.
    public static func load(_ paths: Paths) throws -> ModuleKey? {
        guard let data = FileManager.default.contents(atPath: paths.metadata) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(ModuleKey.self, from: data)
        } catch {
            throw FarmError.badInput("\(paths.metadata): not farm's key description (\(error)); move it away and run 'farm keys init'")
        }
    }

    public func age(now: Date = Date()) -> Int { Int(now.timeIntervalSince(created) / 86_400) }

    /// Why the key should be replaced now, or nil while it is fresh and has the wanted hash.
    public func rotationReason(wantedHash: String?, now: Date = Date()) -> String? {
        if let wantedHash, wantedHash != hash { return "its hash is \(hash), \(wantedHash) is wanted" }
        if age(now: now) >= refreshDays { return "it is \(age(now: now)) days old, the refresh period is \(refreshDays) days" }
        return nil
    }

    /// Makes a key pair with the openssl tool and writes its files atomically (the private key
    /// with mode 0600, in a directory of mode 0700).
    public static func create(at paths: Paths, type: KeyType, bits: Int? = nil, hash: String, refreshDays: Int,
                              subject: String = "farm module signing key") throws -> ModuleKey {
        guard hashes.contains(hash) else { throw FarmError.badInput("unknown hash '\(hash)'; expected one of \(hashes.joined(separator: ", "))") }
        let openssl = try requireTool()
        try makePrivateDirectory(paths.directory)
        let staging = paths.directory + "/.new-key-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        try makePrivateDirectory(staging)
        defer { try? FileManager.default.removeItem(atPath: staging) }

        // The kernel's certs/default_x509.genkey, with farm's subject.
        let config = """
        [ req ]
        distinguished_name = req_distinguished_name
        prompt = no
        string_mask = utf8only
        x509_extensions = myexts

        [ req_distinguished_name ]
        O = farm
        CN = \(subject)

        [ myexts ]
        basicConstraints=critical,CA:FALSE
        keyUsage=digitalSignature
        subjectKeyIdentifier=hash
        authorityKeyIdentifier=keyid

        """
        try AtomicFile.write(Data(config.utf8), to: staging + "/x509.genkey", mode: 0o600, sync: false)
        let size = bits ?? (type == .rsa ? 4096 : 384)
        var arguments = ["req", "-new", "-nodes", "-utf8", "-" + hash, "-days", "36500", "-batch", "-x509",
                         "-config", staging + "/x509.genkey", "-outform", "PEM", "-out", staging + "/key.crt",
                         "-keyout", staging + "/key.pem"]
        switch type {
        case .rsa:
            guard [2048, 3072, 4096].contains(size) else { throw FarmError.badInput("an RSA key has 2048, 3072 or 4096 bits, not \(size)") }
            arguments += ["-newkey", "rsa:\(size)"]
        case .ecdsa:
            guard size == 256 || size == 384 else { throw FarmError.badInput("an ECDSA key uses P-256 or P-384 (256 or 384), not \(size)") }
            arguments += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + (size == 256 ? "prime256v1" : "secp384r1")]
        }
        let made = try Executable.run(openssl, arguments)
        guard made.status == 0 else {
            throw FarmError("openssl req could not make the module-signing key: \(made.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let der = try Executable.run(openssl, ["x509", "-in", staging + "/key.crt", "-outform", "DER", "-out", staging + "/key.der"])
        guard der.status == 0 else { throw FarmError("openssl x509 could not write the DER certificate: \(der.stderr)") }
        chmod(staging + "/key.pem", 0o600)
        guard let derBytes = FileManager.default.contents(atPath: staging + "/key.der") else {
            throw FarmError("openssl wrote no DER certificate")
        }
        let key = ModuleKey(type: type, bits: size, hash: hash, created: Date(), refreshDays: refreshDays,
                            fingerprint: SHA256.hash(derBytes).hex, subject: "O = farm, CN = \(subject)")
        // The certificate and the private key first, the description (what marks a key present) last.
        try AtomicFile.rename(staging + "/key.pem", to: paths.privateKey)
        try AtomicFile.rename(staging + "/key.crt", to: paths.certificate)
        chmod(paths.certificate, 0o644)
        try AtomicFile.rename(staging + "/key.der", to: paths.der)
        chmod(paths.der, 0o644)
        try AtomicFile.write(try key.encoded(), to: paths.metadata, mode: 0o644)
        return key
    }

    /// The openssl tool, checked before anything is made with it.
    @discardableResult
    public static func requireTool() throws -> String {
        guard let openssl = Executable.find("openssl") else {
            throw FarmError.toolMissing(tool: "openssl", package: "openssl", purpose: "making a module-signing key")
        }
        return openssl
    }

    /// Moves the key's files to `keys/retired/<created>-<fingerprint>/`, so nothing is lost.
    public static func retire(_ paths: Paths, key: ModuleKey) throws -> String {
        let stamp = ISO8601DateFormatter().string(from: key.created).replacingOccurrences(of: ":", with: "")
        let target = paths.directory + "/retired/\(stamp)-\(key.fingerprint.prefix(16))"
        try makePrivateDirectory(paths.directory + "/retired")
        try makePrivateDirectory(target)
        let name = (paths.base as NSString).lastPathComponent
        for path in [paths.privateKey, paths.certificate, paths.der, paths.metadata] where FileManager.default.fileExists(atPath: path) {
            try AtomicFile.rename(path, to: target + "/" + name + "." + (path as NSString).pathExtension)
        }
        return target
    }

    func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    static func makePrivateDirectory(_ path: String) throws {
        try AtomicFile.makeDirectory(path)
        chmod(path, 0o700)
    }
}
