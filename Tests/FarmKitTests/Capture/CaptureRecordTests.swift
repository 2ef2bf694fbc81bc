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

/// A repository as farm's publisher lays it out (repomd.xml with its `symbols` entry, the index,
/// each table and its signature), signed by a real repository key.
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
            try AtomicFile.makeDirectory(root + "/repodata")
            try FileManager.default.copyItem(atPath: keyHome + ".asc", toPath: root + "/" + RepositoryFormat.keyPath)
        }

        func write(_ data: Data, _ path: String) throws {
            try AtomicFile.makeDirectory((root + "/" + path as NSString).deletingLastPathComponent)
            try data.write(to: URL(fileURLWithPath: root + "/" + path))
        }

        func gzip(_ data: Data) throws -> Data {
            let file = scratch.file("gz-\(UInt32.random(in: 0...UInt32.max))")
            try data.write(to: URL(fileURLWithPath: file))
            #expect(try runProcess("/bin/gzip", ["-n", file]).status == 0)
            return try Data(contentsOf: URL(fileURLWithPath: file + ".gz"))
        }

        /// A table (xz-compressed JSON, made by xz) for `banner`, listed at `location`, signed; and
        /// repomd.xml over a one-module manifest and the index (no index when `banner` is nil).
        @discardableResult
        func publish(banner: String?, location: String = "symbols/linux/debian_test_1_amd64.json.xz") throws -> Data {
            let json = scratch.file("table.json")
            try Data(#"{"metadata": {"linux": {}}, "symbols": {}}"#.utf8).write(to: URL(fileURLWithPath: json))
            #expect(try runProcess("/usr/bin/xz", ["-kf", json]).status == 0)
            let table = try Data(contentsOf: URL(fileURLWithPath: json + ".xz"))
            let primary = RepositoryFormat.primaryXML([RepositoryModule(name: "lime-x.ko", arch: "x86_64", checksum: SHA256.hash("m").hex, version: "x",
                                                                        location: "modules/lime-x.ko", signature: "modules/lime-x.ko.sig")])
            let primaryGz = try gzip(primary)
            let primaryPath = "repodata/\(SHA256.hash(primary).hex)-primary.xml.gz"
            try write(primaryGz, primaryPath)
            var index = RepositoryIndex(revision: 1, checksum: SHA256.hash(primaryGz).hex, openChecksum: SHA256.hash(primary).hex,
                                        location: primaryPath, timestamp: 1, size: primaryGz.count, openSize: primary.count)
            if let banner {
                if !location.contains("..") && !location.hasPrefix("/") {
                    try write(table, location)
                    try GnuPG.detachSign(file: root + "/" + location, output: root + "/" + location + ".sig", keyHome: keyHome, fingerprint: key.fingerprint)
                }
                let entry = SymbolTableEntry(release: "6.1.0-28-amd64", arch: "x86_64", family: "debian",
                                             banner: Data((banner.trimmingCharacters(in: .newlines) + "\n\0").utf8).base64EncodedString(),
                                             location: location, checksum: SHA256.hash(table).hex, signature: location + ".sig")
                let symbols = try RepositoryFormat.symbolsJSON([entry])
                let symbolsGz = try gzip(symbols)
                let symbolsPath = "repodata/\(SHA256.hash(symbols).hex)-symbols.json.gz"
                try write(symbolsGz, symbolsPath)
                index.symbols = .init(checksum: SHA256.hash(symbolsGz).hex, openChecksum: SHA256.hash(symbols).hex, location: symbolsPath,
                                      size: symbolsGz.count, openSize: symbols.count)
            }
            try write(RepositoryFormat.repomdXML(index), RepositoryFormat.repomdPath)
            try sign()
            return table
        }

        func sign(home: String? = nil, fingerprint: String? = nil) throws {
            unlink(root + "/" + RepositoryFormat.repomdSignaturePath)
            try GnuPG.detachSign(file: root + "/" + RepositoryFormat.repomdPath, output: root + "/" + RepositoryFormat.repomdSignaturePath,
                                 keyHome: home ?? keyHome, fingerprint: fingerprint ?? key.fingerprint)
        }

        func capture(verifying: Bool = true) -> Capture {
            Capture(repository: RepositorySource(root), fingerprint: verifying ? key.fingerprint : nil, output: output) { _ in }
        }

        /// Every file under the scratch directory, outside `repo/` and `keys/`.
        func written() -> [String] {
            let all = (FileManager.default.enumerator(atPath: scratch.path)?.allObjects as? [String]) ?? []
            return all.filter { !$0.hasPrefix("repo") && !$0.hasPrefix("keys") && !$0.hasPrefix("table.json") && !$0.hasPrefix("gz-")
                && !((try? FileManager.default.attributesOfItem(atPath: scratch.file($0))[.type] as? FileAttributeType) == .typeDirectory) }
        }
    }

    @Test func theTableWhoseBannerIsTheHostsIsWrittenBesideTheImageWithTheVolLine() throws {
        let repository = try Repository()
        let banner = try CaptureRecordTests.localBanner()
        let table = try repository.publish(banner: banner)
        let image = repository.output + "/db1-x-20260101T000000Z.lime"
        let outcome = repository.capture().fetchSymbols(procVersion: banner.trimmingCharacters(in: .newlines), machine: "x86_64", image: image)
        let file = repository.output + "/symbols/linux/debian_test_1_amd64.json.xz"
        #expect(outcome == .written(CaptureSymbols(source: "repository", location: "symbols/linux/debian_test_1_amd64.json.xz", file: file,
                                                   sha256: SHA256.hash(table).hex,
                                                   command: "vol -s \(repository.output)/symbols -f \(image) linux.pslist")))
        #expect(FileManager.default.contents(atPath: file) == table)
        #expect(repository.written() == ["out/symbols/linux/debian_test_1_amd64.json.xz"])
    }

    /// `/proc/version` is `linux_banner` without its NUL; volatility3 compares banners with
    /// trailing newlines and NULs stripped, and so does farm.
    @Test func bannersAreComparedWithoutTrailingNewlinesAndNULsAsVolatilityDoes() throws {
        let repository = try Repository()
        try repository.publish(banner: "Linux version 6.1.0-28-amd64 (x) #1 SMP\n")
        for (running, found) in [("Linux version 6.1.0-28-amd64 (x) #1 SMP\n", true), ("Linux version 6.1.0-28-amd64 (x) #1 SMP", true),
                                 ("Linux version 6.1.0-28-amd64 (x) #1 SMP PREEMPT", false), ("Linux version 6.1.0-28-amd64 (x) #1", false)] {
            let outcome = repository.capture().fetchSymbols(procVersion: running, machine: "x86_64", image: repository.output + "/a.lime")
            if case .written = outcome { #expect(found, "\(running)") } else { #expect(!found, "\(running): \(outcome)") }
        }
        // The same banner on another machine is another kernel.
        guard case .missing = repository.capture().fetchSymbols(procVersion: "Linux version 6.1.0-28-amd64 (x) #1 SMP", machine: "aarch64",
                                                                 image: repository.output + "/a.lime") else {
            Issue.record("a table for x86_64 was taken for aarch64")
            return
        }
    }

    @Test func aRepositoryWithoutSymbolsOrWithoutTheHostsKernelSaysWhatIsMissing() throws {
        let repository = try Repository()
        try repository.publish(banner: nil)
        let none = repository.capture().fetchSymbols(procVersion: "Linux version 6.1.0-28-amd64 (x)", machine: "x86_64", image: repository.output + "/a.lime")
        #expect(none == .missing("\(repository.root)/repodata/repomd.xml lists no symbol tables"))
        try repository.publish(banner: "Linux version 6.1.0-27-amd64 (x)\n")
        let other = repository.capture().fetchSymbols(procVersion: "Linux version 6.1.0-28-amd64 (x)", machine: "x86_64", image: repository.output + "/a.lime")
        #expect(other == .missing("\(repository.root) has no symbol table for this kernel's banner 'Linux version 6.1.0-28-amd64 (x)' (x86_64)"))
        #expect(repository.written().isEmpty)
    }

    @Test func anIndexNotSignedByThePinnedKeyOrATableChangedAfterSigningIsRefused() throws {
        let repository = try Repository()
        let banner = "Linux version 6.1.0-28-amd64 (x)\n"
        try repository.publish(banner: banner)
        let other = try RepositoryKey.create(at: .init(base: repository.scratch.file("keys/other")), uid: "else <else@farm.test>", algorithm: "ed25519")
        try repository.sign(home: repository.scratch.file("keys/other"), fingerprint: other.fingerprint)
        guard case let .refused(foreign) = repository.capture().fetchSymbols(procVersion: banner, machine: "x86_64", image: repository.output + "/a.lime") else {
            Issue.record("an index signed by another key was accepted")
            return
        }
        #expect(foreign.contains("repodata/repomd.xml.sig"), "\(foreign)")
        try repository.sign()
        // The table's own signature is checked too: one by another key is refused.
        let table = repository.root + "/symbols/linux/debian_test_1_amd64.json.xz"
        unlink(table + ".sig")
        try GnuPG.detachSign(file: table, output: table + ".sig", keyHome: repository.scratch.file("keys/other"), fingerprint: other.fingerprint)
        guard case let .refused(badSignature) = repository.capture().fetchSymbols(procVersion: banner, machine: "x86_64", image: repository.output + "/a.lime") else {
            Issue.record("a table signed by another key was accepted")
            return
        }
        #expect(badSignature.contains("debian_test_1_amd64.json.xz.sig"), "\(badSignature)")
        // Without signature checks (--gpg-no-verify), the table's sha256 still guards it.
        try Data("not the table".utf8).write(to: URL(fileURLWithPath: table))
        guard case let .refused(swapped) = repository.capture(verifying: false).fetchSymbols(procVersion: banner, machine: "x86_64", image: repository.output + "/a.lime") else {
            Issue.record("a table whose sha256 is not the index's was accepted")
            return
        }
        #expect(swapped.contains("debian_test_1_amd64.json.xz: sha256 "), "\(swapped)")
        #expect(repository.written().isEmpty)
    }

    @Test(arguments: ["symbols/linux/../../../escaped.json.xz", "/tmp/escaped.json.xz", "https://elsewhere.example/symbols/linux/a.json.xz",
                      "symbols/linux//a.json.xz"])
    func aLocationLeadingOutsideTheRepositoryIsRefusedAndNothingIsWritten(location: String) throws {
        let repository = try Repository()
        let banner = "Linux version 6.1.0-28-amd64 (x)\n"
        try repository.publish(banner: banner, location: location)
        let outcome = repository.capture().fetchSymbols(procVersion: banner, machine: "x86_64", image: repository.output + "/a.lime")
        guard case let .refused(reason) = outcome else {
            Issue.record("\(location) was accepted: \(outcome)")
            return
        }
        #expect(reason.contains("the href '\(location)' is not a relative path inside the repository"), "\(reason)")
        #expect(repository.written().isEmpty, "\(repository.written())")
    }
}
