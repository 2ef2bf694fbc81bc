import FarmEngine
@testable import FarmKit
import Foundation
import Testing

/// The capture's record (the sidecar a responder keeps), the host facts read before uploading,
/// and the symbol table written beside the image, without a host to capture.
struct CaptureRecordTests {
    /// This machine's own `/proc/version`: a real banner, as a captured host has one.
    static func localBanner() throws -> String { try String(contentsOfFile: "/proc/version", encoding: .utf8) }

    @Test func theHostFactsScriptGivesThisMachinesKernelNameAndBannerInOneRun() throws {
        let run = try Executable.run("/bin/sh", ["-c", HostFacts.script])
        #expect(run.status == 0, "\(run.stderr)")
        let facts = try HostFacts.parse(run.stdout, host: "localhost")
        var name = utsname()
        uname(&name)
        func field<T>(_ value: T) -> String { withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } }
        #expect(facts.release == field(name.release) && facts.machine == field(name.machine) && facts.hostname == field(name.nodename))
        #expect(facts.isRoot == (geteuid() == 0))
        #expect(facts.procVersion + "\n" == (try Self.localBanner()))
        #expect(facts.sigEnforce == (FileManager.default.fileExists(atPath: ModuleLoadPolicy.sigEnforcePath)
                                     ? .text(try String(contentsOfFile: ModuleLoadPolicy.sigEnforcePath, encoding: .utf8)
                                         .trimmingCharacters(in: .whitespacesAndNewlines)) : .absent))
        #expect(!LimeImage.systemRAM(iomem: facts.iomem).isEmpty || geteuid() != 0)
    }

    @Test func aHostThatPrintsNoBannerIsAClearError() throws {
        let run = try Executable.run("/bin/sh", ["-c", HostFacts.script.replacingOccurrences(of: "cat /proc/version", with: "true")])
        #expect(throws: FarmError.self) { try HostFacts.parse(run.stdout, host: "db1") }
        do { _ = try HostFacts.parse(run.stdout, host: "db1") } catch {
            #expect("\(error)".contains("db1: cat /proc/version printed nothing"), "\(error)")
        }
    }

    @Test(arguments: [
        // (lockdown file, sig_enforce file, needs a trusted key)
        (HostFacts.File.text("[none] integrity confidentiality"), HostFacts.File.text("N"), false as Bool?),
        (.text("none [integrity] confidentiality"), .text("N"), true),
        (.text("none integrity [confidentiality]"), .text("N"), true),
        (.text("[none] integrity confidentiality"), .text("Y"), true),
        (.absent, .text("Y"), true),
        (.absent, .text("N"), nil),
        (.unreadable, .text("N"), nil),
        (.text("[none] integrity confidentiality"), .absent, false),
        (.absent, .absent, nil),
        (.text("[weird]"), .text("N"), nil),
    ])
    func theLockdownAndSigEnforceDecideWhetherTheHostNeedsATrustedKey(lockdown: HostFacts.File, sigEnforce: HostFacts.File, needs: Bool?) {
        let policy = ModuleLoadPolicy(lockdown: lockdown, sigEnforce: sigEnforce)
        #expect(policy.needsTrustedKey == needs, "\(policy.reason)")
        // What insmod says when the host refuses the signature gets the way out, unless any key is fine.
        let refused = policy.explainInsmod("insmod: ERROR: could not insert module /tmp/farm-lime-1.ko: Key was rejected by service")
        #expect((refused != nil) == (needs != false))
        if needs == true {
            #expect(policy.summary.contains("mokutil --import module-signing.der"))
            #expect(refused?.contains("mokutil --import module-signing.der") == true)
        }
        #expect(policy.explainInsmod("insmod: ERROR: could not insert module: Invalid module format") == nil)
    }

    @Test(arguments: ["", String(repeating: "c", count: 129), "IR-2026\n042", "IR-\u{202E}240", "a\tb", "x\u{0}"])
    func aCaseOrOperatorThatIsNotPrintableOrTooLongIsRefused(text: String) {
        let error = #expect(throws: FarmError.self) { try CaptureLabel.validated(text, option: "--case") }
        #expect(error?.category == .badInput && error?.message.hasPrefix("--case ") == true, "\(String(describing: error))")
    }

    @Test func aPrintableCaseUpTo128CharactersIsKeptAsTyped() throws {
        for text in ["IR-2026-042", "Incident 7 / host db1 (Zoë)", String(repeating: "é", count: 128)] {
            #expect(try CaptureLabel.validated(text, option: "--case") == text)
        }
    }

    @Test func farmCaptureRefusesABadCaseBeforeTouchingAnyHost() throws {
        let result = try runProcess(Products.farm, ["capture", "root@192.0.2.1", "--repo", NSTemporaryDirectory(), "--gpg-no-verify",
                                                    "--case", "line one\nline two"])
        #expect(result.status == 2, "\(result.stdout)\(result.stderr)")
        #expect(result.stderr.contains("--case holds the unprintable character U+000A"), "\(result.stderr)")
    }

    @Test func theSidecarRecordsTimesInUTCAndANullSymbolTableWithItsReason() throws {
        let started = Date(timeIntervalSince1970: 1_790_000_000)
        let report = CaptureReport(host: "root@db1", release: "6.1.0-28-amd64", machine: "x86_64", image: "c/db1.lime", size: 4096,
                                   sha256: String(repeating: "a", count: 64), module: "repo/modules/lime.ko", moduleSHA256: String(repeating: "b", count: 64),
                                   repository: "repo", ranges: [], started: started, seconds: 2, bytesPerSecond: 2048, cipher: nil,
                                   compression: "none", compressionReason: "--compress off", streamed: 4096, operator: "alice",
                                   case: "IR-2026-042", farmVersion: FarmVersion.current, hostname: "db1", procVersion: "Linux version 6.1.0-28-amd64 (x)",
                                   hostKey: "ssh-ed25519 SHA256:abc", contacted: started.addingTimeInterval(-5),
                                   ended: started.addingTimeInterval(2), moduleLoading: ModuleLoadPolicy(lockdown: .absent, sigEnforce: .text("N")),
                                   symbols: .none, symbolsMissing: "repo/symbols/banners.json is absent")
        let json = try #require(try JSONSerialization.jsonObject(with: report.encoded()) as? [String: Any])
        #expect(json.keys.contains("symbols") && json["symbols"] is NSNull, "\(json)")
        #expect(json["symbolsMissing"] as? String == "repo/symbols/banners.json is absent")
        #expect(json["started"] as? String == "2026-09-21T14:13:20Z" && json["ended"] as? String == "2026-09-21T14:13:22Z"
                && json["contacted"] as? String == "2026-09-21T14:13:15Z", "\(json)")
        #expect(json["operator"] as? String == "alice" && json["case"] as? String == "IR-2026-042" && json["farmVersion"] as? String == FarmVersion.current)
        let loading = try #require(json["moduleLoading"] as? [String: Any])
        #expect(loading["sigEnforce"] as? Bool == false && loading["needsTrustedKey"] == nil, "\(loading)")
        // It reads back as written.
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let back = try decoder.decode(CaptureReport.self, from: report.encoded())
        #expect(back.symbols == .none && back.case == "IR-2026-042" && back.ended == report.ended)
    }

    @Test func theHostKeyIsTheOneSshSaysTheKeyExchangeUsed() throws {
        // OpenSSH's own wording (sshconnect.c, verify_host_key: "Server host key: %s %s"), with
        // the "\r\n" line ends ssh -v writes.
        let debug = [
            "debug1: kex: server->client cipher: chacha20-poly1305@openssh.com MAC: <implicit> compression: none",
            "debug1: Server host key: ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU",
            "debug1: Host '[127.0.0.1]:2222' is known and matches the ED25519 host key.",
        ].joined(separator: "\r\n") + "\r\n"
        #expect(HostFacts.hostKey(sshDebug: debug) == "ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU")
        #expect(Capture.cipher(sshDebug: debug) == "chacha20-poly1305@openssh.com <implicit>")
        #expect(HostFacts.hostKey(sshDebug: "debug1: Authentications that can continue: publickey") == nil)
    }
}

