import FarmEngine
import FarmKit
import Foundation
import SyntheticKinds
import Testing

/// Stands in for a compile and sign: a module of made-up bytes (2 MiB, so installing one takes a
/// while) with a real OpenPGP signature by the repository key, as the sign task's outputs.
struct StubSignedModule: TaskAction {
    let release: String
    let keyHome: String
    let fingerprint: String
    var kind: String { "stub-signed-module" }
    var version: Int { 1 }
    var parameters: [(name: String, value: String)] { [("release", release), ("key", fingerprint)] }

    func run(_ context: TaskContext) async throws -> [String: Digest] {
        var bytes = Data("module for \(release)\n".utf8)
        bytes.append(Data(repeating: SHA256.hash(release).hex.utf8.first ?? 0, count: 2 << 20))
        let file = context.workDirectory + "/module.ko"
        try bytes.write(to: URL(fileURLWithPath: file))
        try GnuPG.detachSign(file: file, output: file + ".sig", keyHome: keyHome, fingerprint: fingerprint)
        return ["module": try context.store(file: file), "signature": try context.store(file: file + ".sig")]
    }
}

/// The product's publish task over stub modules: a real repository without compiling anything.
struct StubRepositoryRules: BuildRules {
    let directory: String
    let key: RepositoryKey
    let paths: RepositoryKey.Paths

    func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws {
        var signed: [BuildGraph.Dependency] = []
        let modules = kernels.map { PublishAction.Module(recipe: "lime", kernel: $0.name) }
        for (kernel, module) in zip(kernels, modules) {
            let id = graph.add(StubSignedModule(release: kernel.release, keyHome: paths.home, fingerprint: key.fingerprint), label: kernel.release)
            signed.append(.init(role: module.role, node: id, optional: true))
        }
        let machines = Dictionary(uniqueKeysWithValues: kernels.map { ($0.release, "x86_64") })
        graph.add(PublishAction(directory: directory, machines: machines, outputs: ["lime": "lime-{release}.ko"], modules: modules,
                                repositoryKey: key, repositoryKeyPaths: paths), as: .publish(directory: directory), dependencies: signed)
    }
}

/// Keeps what the build says about the publish directory.
final class PublishedLog: BuildReporter, @unchecked Sendable {
    private let lock = NSLock()
    private var summaries: [String] = []
    func report(_ event: BuildEvent) {
        guard case let .published(_, summary) = event else { return }
        lock.lock()
        summaries.append(summary)
        lock.unlock()
    }
    var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return summaries
    }
}

/// A scratch project with a repository key (ed25519: quick to make) and a publish directory.
final class StubRepositoryProject {
    let scratch: Scratch
    let key: RepositoryKey
    let paths: RepositoryKey.Paths
    var repo: String { scratch.file("repo") }
    var cache: String { scratch.file("cache") }

    init(_ name: String = #function) throws {
        scratch = try Scratch(name)
        paths = RepositoryKey.Paths(base: scratch.file("keys/repo"))
        key = try RepositoryKey.create(at: paths, uid: "farm tests <t@farm.test>", algorithm: "ed25519")
    }

    /// Builds and publishes `kernels` stub modules; returns the publication's digest in the cache.
    @discardableResult
    func publish(kernels: Int, dryRun: Bool = false, reporter: any BuildReporter = PublishedLog()) async throws -> Digest {
        let manifest = try scratch.write("manifest-\(kernels).yml", SyntheticManifest.text(kernels: kernels))
        let session = try Session(manifestPath: manifest, cacheDirectory: cache, rules: StubRepositoryRules(directory: repo, key: key, paths: paths))
        let summary = try await session.build(patterns: [], options: BuildOptions(jobs: 2, dryRun: dryRun), reporter: reporter)
        #expect(summary.succeeded)
        let store = try BuildCache(directory: cache)
        defer { store.close() }
        return try #require(try store.latestRecord(kind: "publish", label: repo)?.outputs.first?.digest)
    }

    /// `farm verify` on a directory, trusting this project's key and nothing else.
    func verify(_ directory: String? = nil, fingerprint: String? = nil) throws -> ProcessResult {
        try runProcess(Products.farm, ["verify", directory ?? repo, "--fingerprint", fingerprint ?? key.fingerprint,
                                       "--manifest", scratch.file("no-manifest.yml")])
    }

    /// A copy of the repository, to tamper with.
    func copy(_ name: String) throws -> String {
        let copy = scratch.file(name)
        #expect(try runProcess("/bin/cp", ["-a", repo, copy]).status == 0)
        return copy
    }
}

