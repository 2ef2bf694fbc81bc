import FarmEngine
import FarmKit
import Foundation
import Testing

@Suite("Crawling apt archives")
struct CrawlTests {
    static let manifestText = """
    # A hand-written comment that the crawl must keep.
    farm: 1
    upstreams:
      debian:
        kind: apt
        mirror: apt   # the host's sources
        suites: [testsuite, testsuite-security]
    modules: [lime]

    # Kernels below are the crawl's.
    kernels: []

    publish:
      dir: repo
    """

    static let recipe = """
    farm: 1
    source: {package: lime-forensics-dkms}
    build: make
    module: lime.ko
    output: lime-{release}.ko

    """

    func project(_ archive: LocalAptArchive) throws -> String {
        try archive.scratch.write("project/recipes/lime.yml", CrawlTests.recipe)
        return try archive.scratch.write("project/manifest.yml", CrawlTests.manifestText)
    }

    func crawl(_ manifest: String, _ archive: LocalAptArchive, prune: Bool = false) async throws -> (Crawler.Result, Bool) {
        try await Crawler.updateManifest(at: manifest, cacheDirectory: archive.scratch.file("cache"), prune: prune, aptRoot: archive.aptRoot)
    }

    @Test func discoversKernelsAndPinsTheirPackages() async throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.kernel(abi: "6.1.0-40", version: "6.1.150-1")
        try archive.kernel(abi: "6.1.0-40", flavour: "cloud-amd64", version: "6.1.150-1")
        try archive.package("lime-forensics-dkms", version: "1.9.1-5", architecture: "all", source: "lime-forensics")
        try archive.package("linux-headers-amd64", version: "6.1.150-1", depends: "linux-headers-6.1.0-40-amd64 (= 6.1.150-1)")
        try archive.publish(suite: "testsuite")
        try archive.kernel(abi: "6.1.0-41", version: "6.1.151-1", suite: "testsuite-security")
        try archive.publish(suite: "testsuite-security")
        let path = try project(archive)

        let (result, changed) = try await crawl(path, archive)
        #expect(changed)
        #expect(result.failures.isEmpty, "\(result.failures)")
        // The meta package linux-headers-amd64 is not a kernel, nor a package left unmatched.
        #expect(result.unmatched.isEmpty, "\(result.unmatched)")
        #expect(result.kernels.map(\.release) == ["6.1.0-40-amd64", "6.1.0-40-cloud-amd64", "6.1.0-41-amd64"])

