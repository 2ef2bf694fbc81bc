import FarmEngine
import Foundation

/// The repository's OpenPGP signing key. For a manifest's `repo-key: keys/repo`:
///
/// - `keys/repo/`: the key's own GNUPGHOME (mode 0700), copied into a throw-away home for each use
/// - `keys/repo.asc`: the ASCII-armored public key, published as `REPO_SIGNING_KEY.asc`
/// - `keys/repo.json`: `{"fingerprint": ..., "uids": [...]}`, published as `REPO_SIGNING_KEY.json`
public struct RepositoryKey: Sendable, Codable, Equatable {
    public var uids: [String]
    /// 40 uppercase hex digits, no spaces: what clients pin.
    public var fingerprint: String

    public struct Paths: Sendable {
        public let base: String
        public init(base: String) { self.base = base }
        public var home: String { base }
        public var publicKey: String { base + ".asc" }
        public var metadata: String { base + ".json" }
    }

    public static func load(_ paths: Paths) throws -> RepositoryKey? {
        guard let data = FileManager.default.contents(atPath: paths.metadata) else { return nil }
        guard let key = try? JSONDecoder().decode(RepositoryKey.self, from: data), key.fingerprint.count == 40 else {
            throw FarmError.badInput("\(paths.metadata): not a repository key description; move it away and run 'farm keys init'")
        }
        return key
    }

    /// The fingerprint a client pins: the one the user gave, else that of their own repository key.
    public static func trusted(given: String?, own paths: Paths?) throws -> String? {
        if let given { return given }
        return try paths.flatMap { try load($0) }?.fingerprint
    }

    public static func create(at paths: Paths, uid: String, algorithm: String = "rsa3072") throws -> RepositoryKey {
        let fingerprint = try GnuPG.generateKey(into: paths.home, uid: uid, algorithm: algorithm)
        let armored = try GnuPG.exportPublicKey(from: paths.home, fingerprint: fingerprint)
        try AtomicFile.write(armored, to: paths.publicKey, mode: 0o644)
        let key = RepositoryKey(uids: [uid], fingerprint: fingerprint)
        try AtomicFile.write(try key.encoded(), to: paths.metadata, mode: 0o644)
        return key
    }

    /// Moves the key home and its public files to `keys/retired/<fingerprint>/`.
    public static func retire(_ paths: Paths, key: RepositoryKey) throws -> String {
        let directory = (paths.base as NSString).deletingLastPathComponent
        let target = directory + "/retired/repo-\(key.fingerprint)"
        try ModuleKey.makePrivateDirectory(directory + "/retired")
        try ModuleKey.makePrivateDirectory(target)
        let name = (paths.base as NSString).lastPathComponent
        for (path, suffix) in [(paths.home, ""), (paths.publicKey, ".asc"), (paths.metadata, ".json")]
        where FileManager.default.fileExists(atPath: path) {
            try AtomicFile.rename(path, to: target + "/" + name + suffix)
        }
        return target
    }

    /// The `REPO_SIGNING_KEY.json` bytes.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self) + Data("\n".utf8)
    }
}