/// `symbols/banners.json` as the lead's publisher writes it, signed by a real repository key.
struct SymbolTableTests {
    final class Repository {
        let scratch: Scratch
        let key: RepositoryKey
        let keyHome: String
        var root: String { scratch.file("repo") }
        var output: String { scratch.file("out") }

        init(_ name: String = #function) throws {
            scratch = try Scratch(name)
            keyHome = scratch.file("keys/repo")
            key = try RepositoryKey.create(at: .init(base: keyHome), uid: "farm tests <t@farm.test>", algorithm: "ed25519")
            try AtomicFile.makeDirectory(root + "/symbols/linux")
            try FileManager.default.copyItem(atPath: keyHome + ".asc", toPath: root + "/" + RepositoryFormat.keyPath)
        }

        /// A table (xz-compressed JSON, made by xz) for `banner`, at `location`, listed and signed.
        @discardableResult
        func publish(banner: String, location: String = "linux/debian_test_1_amd64.json.xz", listedAs: String? = nil) throws -> Data {
            let json = scratch.file("table.json")
            try Data(#"{"metadata": {"linux": {}}, "symbols": {}}"#.utf8).write(to: URL(fileURLWithPath: json))
            #expect(try runProcess("/usr/bin/xz", ["-kf", json]).status == 0)
            let table = try Data(contentsOf: URL(fileURLWithPath: json + ".xz"))
            if !location.contains("..") {
                try table.write(to: URL(fileURLWithPath: root + "/symbols/" + location))
            }
            let listed = listedAs ?? location
            let index: [String: Any] = ["version": 1, "linux": [Data((banner + "\0").utf8).base64EncodedString(): [listed]],
                                        "sha256": [listed: SHA256.hash(table).hex]]
            try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys]).write(to: URL(fileURLWithPath: root + "/" + SymbolIndex.path))
            try sign()
            return table
        }

