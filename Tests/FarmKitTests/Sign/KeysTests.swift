import FarmEngine
import FarmKit
import Foundation
import Testing

/// `farm keys` on a project whose manifest names its keys, run as a user runs it.
struct KeysTests {
    static let manifest = "farm: 1\nsigning:\n  module-key: keys/module\n  repo-key: keys/repo\n"

    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    func keys(_ scratch: Scratch, _ arguments: [String]) throws -> ProcessResult {
        try runProcess(Products.farm, ["keys"] + arguments + ["--manifest", scratch.file("manifest.yml")])
    }

    @Test func initMakesAKernelStyleCertificateAndAnOpenPGPKeyWithPrivateFilesLockedDown() throws {
        let scratch = try Scratch()
        try scratch.write("manifest.yml", KeysTests.manifest)
        let made = try keys(scratch, ["init"])
        #expect(made.status == 0, "\(made.stdout)\(made.stderr)")

        // The private halves: owner only.
        #expect(try mode(scratch.file("keys")) == 0o700)
        #expect(try mode(scratch.file("keys/module.key")) == 0o600)
        #expect(try mode(scratch.file("keys/repo")) == 0o700)
        #expect(try scratch.read("keys/module.key").contains("PRIVATE KEY"))
        #expect(!made.stdout.contains("PRIVATE"))

        // The certificate as the kernel's certs/Makefile makes it.
        let text = try runProcess("/usr/bin/openssl", ["x509", "-in", scratch.file("keys/module.crt"), "-noout", "-text"]).stdout
        #expect(text.contains("CA:FALSE"), "\(text)")
        #expect(text.contains("Digital Signature"))
        #expect(text.contains("Subject Key Identifier"))
        #expect(text.contains("sha256WithRSAEncryption"))
        #expect(text.contains("Public-Key: (4096 bit)"))
        // The DER export is the same certificate, and its sha256 is the fingerprint farm keys on.
        let der = try runProcess("/usr/bin/openssl", ["x509", "-inform", "DER", "-in", scratch.file("keys/module.der"),
                                                      "-noout", "-fingerprint", "-sha256"]).stdout
        let description = try #require(try JSONSerialization.jsonObject(with: Data(try scratch.read("keys/module.json").utf8)) as? [String: Any])
        let fingerprint = try #require(description["fingerprint"] as? String)
        #expect(der.replacingOccurrences(of: ":", with: "").lowercased().contains(fingerprint))

        // The repository key: REPO_SIGNING_KEY.json's shape, and gpg sees that key in the .asc.
        let repo = try #require(try JSONSerialization.jsonObject(with: Data(try scratch.read("keys/repo.json").utf8)) as? [String: Any])
        let pgp = try #require(repo["fingerprint"] as? String)
        #expect(pgp.count == 40 && pgp == pgp.uppercased() && pgp.allSatisfy(\.isHexDigit))
        #expect((repo["uids"] as? [String])?.first?.contains("<") == true)
        let shown = try GnuPG.inspect(publicKey: Data(try scratch.read("keys/repo.asc").utf8))
        #expect(shown.map(\.fingerprint) == [pgp])

        // Again: the keys are kept, not replaced.
        let again = try keys(scratch, ["init"])
        #expect(again.status == 0 && again.stdout.contains("kept the existing module key"), "\(again.stdout)")
        #expect(try scratch.read("keys/module.json").contains(fingerprint))

        // show names both fingerprints; export writes the public halves only.
        let show = try keys(scratch, ["show"])
        #expect(show.stdout.contains(fingerprint) && show.stdout.contains(pgp), "\(show.stdout)")
        let export = try keys(scratch, ["export", "-o", scratch.file("public")])
        #expect(export.status == 0, "\(export.stderr)")
        #expect(FileManager.default.contents(atPath: scratch.file("public/module-signing.der"))
                == FileManager.default.contents(atPath: scratch.file("keys/module.der")))
        #expect(try scratch.read("public/module-signing.pem").contains("BEGIN CERTIFICATE"))
        #expect(try scratch.read("public/REPO_SIGNING_KEY.asc").contains("BEGIN PGP PUBLIC KEY BLOCK"))
        let exported = try FileManager.default.contentsOfDirectory(atPath: scratch.file("public"))
        for file in exported {
            let bytes = try #require(FileManager.default.contents(atPath: scratch.file("public/" + file)))
            #expect(!String(decoding: bytes, as: UTF8.self).contains("PRIVATE"), "\(file)")
        }
    }

    @Test func rotateReplacesTheKeyOnlyWhenItIsDueAndKeepsTheOldOne() throws {
        let scratch = try Scratch()
        try scratch.write("manifest.yml", KeysTests.manifest)
        #expect(try keys(scratch, ["init", "--bits", "2048"]).status == 0)
        let first = try #require(try ModuleKey.load(.init(base: scratch.file("keys/module"))))

        let fresh = try keys(scratch, ["rotate"])
        #expect(fresh.status == 0 && fresh.stdout.contains("nothing to do"), "\(fresh.stdout)")
        #expect(try ModuleKey.load(.init(base: scratch.file("keys/module")))?.fingerprint == first.fingerprint)

        // Another wanted hash: a new key, made with it; the old one kept under keys/retired.
        let rehash = try keys(scratch, ["rotate", "--hash", "sha512"])
        #expect(rehash.status == 0 && rehash.stdout.contains("its hash is sha256, sha512 is wanted"), "\(rehash.stdout)\(rehash.stderr)")
        let second = try #require(try ModuleKey.load(.init(base: scratch.file("keys/module"))))
        #expect(second.fingerprint != first.fingerprint && second.hash == "sha512" && second.bits == 2048)
        let text = try runProcess("/usr/bin/openssl", ["x509", "-in", scratch.file("keys/module.crt"), "-noout", "-text"]).stdout
        #expect(text.contains("sha512WithRSAEncryption"))
        let retired = try FileManager.default.contentsOfDirectory(atPath: scratch.file("keys/retired"))
        #expect(retired.count == 1)
        let old = scratch.file("keys/retired/\(retired[0])/module.key")
        #expect(try mode(old) == 0o600)
        #expect(try scratch.read("keys/retired/\(retired[0])/module.json").contains(first.fingerprint))

        // Older than its refresh period: rotated.
        var aged = second
        aged.created = Date().addingTimeInterval(-400 * 86_400)
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(aged).write(to: URL(fileURLWithPath: scratch.file("keys/module.json")))
        let due = try keys(scratch, ["rotate"])
        #expect(due.stdout.contains("400 days old, the refresh period is 365 days"), "\(due.stdout)")
        #expect(try ModuleKey.load(.init(base: scratch.file("keys/module")))?.fingerprint != second.fingerprint)
    }

    @Test func anECDSAKeySignsOnlyForKernelsConfiguredForECDSA() throws {
        let scratch = try Scratch()
        let paths = ModuleKey.Paths(base: scratch.file("keys/module"))
        let key = try ModuleKey.create(at: paths, type: .ecdsa, hash: "sha384", refreshDays: 30)
        #expect(key.bits == 384)
        let rsaKernel = KernelConfig(values: ["CONFIG_MODULE_SIG_KEY_TYPE_RSA": "y", "CONFIG_MODULE_SIG_HASH": "sha256"])
        #expect(throws: FarmError.self) {
            try SignAction.checkKeyType(.ecdsa, config: rsaKernel, release: "6.1.0-56-amd64", keyPath: paths.base)
        }
        let ecdsaKernel = KernelConfig(values: ["CONFIG_MODULE_SIG_KEY_TYPE_ECDSA": "y", "CONFIG_MODULE_SIG_HASH": "sha384"])
        try SignAction.checkKeyType(.ecdsa, config: ecdsaKernel, release: "6.1.0-56-amd64", keyPath: paths.base)
        try SignAction.checkKeyType(.rsa, config: rsaKernel, release: "6.1.0-56-amd64", keyPath: paths.base)
        // The hash follows the kernel's .config.
        #expect(try SignAction.hash(config: ecdsaKernel, release: "x", log: TaskLog()) == "sha384")
        #expect(throws: FarmError.self) {
            try SignAction.hash(config: KernelConfig(values: ["CONFIG_MODULE_SIG_HASH": "md4"]), release: "x", log: TaskLog())
        }

        // An ECDSA signature checks out as the kernel checks it.
        try scratch.write("m.c", "__attribute__((section(\".modinfo\"), used)) static const char n[] = \"name=m\";\nint x;\n")
        #expect(try runProcess("/usr/bin/gcc", ["-c", scratch.file("m.c"), "-o", scratch.file("m.ko")]).status == 0)
        let module = try #require(FileManager.default.contents(atPath: scratch.file("m.ko")))
        let signed = try ModuleSigner.sign(module: module, key: paths.privateKey, certificate: paths.certificate, hash: "sha384")
        #expect(try ModuleVerifier.verify(signed, name: "m.ko", certificate: paths.certificate).hash == "sha384")
    }

    @Test func openPGPSignaturesCheckOutAgainstThePinnedKeyOnly() throws {
        let scratch = try Scratch()
        let ours = try RepositoryKey.create(at: .init(base: scratch.file("keys/repo")), uid: "ours <ours@farm.test>")
        let theirs = try RepositoryKey.create(at: .init(base: scratch.file("other/repo")), uid: "theirs <theirs@farm.test>")
        let file = try scratch.write("repomd.xml", "<metadata/>\n")
        try GnuPG.detachSign(file: file, output: file + ".sig", keyHome: scratch.file("keys/repo"), fingerprint: ours.fingerprint)
        let ourKey = try #require(FileManager.default.contents(atPath: scratch.file("keys/repo.asc")))
        let theirKey = try #require(FileManager.default.contents(atPath: scratch.file("other/repo.asc")))

        try GnuPG.verify(signature: file + ".sig", of: file, publicKey: ourKey, fingerprint: ours.fingerprint)
        // Their key, pinned: our signature is not theirs.
        #expect(throws: OpenPGPError.self) {
            try GnuPG.verify(signature: file + ".sig", of: file, publicKey: theirKey, fingerprint: theirs.fingerprint)
        }
        // Our key file, but another fingerprint pinned: refused before any signature is looked at.
        let pinnedElsewhere = #expect(throws: OpenPGPError.self) {
            try GnuPG.verify(signature: file + ".sig", of: file, publicKey: ourKey, fingerprint: theirs.fingerprint)
        }
        // The message names the key found and the one pinned.
        #expect(pinnedElsewhere?.message.contains(ours.fingerprint) == true && pinnedElsewhere?.message.contains(theirs.fingerprint) == true,
                "\(pinnedElsewhere?.message ?? "")")
        // A changed file.
        try scratch.write("repomd.xml", "<metadata>changed</metadata>\n")
        let bad = #expect(throws: OpenPGPError.self) {
            try GnuPG.verify(signature: file + ".sig", of: file, publicKey: ourKey, fingerprint: ours.fingerprint)
        }
        #expect(bad?.message.contains("bad signature") == true)
    }

    @Test func keysInitWithoutGpgExitsThreeNamingThePackageAndMakesNothing() throws {
        let scratch = try Scratch()
        try scratch.write("manifest.yml", KeysTests.manifest)
        // A PATH with openssl but no gpg.
        try FileManager.default.createDirectory(atPath: scratch.file("bin"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: scratch.file("bin/openssl"), withDestinationPath: "/usr/bin/openssl")
        let made = try runProcess(Products.farm, ["keys", "init", "--manifest", scratch.file("manifest.yml")],
                                  environment: ["PATH": scratch.file("bin")])
        #expect(made.status == 3, "\(made.stdout)\(made.stderr)")
        #expect(made.stderr.contains("gpg") && made.stderr.contains("apt-get install gnupg"), "\(made.stderr)")
        let left = (try? FileManager.default.contentsOfDirectory(atPath: scratch.file("keys"))) ?? []
        #expect(left.isEmpty, "half a key set: \(left)")
        // With gpg back, the whole set is made and shown.
        #expect(try keys(scratch, ["init"]).status == 0)
        #expect(try keys(scratch, ["show"]).status == 0)
        // Rotating the repository key without gpg retires nothing.
        let rotated = try runProcess(Products.farm, ["keys", "rotate", "--repo", "--manifest", scratch.file("manifest.yml")],
                                     environment: ["PATH": scratch.file("bin")])
        #expect(rotated.status == 3 && rotated.stderr.contains("apt-get install gnupg"), "\(rotated.stdout)\(rotated.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("keys/retired")))
        #expect(try keys(scratch, ["show"]).status == 0)
    }

    /// A farm killed while gpg makes (or uses) the repository key leaves the key's scratch home
    /// beside the keys, never in the temporary directory; the next run stops its agent and removes it.
    @Test func aKillDuringKeyGenerationLeavesNoPrivateKeyOutsideTheKeysAndTheNextRunCleansUp() throws {
        let scratch = try Scratch()
        try scratch.write("manifest.yml", KeysTests.manifest)
        let temporary = scratch.file("tmp")
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        let scratchHomes = scratch.file("keys/.g")

        let farm = Process()
        farm.executableURL = URL(fileURLWithPath: Products.farm)
        // rsa4096 takes gpg-agent seconds to make: time to catch it at work.
        farm.arguments = ["keys", "init", "--bits", "2048", "--repo-algorithm", "rsa4096", "--manifest", scratch.file("manifest.yml")]
        farm.environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": temporary]) { _, new in new }
        farm.standardOutput = FileHandle.nullDevice
        farm.standardError = FileHandle.nullDevice
        try farm.run()
        let deadline = Date().addingTimeInterval(60)
        var agents: [Int32] = []
        while Date() < deadline, farm.isRunning, agents.isEmpty {
            agents = processes(containing: scratchHomes + "/").filter { pid in
                (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8))?.contains("gpg-agent") == true
            }
            usleep(20_000)
        }
        kill(farm.processIdentifier, SIGKILL)
        farm.waitUntilExit()
        #expect(!agents.isEmpty, "no gpg-agent ran for a home under \(scratchHomes) while farm made the repository key")

        // The private key's home is beside the keys (owner only), and nothing under TMPDIR holds a key.
        let left = (try? FileManager.default.contentsOfDirectory(atPath: scratchHomes)) ?? []
        #expect(!left.isEmpty)
        #expect(try mode(scratchHomes) == 0o700)
        let underTemporary = (FileManager.default.enumerator(atPath: temporary)?.allObjects as? [String]) ?? []
        #expect(!underTemporary.contains { $0.contains("private-keys") }, "\(underTemporary)")

        // The next run stops the killed run's agent and removes its home.
        let again = try runProcess(Products.farm, ["keys", "init", "--repo-algorithm", "ed25519", "--manifest", scratch.file("manifest.yml")],
                                   environment: ["TMPDIR": temporary])
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
        for home in left {
            #expect(!FileManager.default.fileExists(atPath: scratchHomes + "/" + home), "\(home) was left")
            #expect(processes(containing: scratchHomes + "/" + home).isEmpty, "an agent of \(home) still runs")
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: scratchHomes)) ?? []).isEmpty)
        let leftUnderTemporary = (FileManager.default.enumerator(atPath: temporary)?.allObjects as? [String]) ?? []
        #expect(leftUnderTemporary.isEmpty, "\(leftUnderTemporary)")
    }
}