struct PublisherTests {
    /// Every file and link under `directory`, relative, with `.tmp-` names among them.
    func entries(_ directory: String) -> [String] {
        (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String]) ?? []
    }

    @Test func aPublisherKilledAtAnyMomentLeavesTheOldOrTheNewRepositoryNeverAMix() async throws {
        let project = try StubRepositoryProject()
        let two = try await project.publish(kernels: 2)
        let three = try await project.publish(kernels: 3)
        let first = try project.verify()
        #expect(first.status == 0 && first.stdout.contains("3 module(s)"), "\(first.stdout)\(first.stderr)")

        func install(_ publication: Digest, killAfter milliseconds: Int?) throws -> TimeInterval {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Products.driver)
            process.arguments = ["--cache", project.cache, "--install", publication.hex, project.repo]
            process.standardOutput = FileHandle.nullDevice
            let started = Date()
            try process.run()
            if let milliseconds {
                usleep(UInt32(milliseconds) * 1000)
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
            return Date().timeIntervalSince(started)
        }
        // How long one whole install takes here, so the kills land anywhere within one.
        let whole = Int(try install(two, killAfter: nil) * 1000) + 1
        _ = try install(three, killAfter: nil)
        var killedMidway = 0
        for round in 0..<20 {
            let moment = Int.random(in: 0...whole)
            let publication = round.isMultiple(of: 2) ? two : three
            let repomdBefore = FileManager.default.contents(atPath: project.repo + "/repodata/repomd.xml")
            _ = try install(publication, killAfter: moment)
            let repomdAfter = FileManager.default.contents(atPath: project.repo + "/repodata/repomd.xml")
            if repomdAfter == repomdBefore { killedMidway += 1 }
            let verified = try project.verify()
            #expect(verified.status == 0, "round \(round), killed after \(moment) of \(whole) ms:\n\(verified.stdout)\(verified.stderr)")
        }
        // Some kills came before the switch (the old repository stayed), so the test tried something.
        #expect(killedMidway > 0, "no kill came before the switch (a whole install takes \(whole) ms)")

        // The next publication removes what the killed ones left, and keeps one previous revision.
        _ = try install(two, killAfter: nil)
        let verified = try project.verify()
        #expect(verified.status == 0 && verified.stdout.contains("2 module(s)"), "\(verified.stdout)\(verified.stderr)")
        let left = entries(project.repo)
        #expect(!left.contains { ($0 as NSString).lastPathComponent.hasPrefix(".tmp-") }, "\(left)")
        let revisions = try FileManager.default.contentsOfDirectory(atPath: project.repo + "/.revisions").filter { $0 != "previous" }
        #expect(revisions.count == 2, "\(revisions)")
        let link = try FileManager.default.destinationOfSymbolicLink(atPath: project.repo + "/repodata")
        #expect(link.hasPrefix(".revisions/"), "\(link)")
    }

    /// The same, deterministically: strace kills the publisher on entering its 1st, 2nd, ... rename
    /// (or link, or unlink), so every moment between two of them is tried once.
    @Test func aPublisherKilledAtEachRenameLeavesTheOldOrTheNewRepository() async throws {
        let strace = "/usr/bin/strace"
        try #require(FileManager.default.isExecutableFile(atPath: strace), "strace is not installed; run scripts/install-deps")
        let project = try StubRepositoryProject()
        let two = try await project.publish(kernels: 2)
        let three = try await project.publish(kernels: 3)
        // Renames, and the links and unlinks between them.
        let renames = "rename,renameat,renameat2,symlink,symlinkat,link,linkat,unlink,unlinkat"
        func install(_ publication: Digest, _ tracing: [String] = []) throws -> ProcessResult {
            let command = [Products.driver, "--cache", project.cache, "--install", publication.hex, project.repo]
            return tracing.isEmpty ? try runProcess(command[0], Array(command.dropFirst())) : try runProcess(strace, tracing + command)
        }
        let log = project.scratch.file("renames.log")
        let counted = try install(two, ["-f", "-qq", "-o", log, "-e", "trace=" + renames])
        #expect(counted.status == 0, "\(counted.stdout)\(counted.stderr)")
        let count = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").filter { !$0.contains("---") && !$0.contains("+++") }.count
        #expect(count >= 2, "the publisher made \(count) renames")
        var kills = 0
        for moment in 1...max(1, count) {
            #expect(try install(three).status == 0)
            let killed = try install(two, ["-f", "-qq", "-o", "/dev/null", "-e", "trace=" + renames,
                                           "-e", "inject=\(renames):signal=KILL:when=\(moment)"])
            // The count varies a little (leftovers to remove), so the last moments may not come.
            if killed.status != 0 { kills += 1 }
            let verified = try project.verify()
            #expect(verified.status == 0, "killed at rename \(moment) of \(count):\n\(verified.stdout)\(verified.stderr)")
        }
        #expect(kills >= count / 2, "\(kills) of \(count) moments came")
        #expect(try install(two).status == 0)
        let verified = try project.verify()
        #expect(verified.status == 0 && verified.stdout.contains("2 module(s)"), "\(verified.stdout)\(verified.stderr)")
    }

    /// The revision layout (repodata a link) over HTTP: python's http.server follows the link,
    /// Margarita Shotgun 0.4.1 fetches and verifies a module, and farm verify reads the URL.
    @Test func theRevisionLayoutIsReadOverHTTPByMargaritaShotgunAndFarm() async throws {
        let project = try StubRepositoryProject()
        try await project.publish(kernels: 2)
        try await project.publish(kernels: 3)
        let server = try StaticServer(directory: project.repo)
        let release = "6.0.2-2-amd64"
        let fetched = try MargaritaShotgun.fetch(server.url, release: release, trusting: project.paths.publicKey, scratch: project.scratch,
                                                 into: project.scratch.file("ms"))
        #expect(fetched.status == 0, "\(fetched.stdout)\(fetched.stderr)")
        #expect(FileManager.default.contents(atPath: project.scratch.file("ms/lime-\(release).ko"))
                == FileManager.default.contents(atPath: project.repo + "/modules/lime-\(release).ko"))
        let verified = try project.verify(server.url)
        #expect(verified.status == 0 && verified.stdout.contains("3 module(s)"), "\(verified.stdout)\(verified.stderr)")
    }

    @Test func aReaderHoldingThePreviousIndexStillFindsItsManifest() async throws {
        let project = try StubRepositoryProject()
        try await project.publish(kernels: 2)
        let old = try #require(FileManager.default.contents(atPath: project.repo + "/repodata/repomd.xml"))
        let oldIndex = try RepositoryFormat.parseRepomd(old, name: "repomd.xml")
        try await project.publish(kernels: 3)
        #expect(FileManager.default.fileExists(atPath: project.repo + "/" + oldIndex.location), "\(oldIndex.location) is gone")
        let new = try RepositoryFormat.parseRepomd(try #require(FileManager.default.contents(atPath: project.repo + "/repodata/repomd.xml")),
                                                   name: "repomd.xml")
        #expect(new.location != oldIndex.location)
    }

    @Test func aRepositoryOfTheOldLayoutIsUpgradedByTheNextPublication() async throws {
        let project = try StubRepositoryProject()
        try await project.publish(kernels: 2)
        // Make it as farm wrote it before revisions: a real repodata/ directory.
        let link = try FileManager.default.destinationOfSymbolicLink(atPath: project.repo + "/repodata")
        unlink(project.repo + "/repodata")
        try FileManager.default.copyItem(atPath: project.repo + "/" + link, toPath: project.repo + "/repodata")
        try FileManager.default.removeItem(atPath: project.repo + "/.revisions")
        let old = try project.verify()
        #expect(old.status == 0, "\(old.stdout)\(old.stderr)")
        let oldIndex = try RepositoryFormat.parseRepomd(try #require(FileManager.default.contents(atPath: project.repo + "/repodata/repomd.xml")),
                                                        name: "repomd.xml")

        try await project.publish(kernels: 3)
        let upgraded = try project.verify()
        #expect(upgraded.status == 0 && upgraded.stdout.contains("3 module(s)"), "\(upgraded.stdout)\(upgraded.stderr)")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: project.repo + "/repodata").hasPrefix(".revisions/"))
        #expect(FileManager.default.fileExists(atPath: project.repo + "/" + oldIndex.location), "the old manifest is gone")
        #expect(!entries(project.repo).contains { $0.contains(".tmp-") })
    }

    @Test func aDryRunWritesNoRepositoryAndNoRunRecord() async throws {
        let project = try StubRepositoryProject()
        try await project.publish(kernels: 2)
        try FileManager.default.removeItem(atPath: project.repo)
        try FileManager.default.removeItem(atPath: project.cache + "/last-run.json")

        let log = PublishedLog()
        try await project.publish(kernels: 2, dryRun: true, reporter: log)
        #expect(!FileManager.default.fileExists(atPath: project.repo), "a dry run wrote \(entries(project.repo))")
        #expect(!FileManager.default.fileExists(atPath: project.cache + "/last-run.json"))
        #expect(log.all.contains { $0.contains("would write") && $0.contains("nothing written") }, "\(log.all)")
    }

    @Test func aSwappedRepositoryKeyIsReportedWithThePinnedAndTheFoundFingerprint() async throws {
        let project = try StubRepositoryProject()
        try await project.publish(kernels: 2)
        let other = try RepositoryKey.create(at: .init(base: project.scratch.file("other/repo")), uid: "someone else <else@farm.test>",
                                             algorithm: "ed25519")
        let copy = try project.copy("swapped")
        try FileManager.default.removeItem(atPath: copy + "/REPO_SIGNING_KEY.asc")
        try FileManager.default.copyItem(atPath: project.scratch.file("other/repo.asc"), toPath: copy + "/REPO_SIGNING_KEY.asc")
        let swapped = try project.verify(copy)
        #expect(swapped.status == 1, "\(swapped.stdout)\(swapped.stderr)")
        #expect(swapped.stderr.contains("REPO_SIGNING_KEY.asc") && swapped.stderr.contains(project.key.fingerprint)
                && swapped.stderr.contains(other.fingerprint), "\(swapped.stderr)")
    }

    @Test func aTamperedIndexSignatureIsReportedAgainstTheSignatureFile() async throws {
        let project = try StubRepositoryProject()
        try await project.publish(kernels: 2)
        let garbage = try project.copy("garbage")
        try Data("not a signature\n".utf8).write(to: URL(fileURLWithPath: garbage + "/repodata/repomd.xml.sig"))
        let notASignature = try project.verify(garbage)
        #expect(notASignature.status == 1 && notASignature.stderr.contains("repodata/repomd.xml.sig: "), "\(notASignature.stderr)")

        let other = try RepositoryKey.create(at: .init(base: project.scratch.file("other/repo")), uid: "someone else <else@farm.test>",
                                             algorithm: "ed25519")
        let foreign = try project.copy("foreign")
        unlink(foreign + "/repodata/repomd.xml.sig")
        try GnuPG.detachSign(file: foreign + "/repodata/repomd.xml", output: foreign + "/repodata/repomd.xml.sig",
                             keyHome: project.scratch.file("other/repo"), fingerprint: other.fingerprint)
        let signedByAnother = try project.verify(foreign)
        #expect(signedByAnother.status == 1
                && signedByAnother.stderr.contains("repodata/repomd.xml.sig: the signature was not made by the pinned key"),
                "\(signedByAnother.stderr)")
    }
}