        func sign(home: String? = nil, fingerprint: String? = nil) throws {
            unlink(root + "/" + SymbolIndex.signaturePath)
            try GnuPG.detachSign(file: root + "/" + SymbolIndex.path, output: root + "/" + SymbolIndex.signaturePath,
                                 keyHome: home ?? keyHome, fingerprint: fingerprint ?? key.fingerprint)
        }

        func capture(verifying: Bool = true) -> Capture {
            Capture(repository: RepositorySource(root), fingerprint: verifying ? key.fingerprint : nil, output: output) { _ in }
        }

        /// Every file under the scratch directory, outside `repo/` and `keys/`.
        func written() -> [String] {
            let all = (FileManager.default.enumerator(atPath: scratch.path)?.allObjects as? [String]) ?? []
            return all.filter { !$0.hasPrefix("repo") && !$0.hasPrefix("keys") && !$0.hasPrefix("table.json")
                && !((try? FileManager.default.attributesOfItem(atPath: scratch.file($0))[.type] as? FileAttributeType) == .typeDirectory) }
        }
    }

    @Test func theTableWhoseBannerIsTheHostsIsWrittenBesideTheImageWithTheVolLine() throws {
        let repository = try Repository()
        let banner = try CaptureRecordTests.localBanner()
        let table = try repository.publish(banner: banner)
        let image = repository.output + "/db1-x-20260101T000000Z.lime"
        let outcome = repository.capture().fetchSymbols(procVersion: banner.trimmingCharacters(in: .newlines), image: image)
        let file = repository.output + "/symbols/linux/debian_test_1_amd64.json.xz"
        #expect(outcome == .written(CaptureSymbols(location: "linux/debian_test_1_amd64.json.xz", file: file, sha256: SHA256.hash(table).hex,
                                                   command: "vol -s \(repository.output)/symbols -f \(image) linux.pslist")))
        #expect(FileManager.default.contents(atPath: file) == table)
        #expect(repository.written() == ["out/symbols/linux/debian_test_1_amd64.json.xz"])
    }

    @Test func bannersAreComparedWithoutTrailingNewlinesAndNULsAsVolatilityDoes() throws {
        let index = SymbolIndex(entries: [.init(banner: Array("Linux version 6.1.0-28-amd64 (x) #1 SMP\n\0".utf8), locations: ["linux/a.json.xz"])],
                                sha256: [:])
        #expect(index.tables(procVersion: "Linux version 6.1.0-28-amd64 (x) #1 SMP\n") == ["linux/a.json.xz"])
        #expect(index.tables(procVersion: "Linux version 6.1.0-28-amd64 (x) #1 SMP") == ["linux/a.json.xz"])
        #expect(index.tables(procVersion: "Linux version 6.1.0-28-amd64 (x) #1 SMP PREEMPT") == [])
        #expect(index.tables(procVersion: "Linux version 6.1.0-28-amd64 (x) #1") == [])
    }

    @Test func aRepositoryWithoutSymbolsOrWithoutTheHostsKernelSaysWhatIsMissing() throws {
        let repository = try Repository()
        let none = repository.capture().fetchSymbols(procVersion: "Linux version 6.1.0-28-amd64 (x)", image: repository.output + "/a.lime")
        #expect(none == .missing("\(repository.root)/symbols/banners.json is absent: the repository has no symbol tables"))
        try repository.publish(banner: "Linux version 6.1.0-27-amd64 (x)\n")
        let other = repository.capture().fetchSymbols(procVersion: "Linux version 6.1.0-28-amd64 (x)", image: repository.output + "/a.lime")
        #expect(other == .missing("\(repository.root)/symbols/banners.json lists no table for this kernel's banner 'Linux version 6.1.0-28-amd64 (x)'"))
        #expect(repository.written().isEmpty)
    }

    @Test func anIndexNotSignedByThePinnedKeyOrChangedAfterSigningIsRefused() throws {
        let repository = try Repository()
        let banner = "Linux version 6.1.0-28-amd64 (x)\n"
        try repository.publish(banner: banner)
        let other = try RepositoryKey.create(at: .init(base: repository.scratch.file("keys/other")), uid: "else <else@farm.test>", algorithm: "ed25519")
        try repository.sign(home: repository.scratch.file("keys/other"), fingerprint: other.fingerprint)
        let foreign = repository.capture().fetchSymbols(procVersion: banner, image: repository.output + "/a.lime")
        #expect(foreign == .refused("\(repository.root)/symbols/banners.json.sig: the signature was not made by the pinned key \(repository.key.fingerprint)"))
        // Without --gpg-no-verify's waiver, a changed index is refused; with it, the table's sha256 still guards it.
        try repository.sign()
        let path = repository.root + "/" + SymbolIndex.path
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes.append(contentsOf: Array(" ".utf8))
        try bytes.write(to: URL(fileURLWithPath: path))
        guard case let .refused(changed) = repository.capture().fetchSymbols(procVersion: banner, image: repository.output + "/a.lime") else {
            Issue.record("a changed index was accepted")
            return
        }
        #expect(changed.contains("symbols/banners.json: bad signature"), "\(changed)")
        try Data("not the table".utf8).write(to: URL(fileURLWithPath: repository.root + "/symbols/linux/debian_test_1_amd64.json.xz"))
        guard case let .refused(swapped) = repository.capture(verifying: false).fetchSymbols(procVersion: banner, image: repository.output + "/a.lime") else {
            Issue.record("a table whose sha256 is not the index's was accepted")
            return
        }
        #expect(swapped.contains("debian_test_1_amd64.json.xz: sha256 "), "\(swapped)")
        #expect(repository.written().isEmpty)
    }

    @Test(arguments: ["linux/../../../escaped.json.xz", "/tmp/escaped.json.xz", "https://elsewhere.example/symbols/linux/a.json.xz",
                      "linux//a.json.xz", "other/a.json.xz"])
    func aLocationLeadingOutsideTheRepositorysSymbolsIsRefusedAndNothingIsWritten(location: String) throws {
        let repository = try Repository()
        let banner = "Linux version 6.1.0-28-amd64 (x)\n"
        try repository.publish(banner: banner, listedAs: location)
        let outcome = repository.capture().fetchSymbols(procVersion: banner, image: repository.output + "/a.lime")
        guard case let .refused(reason) = outcome else {
            Issue.record("\(location) was accepted: \(outcome)")
            return
        }
        #expect(reason.contains("the location '\(location)'"), "\(reason)")
        #expect(repository.written().isEmpty, "\(repository.written())")
    }

    @Test func aURLOfTheRepositorysOwnSymbolsIsReadAsItsPath() throws {
        let source = RepositorySource("https://repo.farm.test/lime")
        #expect(try SymbolIndex.location("https://repo.farm.test/lime/symbols/linux/a.json.xz", name: "banners.json", repository: source)
                == "linux/a.json.xz")
        #expect(throws: FarmError.self) {
            try SymbolIndex.location("https://repo.farm.test/lime/symbols/../a.json.xz", name: "banners.json", repository: source)
        }
    }
}