        let manifest = try ManifestLoader.load(path: path)
        let kernel = try #require(manifest.kernels.first { $0.release == "6.1.0-41-amd64" })
        #expect(kernel.suite == "testsuite-security")
        #expect(kernel.distribution == "debian-12")
        #expect(kernel.version == "6.1.151-1")
        #expect(kernel.compiler == "linux-compiler-gcc-12-x86")
        #expect(kernel.packages.map { ($0.url as NSString).lastPathComponent } == [
            "linux-headers-6.1.0-41-amd64_6.1.151-1_amd64.deb", "linux-headers-6.1.0-41-common_6.1.151-1_all.deb",
            "linux-kbuild-6.1_6.1.151-1_amd64.deb",
        ])
        for package in kernel.packages + [try #require(kernel.image)] {
            let file = archive.root + "-security/" + package.url
            let (digest, size) = try SHA256.hash(fileAt: file)
            #expect(package.sha256 == digest)
            #expect(package.size == size)
        }
        // The older kernel's kbuild dependency (>= 6.1.150-1) is met by the exact version.
        let older = try #require(manifest.kernels.first { $0.release == "6.1.0-40-amd64" })
        #expect(older.packages[2].url.hasSuffix("linux-kbuild-6.1_6.1.150-1_amd64.deb"))
        #expect(manifest.packages.map(\.name) == ["lime-forensics-dkms"])
        #expect(manifest.packages.first?.version == "1.9.1-5")

        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.hasPrefix("# A hand-written comment that the crawl must keep.\nfarm: 1\n"))
        #expect(text.contains("    mirror: apt   # the host's sources\n"))
        #expect(text.contains("# Kernels below are the crawl's.\nkernels:\n  - release: 6.1.0-40-amd64\n"))
        #expect(text.hasSuffix("publish:\n  dir: repo\n"))

        let (_, again) = try await crawl(path, archive)
        #expect(!again)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == text)
    }

    @Test func refusesAnIndexWhoseSignatureDoesNotVerify() async throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.kernel(abi: "6.1.0-40", version: "6.1.150-1")
        try archive.publish(suite: "testsuite")
        try archive.kernel(abi: "6.1.0-41", version: "6.1.151-1", suite: "testsuite-security")
        try archive.publish(suite: "testsuite-security")
        // Tamper with the signed text: the Release now names a different Packages.xz digest.
        let inRelease = archive.root + "/dists/testsuite/InRelease"
        var text = try String(contentsOfFile: inRelease, encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasSuffix("main/binary-amd64/Packages.xz") })
        text = text.replacingOccurrences(of: String(line), with: " " + String(repeating: "0", count: 64) + String(line.dropFirst(65)))
        try Data(text.utf8).write(to: URL(fileURLWithPath: inRelease))
        let path = try project(archive)

        let (result, _) = try await crawl(path, archive)
        let failure = try #require(result.failures.first)
        #expect(failure.hasPrefix("debian/testsuite: file://\(archive.root)/dists/testsuite/InRelease: the signature does not verify"), "\(failure)")
        #expect(failure.contains("the index is not used"))
        #expect(result.kernels.map(\.release) == ["6.1.0-41-amd64"])
    }

    @Test func aFailedSuiteKeepsItsKernelsAndPruneIsExplicit() async throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.kernel(abi: "6.1.0-40", version: "6.1.150-1")
        try archive.kernel(abi: "6.1.0-39", version: "6.1.149-1")
        try archive.publish(suite: "testsuite")
        try archive.kernel(abi: "6.1.0-41", version: "6.1.151-1", suite: "testsuite-security")
        try archive.publish(suite: "testsuite-security")
        let path = try project(archive)
        _ = try await crawl(path, archive)

        // The security mirror goes away: its kernel stays, marked with a time.
        try FileManager.default.moveItem(atPath: archive.root + "-security", toPath: archive.root + "-gone")
        let (down, _) = try await crawl(path, archive)
        #expect(down.failures.count == 1)
        #expect(down.missing.map(\.release) == ["6.1.0-41-amd64"])
        let kept = try #require(try ManifestLoader.load(path: path).kernels.first { $0.release == "6.1.0-41-amd64" })
        #expect(kept.lastSeen != nil)
        #expect(kept.packages.count == 3)

        // Even --prune never removes what a failed suite listed.
        _ = try await crawl(path, archive, prune: true)
        #expect(try ManifestLoader.load(path: path).kernels.contains { $0.release == "6.1.0-41-amd64" })

        // Upstream drops 6.1.0-39: kept and marked without --prune, removed with it.
        try archive.publish(suite: "testsuite") { !$0.contains("6.1.0-39") }
        let (kept39, _) = try await crawl(path, archive)
        #expect(kept39.missing.map(\.release).contains("6.1.0-39-amd64"))
        let (pruned, _) = try await crawl(path, archive, prune: true)
        #expect(pruned.removed == [KernelName(release: "6.1.0-39-amd64", upstream: "debian")])
        #expect(try ManifestLoader.load(path: path).kernels.map(\.release) == ["6.1.0-40-amd64", "6.1.0-41-amd64"])
    }

    @Test func packagesComeFromWhicheverArchiveHasThemAndUnservedKernelsAreLeftOut() async throws {
        let archive = try LocalAptArchive(try Scratch())
        // The security kernel's kbuild package is only in the main archive.
        try archive.package("linux-kbuild-6.1", version: "6.1.160-1", suite: "testsuite", files: ["usr/lib/linux-kbuild-6.1/README": "kbuild\n"])
        try archive.publish(suite: "testsuite")
        try archive.package("linux-headers-6.1.0-45-amd64", version: "6.1.160-1",
                            depends: "linux-headers-6.1.0-45-common (= 6.1.160-1), linux-kbuild-6.1 (>= 6.1.160-1), linux-compiler-gcc-12-x86",
                            suite: "testsuite-security", files: ["usr/src/linux-headers-6.1.0-45-amd64/Makefile": "include /usr/src/linux-headers-6.1.0-45-common/Makefile\n"])
        try archive.package("linux-headers-6.1.0-45-common", version: "6.1.160-1", architecture: "all", suite: "testsuite-security",
                            files: ["usr/src/linux-headers-6.1.0-45-common/Makefile": "# common\n"])
        // Listed by the index, but the mirror lost the file.
        try archive.kernel(abi: "6.1.0-46", version: "6.1.161-1", suite: "testsuite-security")
        try archive.publish(suite: "testsuite-security")
        unlink(archive.root + "-security/pool/main/l/linux/linux-headers-6.1.0-46-common_6.1.161-1_all.deb")
        let path = try project(archive)

        let (result, _) = try await crawl(path, archive)
        #expect(result.kernels.map(\.release) == ["6.1.0-45-amd64"])
        #expect(result.warnings.contains { $0.hasPrefix("6.1.0-46-amd64: listed by debian/testsuite-security but no mirror serves linux-headers-6.1.0-46-common_6.1.161-1_all.deb") },
                "\(result.warnings)")

        let session = try Session(manifestPath: path, cacheDirectory: nil, rules: FarmRules(aptRoot: archive.aptRoot))
        let (summary, bundle) = try await session.buildOne(.bundle(kernel: KernelName(release: "6.1.0-45-amd64", upstream: "debian")), output: "bundle", into: archive.scratch.file("out"),
                                                          as: "bundle.tgz", options: BuildOptions(), reporter: EventLog())
        #expect(summary.succeeded)
        #expect(bundle != nil)
        let (_, log) = try session.log("fetch:linux-kbuild-6.1_6.1.160-1_amd64.deb")
        #expect(log.contains("fetched file://\(archive.root)/pool/main/l/linux/linux-kbuild-6.1_6.1.160-1_amd64.deb"), "\(log)")
    }

    @Test(arguments: [
        ("1.0", "1.0-1"), ("1.0~rc1", "1.0"), ("6.1.150-1", "6.1.151-1"), ("6.12.95-1~bpo12+1", "6.12.95-1"),
        ("2.0", "1:0.1"), ("1.0a", "1.0+"), ("5.10.9-1", "5.10.10-1"), ("6.1.0", "6.1.0+b1"),
    ])
    func versionsOrderLikeDpkg(_ lower: String, _ higher: String) throws {
        #expect(DebianVersion.compare(lower, higher) < 0)
        #expect(DebianVersion.compare(higher, lower) > 0)
        let dpkg = try runProcess("/usr/bin/dpkg", ["--compare-versions", lower, "lt", higher])
        #expect(dpkg.status == 0, "dpkg disagrees: \(lower) < \(higher)")
    }

    @Test func readsOneLineAndDeb822Sources() throws {
        let scratch = try Scratch()
        try scratch.write("etc/os-release", "NAME=\"Debian\"\nVERSION_CODENAME=bookworm\n")
        try scratch.write("etc/apt/sources.list", "# comment\ndeb [arch=amd64 signed-by=/k/main.gpg] http://mirror.test/debian bookworm main contrib\ndeb-src http://mirror.test/debian bookworm main\n")
        try scratch.write("etc/apt/sources.list.d/security.sources", "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /k/security.gpg\n\nTypes: deb\nEnabled: no\nURIs: http://off.test/\nSuites: bookworm\n")
        try scratch.write("etc/apt/sources.list.d/old.list.disabled", "deb http://ignored.test/ bookworm main\n")
        let sources = try AptSources.load(root: scratch.path)
        #expect(sources.codename == "bookworm")
        #expect(sources.entries.count == 2)
        #expect(try sources.entry(for: "trixie").uri == "http://mirror.test/debian")
        #expect(try sources.entry(for: "trixie").signedBy == "/k/main.gpg")
        #expect(try sources.entry(for: "bullseye-security").uri == "http://mirror.test/debian-security")
        #expect(try sources.entry(for: "bookworm-security").signedBy == "/k/security.gpg")
    }

    @Test func manifestWriterKeepsOtherSectionsAndComments() {
        let text = "farm: 1\n# about kernels\nkernels:\n  - release: old\n    upstream: x\n\n# about publish\npublish:\n  dir: repo\n"
        let replaced = ManifestWriter.replacing(section: "kernels", with: "kernels: []\n", in: text)
        #expect(replaced == "farm: 1\n# about kernels\nkernels: []\n\n# about publish\npublish:\n  dir: repo\n")
        let inserted = ManifestWriter.replacing(section: "packages", with: "packages: {}\n", in: replaced, before: "kernels")
        #expect(inserted == "farm: 1\npackages: {}\n\n# about kernels\nkernels: []\n\n# about publish\npublish:\n  dir: repo\n")
    }
}

