import FarmEngine
import Foundation

/// `farm keys rotate`: the module key is replaced when it is past its refresh period, made with
/// another hash than the one wanted, or when asked (`force`); the repository's OpenPGP key only
/// when asked. A replaced key is kept under `keys/retired/`. The tools are checked before any key
/// is retired, so a missing one never leaves the project without a key.
public struct KeyRotation: Sendable {
    public var wantedHash: String?
    public var type: ModuleKey.KeyType?
    public var bits: Int?
    public var refreshDays: Int?
    public var force = false
    public var repository = false

    public init(wantedHash: String? = nil, type: ModuleKey.KeyType? = nil, bits: Int? = nil, refreshDays: Int? = nil,
                force: Bool = false, repository: Bool = false) {
        self.wantedHash = wantedHash
        self.type = type
        self.bits = bits
        self.refreshDays = refreshDays
        self.force = force
        self.repository = repository
    }

    /// What a rotation did.
    public struct Outcome: Sendable {
        /// The module key now in use; `reason` and `retired` are set when it is new.
        public var moduleKey: ModuleKey
        public var reason: String?
        public var retiredModuleKey: String?
        /// The new repository key and where the old one went, when it was replaced.
        public var repositoryKey: RepositoryKey?
        public var retiredRepositoryKey: String?
    }

    public func run(module paths: ModuleKey.Paths, repository repositoryPaths: RepositoryKey.Paths) throws -> Outcome {
        guard let old = try ModuleKey.load(paths) else {
            throw FarmError.badInput("no module key at \(paths.metadata) to rotate; run 'farm keys init'")
        }
        try ModuleKey.requireTool()
        if repository { try GnuPG.requireTool() }
        var outcome = Outcome(moduleKey: old)
        if let reason = force ? "--force" : old.rotationReason(wantedHash: wantedHash) {
            outcome.retiredModuleKey = try ModuleKey.retire(paths, key: old)
            outcome.moduleKey = try ModuleKey.create(at: paths, type: type ?? old.type, bits: bits ?? (type == nil ? old.bits : nil),
                                                     hash: wantedHash ?? old.hash, refreshDays: refreshDays ?? old.refreshDays)
            outcome.reason = reason
        }
        if repository, let old = try RepositoryKey.load(repositoryPaths) {
            outcome.retiredRepositoryKey = try RepositoryKey.retire(repositoryPaths, key: old)
            outcome.repositoryKey = try RepositoryKey.create(at: repositoryPaths,
                                                             uid: old.uids.first ?? "farm repository signing key <farm@localhost>")
        }
        return outcome
    }
}
