import FarmEngine
import Foundation

/// Task kind `sign`: one built module, signed for its kernel. Inputs: `module` (the compile
/// task's `module`) and `bundle` (the kernel's headers, whose `.config` names the hash and key
/// type). Outputs: `module` (with the Linux module signature appended), `signature` (the
/// repository key's OpenPGP detached signature of that file) and, when the recipe says
/// `compress:`, `compressed` (the signed module, compressed after signing).
///
/// The task's key holds the certificate's and the repository key's fingerprints, never a private key.
public struct SignAction: TaskAction {
    public let recipe: Recipe
    public let release: String
    public let moduleKey: ModuleKey
    public let moduleKeyPaths: ModuleKey.Paths
    public let repositoryKey: RepositoryKey
    public let repositoryKeyPaths: RepositoryKey.Paths

    public init(recipe: Recipe, release: String, moduleKey: ModuleKey, moduleKeyPaths: ModuleKey.Paths,
                repositoryKey: RepositoryKey, repositoryKeyPaths: RepositoryKey.Paths) {
        self.recipe = recipe
        self.release = release
        self.moduleKey = moduleKey
        self.moduleKeyPaths = moduleKeyPaths
        self.repositoryKey = repositoryKey
        self.repositoryKeyPaths = repositoryKeyPaths
    }

    public var kind: String { "sign" }

    public var sharedRemotely: Bool { true }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] {
        [("output", recipe.outputName(release: release)), ("certificate", moduleKey.fingerprint),
         ("key-type", moduleKey.type.rawValue), ("openpgp-key", repositoryKey.fingerprint),
         ("compress", recipe.compress?.rawValue ?? "none")]
    }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run { try sign(context) }
    }

    private func sign(_ context: TaskContext) throws -> [String: Digest] {
        let trees = UnpackedTrees(objects: context.objects)
        let bundleTree = try trees.tree(of: try context.input("bundle", "bundle"), log: context.log)
        let config = try BundleTree(root: bundleTree, release: release).config()
        let hash = try SignAction.hash(config: config, release: release, log: context.log)
        try SignAction.checkKeyType(moduleKey.type, config: config, release: release, keyPath: moduleKeyPaths.base)

        let name = recipe.outputName(release: release)
        let module = try context.readInput("module", "module")
        let signed = try ModuleSigner.sign(module: module, key: moduleKeyPaths.privateKey, certificate: moduleKeyPaths.certificate, hash: hash)
        // What the kernel will do with it, before anything is shipped.
        let report = try ModuleVerifier.verify(signed, name: name, certificate: moduleKeyPaths.certificate)
        context.log.append("module signature: \(moduleKey.type.rawValue) key \(moduleKey.fingerprint.prefix(16)), \(report.hash),"
                           + " \(report.signatureLength) bytes\n")
        let file = context.workDirectory + "/" + name
        try AtomicFile.write(signed, to: file, sync: false)

        var outputs: [String: Digest] = [:]
        if let compression = recipe.compress {
            outputs["compressed"] = try compress(file, with: compression, context: context)
        }
        try GnuPG.detachSign(file: file, output: file + ".sig", keyHome: repositoryKeyPaths.home, fingerprint: repositoryKey.fingerprint)
        context.log.append("OpenPGP signature: key \(repositoryKey.fingerprint)\n")
        outputs["signature"] = try context.store(file: file + ".sig")
        outputs["module"] = try context.store(file: file)
        return outputs
    }

    /// `CONFIG_MODULE_SIG_HASH` from the kernel's `.config`, as `scripts/sign-file` is called by kbuild.
    public static func hash(config: KernelConfig?, release: String, log: TaskLog) throws -> String {
        guard let hash = config?.values["CONFIG_MODULE_SIG_HASH"], !hash.isEmpty else {
            log.append("the .config of \(release) sets no CONFIG_MODULE_SIG_HASH (no module signing); signing with sha256 anyway\n")
            return "sha256"
        }
        guard ModuleSigner.knownHashes.contains(hash) else {
            throw FarmError("kernel \(release) wants module signatures made with \(hash) (CONFIG_MODULE_SIG_HASH), which farm cannot make;"
                               + " it makes \(ModuleSigner.knownHashes.joined(separator: ", "))")
        }
        log.append("hash: \(hash) (CONFIG_MODULE_SIG_HASH)\n")
        return hash
    }

    /// An ECDSA signature is only checkable by a kernel configured for ECDSA module keys.
    public static func checkKeyType(_ type: ModuleKey.KeyType, config: KernelConfig?, release: String, keyPath: String) throws {
        guard type == .ecdsa else { return }
        guard config?.values["CONFIG_MODULE_SIG_KEY_TYPE_ECDSA"] == "y" else {
            throw FarmError("the module key \(keyPath) is ECDSA, but kernel \(release)'s .config does not set"
                               + " CONFIG_MODULE_SIG_KEY_TYPE_ECDSA=y, so the kernel could not check the signature;"
                               + " make an RSA key with 'farm keys rotate --force --type rsa'")
        }
    }

    /// Compresses the signed module the way `make modules_install` does (signature first, then compression).
    private func compress(_ file: String, with compression: Recipe.Compression, context: TaskContext) throws -> Digest {
        let (tool, arguments, package): (String, [String], String) = switch compression {
        case .xz: ("xz", ["--check=crc32", "--lzma2=dict=1MiB", "-T1", "-k", "-f", file], "xz-utils")
        case .zstd: ("zstd", ["-q", "-f", "-k", "-T1", file], "zstd")
        case .gzip: ("gzip", ["-n", "-k", "-f", file], "gzip")
        }
        guard let path = Executable.find(tool) else {
            throw FarmError.toolMissing(tool: tool, package: package, purpose: "compressing \(recipe.name) modules (compress: \(compression.rawValue))")
        }
        let result = try Executable.run(path, arguments)
        guard result.status == 0 else {
            throw FarmError("\(tool) failed on \((file as NSString).lastPathComponent): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        context.log.append("compressed: \(tool) \(arguments.dropLast().joined(separator: " "))\n")
        return try context.store(file: file + compression.suffix)
    }
}

extension SignAction {
    /// The private halves are read only when a module is signed: check them before anything runs.
    public var requirements: [Requirement] {
        let (privateKey, home) = (moduleKeyPaths.privateKey, repositoryKeyPaths.home)
        var requirements: [Requirement] = [
            .tool("gpg", package: "gnupg", purpose: "signing modules for the repository"),
            Requirement(id: "file:" + privateKey) {
                access(privateKey, R_OK) == 0 ? nil
                    : FarmError.environment("the module-signing key \(privateKey) is missing or unreadable; 'farm keys init' makes the keys"
                                       + " (or restore it from your backup)")
            },
            Requirement(id: "file:" + home) {
                FileManager.default.fileExists(atPath: home + "/private-keys-v1.d") ? nil
                    : FarmError.environment("the repository key's home \(home) holds no private key; 'farm keys init' makes the keys"
                                       + " (or restore it from your backup)")
            },
        ]
        if let compression = recipe.compress {
            let (tool, package) = switch compression {
            case .xz: ("xz", "xz-utils")
            case .zstd: ("zstd", "zstd")
            case .gzip: ("gzip", "gzip")
            }
            requirements.append(.tool(tool, package: package, purpose: "compressing \(recipe.name) modules (compress: \(compression.rawValue))"))
        }
        return requirements
    }
}
