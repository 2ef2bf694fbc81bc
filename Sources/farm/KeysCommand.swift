import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Make, rotate, show and export the module-signing key and the repository's OpenPGP key.",
        discussion: """
        The manifest's 'signing:' names where they live (module-key: keys/module, repo-key: keys/repo). \
        Private keys stay there with mode 0600 (in a directory of mode 0700); they never enter the cache, \
        a task key, a log or the repository.
        """,
        subcommands: [Init.self, Rotate.self, Show.self, Export.self])

    struct KeyOptions: ParsableArguments {
        @Option(name: .long, help: "The manifest whose 'signing:' names the keys.")
        var manifest = "manifest.yml"

        func paths() throws -> (module: ModuleKey.Paths, repository: RepositoryKey.Paths) {
            let manifest = try ManifestLoader.load(path: self.manifest)
            guard let paths = Signing.paths(manifest: manifest) else {
                throw ValidationError("\(self.manifest) has no 'signing:'; add 'signing: {module-key: keys/module, repo-key: keys/repo}'")
            }
            return paths
        }
    }

    static func describe(_ key: ModuleKey, _ paths: ModuleKey.Paths) -> String {
        let refresh = max(0, key.refreshDays - key.age())
        return """
        module key \(paths.base): \(key.type.rawValue) \(key.bits), \(key.hash), created \(ISO8601DateFormatter().string(from: key.created))\
         (\(key.age()) days old, refresh in \(refresh) days)
          certificate sha256 \(key.fingerprint)
          subject \(key.subject)
        """
    }

    static func describe(_ key: RepositoryKey, _ paths: RepositoryKey.Paths) -> String {
        "repository key \(paths.base): OpenPGP \(key.fingerprint) \(key.uids.joined(separator: ", "))"
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the keys the manifest names, unless they exist already (then it says so and keeps them).")

        @OptionGroup var options: KeyOptions

        @Option(name: .long, help: "Module key type: rsa, or ecdsa (only kernels configured for ECDSA module keys can check it).")
        var type: ModuleKey.KeyType = .rsa

        @Option(name: .long, help: "RSA bits (2048, 3072, 4096) or ECDSA curve size (256, 384).")
        var bits: Int?

        @Option(name: .long, help: "Digest of the certificate's self-signature, as CONFIG_MODULE_SIG_HASH names it.")
        var hash = "sha256"

        @Option(name: .long, help: "'farm keys rotate' replaces the module key when it is older than this.")
        var refreshDays = 365

        @Option(name: .long, help: "The repository key's user id.")
        var uid = "farm repository signing key <farm@localhost>"

        @Option(name: .long, help: "The repository key's algorithm, as gpg --quick-generate-key takes it.")
        var repoAlgorithm = "rsa3072"

        func run() throws {
            let paths = try options.paths()
            let (moduleKey, repositoryKey) = (try ModuleKey.load(paths.module), try RepositoryKey.load(paths.repository))
            // Both tools before either key: a missing one must not leave half a key set.
            if moduleKey == nil { try ModuleKey.requireTool() }
            if repositoryKey == nil { try GnuPG.requireTool() }
            if let key = moduleKey {
                print("kept the existing " + KeysCommand.describe(key, paths.module))
            } else {
                let key = try ModuleKey.create(at: paths.module, type: type, bits: bits, hash: hash, refreshDays: refreshDays)
                print("made " + KeysCommand.describe(key, paths.module))
            }
            if let key = repositoryKey {
                print("kept the existing " + KeysCommand.describe(key, paths.repository))
            } else {
                let key = try RepositoryKey.create(at: paths.repository, uid: uid, algorithm: repoAlgorithm)
                print("made " + KeysCommand.describe(key, paths.repository))
            }
        }
    }

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace the module key when it is older than its refresh period or the wanted hash differs (the old one is kept under keys/retired/).")

        @OptionGroup var options: KeyOptions

        @Option(name: .long, help: "The wanted hash; a key made with another one is replaced.")
        var hash: String?

        @Option(name: .long, help: "The new key's type (default: the old one's).")
        var type: ModuleKey.KeyType?

        @Option(name: .long, help: "The new key's size (default: the old one's).")
        var bits: Int?

        @Option(name: .long, help: "The new key's refresh period in days (default: the old one's).")
        var refreshDays: Int?

        @Flag(name: .long, help: "Replace the module key now, whatever its age.")
        var force = false

        @Flag(name: .long, help: "Also replace the repository's OpenPGP key (clients must pin the new fingerprint).")
        var repo = false

        func run() throws {
            let paths = try options.paths()
            let rotation = KeyRotation(wantedHash: hash, type: type, bits: bits, refreshDays: refreshDays, force: force, repository: repo)
            let outcome = try rotation.run(module: paths.module, repository: paths.repository)
            let key = outcome.moduleKey
            if let reason = outcome.reason, let retired = outcome.retiredModuleKey {
                print("rotated the module key (\(reason)); the old one is in \(retired)")
                print("made " + KeysCommand.describe(key, paths.module))
                print("the next 'farm build' signs every module with it; export its certificate with 'farm keys export'")
            } else {
                print("the module key is \(key.age()) days old (refresh after \(key.refreshDays)) and made with \(key.hash); nothing to do")
            }
            if let repositoryKey = outcome.repositoryKey, let retired = outcome.retiredRepositoryKey {
                print("rotated the repository key; the old one is in \(retired)")
                print("made " + KeysCommand.describe(repositoryKey, paths.repository))
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Describe the keys (never the private halves).")

        @OptionGroup var options: KeyOptions

        func run() throws {
            let paths = try options.paths()
            guard let module = try ModuleKey.load(paths.module), let repository = try RepositoryKey.load(paths.repository) else {
                throw ValidationError("no keys at \(paths.module.base) and \(paths.repository.base); run 'farm keys init'")
            }
            print(KeysCommand.describe(module, paths.module))
            if let reason = module.rotationReason(wantedHash: nil) { print("  due for rotation: \(reason); run 'farm keys rotate'") }
            print(KeysCommand.describe(repository, paths.repository))
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the public halves: the module certificate as DER (mokutil --import) and PEM (CONFIG_SYSTEM_TRUSTED_KEYS), and the repository key.")

        @OptionGroup var options: KeyOptions

        @Option(name: .shortAndLong, help: "The directory to write module-signing.der, module-signing.pem, REPO_SIGNING_KEY.asc and .json into.")
        var output = "."

        func run() throws {
            let paths = try options.paths()
            guard try ModuleKey.load(paths.module) != nil, let repository = try RepositoryKey.load(paths.repository) else {
                throw ValidationError("no keys at \(paths.module.base) and \(paths.repository.base); run 'farm keys init'")
            }
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            let files: [(String, Data?)] = [
                ("module-signing.der", FileManager.default.contents(atPath: paths.module.der)),
                ("module-signing.pem", FileManager.default.contents(atPath: paths.module.certificate)),
                ("REPO_SIGNING_KEY.asc", FileManager.default.contents(atPath: paths.repository.publicKey)),
                ("REPO_SIGNING_KEY.json", try repository.encoded()),
            ]
            for (name, data) in files {
                guard let data else { throw ValidationError("a public key file for \(name) is missing under \((paths.module.base as NSString).deletingLastPathComponent)") }
                try AtomicFile.write(data, to: output + "/" + name)
                print(output + "/" + name)
            }
            print("enroll the module key with: mokutil --import \(output)/module-signing.der")
        }
    }
}

extension ModuleKey.KeyType: ExpressibleByArgument {}