/// A crawl of an upstream that did not change is quick: an index whose signed Release is the
/// one of the last crawl is not fetched or parsed again, and a pin found served within a day is
/// not asked again; a changed Release is read in full.
struct CrawlMemoryTests {
    @Test func anUnchangedReleaseIsNotReadAgainAndAServedPinIsNotAskedAgain() async throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.kernel(abi: "6.1.0-40", version: "6.1.150-1")
        try archive.package("lime-forensics-dkms", version: "1.9.1-5", architecture: "all", source: "lime-forensics")
        try archive.publish(suite: "testsuite")
        try archive.kernel(abi: "6.1.0-41", version: "6.1.151-1", suite: "testsuite-security")
        try archive.publish(suite: "testsuite-security")
        let tests = CrawlTests()
        let path = try tests.project(archive)
        let (first, _) = try await tests.crawl(path, archive)
        #expect(first.failures.isEmpty && first.kernels.count == 2, "\(first.failures)")

        // The Packages files and a pinned package vanish from the mirror behind unchanged Releases:
        // only a crawl that fetches the index again, or asks for the pin again, can notice.
        for suite in ["testsuite", "testsuite-security"] {
            let directory = (suite == "testsuite" ? archive.root : archive.root + "-security") + "/dists/\(suite)/main/binary-amd64"
            for name in try FileManager.default.contentsOfDirectory(atPath: directory) where name.hasPrefix("Packages") {
                try FileManager.default.removeItem(atPath: directory + "/" + name)
            }
        }
        let kbuild = try #require(first.kernels.first { $0.release == "6.1.0-40-amd64" }?.packages.last)
        try FileManager.default.removeItem(atPath: archive.root + "/" + kbuild.url)
        let (second, changed) = try await tests.crawl(path, archive)
        #expect(second.failures.isEmpty, "\(second.failures)")
        #expect(!changed && second.kernels.map(\.release) == first.kernels.map(\.release) && second.unserved.isEmpty)

        // A new Release (a new kernel published) is read in full.
        try archive.kernel(abi: "6.1.0-42", version: "6.1.152-1", suite: "testsuite-security")
        try archive.publish(suite: "testsuite-security")
        let (third, _) = try await tests.crawl(path, archive)
        #expect(third.added.map(\.release) == ["6.1.0-42-amd64"], "\(third.failures) \(third.warnings)")
    }
}