/// One repository holds the modules of every family's kernels, named as each family's `uname -r`
/// prints them, and Margarita Shotgun 0.4.1 finds each by that release.
struct MixedFamilyRepositoryTests {
    @Test func margaritaShotgunReadsARepositoryWithDebianUbuntuAndRHELModules() async throws {
        let project = try StubRepositoryProject()
        let releases = ["6.1.0-56-amd64", "4.4.0-210-generic", "3.10.0-1160.119.1.el7.x86_64", "4.14.355-277.643.amzn2.x86_64"]
        let manifest = try project.scratch.write("manifest.yml", """
        farm: 1
        upstreams:
          debian: {kind: apt, mirror: apt, suites: [bookworm]}
          ubuntu: {kind: apt, family: ubuntu, mirror: apt, suites: [xenial-updates]}
          centos: {kind: yum, mirror: "file:///nowhere", suites: [updates/x86_64], distribution: centos-7}
          amazon: {kind: yum, mirror: "file:///nowhere", suites: [.]}
        kernels:
          - {release: \(releases[0]), upstream: debian}
          - {release: \(releases[1]), upstream: ubuntu}
          - {release: \(releases[2]), upstream: centos}
          - {release: \(releases[3]), upstream: amazon}

        """)
        let session = try Session(manifestPath: manifest, cacheDirectory: project.cache,
                                  rules: StubRepositoryRules(directory: project.repo, key: project.key, paths: project.paths))
        #expect(session.manifest.kernels.map(\.family) == [.debian, .ubuntu, .rhel, .rhel])
        let summary = try await session.build(patterns: [], options: BuildOptions(jobs: 2), reporter: PublishedLog())
        #expect(summary.succeeded)
        let server = try StaticServer(directory: project.repo)
        for release in releases {
            let fetched = try MargaritaShotgun.fetch(server.url, release: release, trusting: project.paths.publicKey, scratch: project.scratch,
                                                     into: project.scratch.file("ms-\(release)"))
            #expect(fetched.status == 0, "\(release): \(fetched.stdout)\(fetched.stderr)")
            #expect(FileManager.default.contents(atPath: project.scratch.file("ms-\(release)/lime-\(release).ko"))
                    == FileManager.default.contents(atPath: project.repo + "/modules/lime-\(release).ko"), "\(release)")
        }
        let verified = try project.verify(server.url)
        #expect(verified.status == 0 && verified.stdout.contains("4 module(s)"), "\(verified.stdout)\(verified.stderr)")
    }
}
