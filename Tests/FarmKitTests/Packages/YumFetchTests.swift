import FarmEngine
import FarmKit
import Foundation
import Testing

@Suite("Fetching and bundling yum kernels")
struct YumFetchTests {
    /// Crawls `repository` with an upstream written as `upstream` (its keyring or none), then
    /// rewrites the upstream to `buildUpstream` for the build; returns the manifest's path.
    func crawl(_ repository: LocalYumRepository, upstream: String) async throws -> String {
        let path = try repository.scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          centos:
            kind: yum
        \(upstream)
        modules: []
        kernels: []

        """)
        let result = try await Crawler.updateManifest(at: path, cacheDirectory: repository.scratch.file("crawl-cache"), prune: false,
                                                      aptRoot: repository.scratch.file("no-apt")).result
        #expect(result.failures.isEmpty, "\(result.failures)")
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        return path
    }

    func build(_ manifest: String, cache: String) async throws -> (BuildSummary, EventLog) {
        let log = EventLog()
        let session = try Session(manifestPath: manifest, cacheDirectory: cache, rules: FarmRules())
        return (try await session.build(patterns: [], options: BuildOptions(keepGoing: true), reporter: log), log)
    }

    /// A kernel pinned while its upstream had no keyring: once the manifest names one, the fetch
    /// checks the package's own signature, and a package changed after signing is refused there.
    @Test func theFetchOfAYumPackageChecksItsSignatureWhenTheUpstreamHasAKeyring() async throws {
        let repository = try LocalYumRepository(try Scratch())
        let tampered = try repository.kernelDevel(version: "3.10.0", release: "1160.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        try repository.kernelDevel(version: "3.10.0", release: "1160.2.1.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        // One byte of the signed header (its summary): the package still reads, only its signature tells.
        let data = try Data(contentsOf: URL(fileURLWithPath: tampered))
        var changed = data
        changed.replaceSubrange(try #require(data.range(of: Data("farm test package".utf8))), with: Data("farm test packagE".utf8))
        try changed.write(to: URL(fileURLWithPath: tampered))
        try repository.publish()
        let path = try await crawl(repository, upstream: "    mirror: \(repository.url)\n    suites: [os/x86_64]")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try Data(text.replacingOccurrences(of: "    suites: [os/x86_64]\n", with: "    suites: [os/x86_64]\n    keyring: \(repository.keyring)\n").utf8)
            .write(to: URL(fileURLWithPath: path))

        let (summary, log) = try await build(path, cache: repository.scratch.file("cache"))
        #expect(summary.failed == 1)
        let error = try #require(log.failed["fetch:kernel-devel-3.10.0-1160.el7.x86_64.rpm"]?.error)
        #expect(error.contains("kernel-devel-3.10.0-1160.el7.x86_64.rpm (its RSA header signature): the OpenPGP signature does not verify against \(repository.keyring)"), "\(error)")
        #expect(error.contains("the package is refused: it was changed after it was signed"), "\(error)")
        #expect(log.built.contains("bundle:3.10.0-1160.2.1.el7.x86_64@centos"), "\(log.built) \(log.failed)")
        #expect(log.skipped.contains("bundle:3.10.0-1160.el7.x86_64@centos"))
    }

    /// A mirrorlist's first base URL that serves the repository is used, by the crawl and by the fetch.
    @Test func aMirrorlistsFirstWorkingBaseURLServesTheCrawlAndTheFetch() async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.kernelDevel(version: "3.10.0", release: "1160.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        try repository.publish()
        let list = try repository.scratch.write("mirrorlist.txt", "# mirrors\nfile://\(repository.scratch.file("gone"))\n\n\(repository.url)\n")
        let path = try await crawl(repository, upstream: "    mirrorlist: file://\(list)\n    suites: [os/x86_64]\n    keyring: \(repository.keyring)")
        let kernel = try #require(try ManifestLoader.load(path: path).kernels.first)
        #expect(kernel.release == "3.10.0-1160.el7.x86_64")
        #expect(kernel.compiler == "gcc-4.8")

        let (summary, log) = try await build(path, cache: repository.scratch.file("cache"))
        #expect(summary.failed == 0, "\(log.failed)")
        #expect(log.built.contains("bundle:3.10.0-1160.el7.x86_64@centos"))
    }

    @Test func aFetchKeyNamesTheKeyringOnlyForAYumUpstreamWithOne() throws {
        let scratch = try Scratch()
        try scratch.write("keyring.gpg", "key bytes")
        let package = PackageReference(url: "Packages/kernel-devel-1-1.el7.x86_64.rpm", sha256: SHA256.hash("x"), size: 1)
        let manifest = try ManifestLoader.parse("""
        farm: 1
        upstreams:
          centos: {kind: yum, mirror: "file:///m", suites: [.], keyring: keyring.gpg}
          debian: {kind: apt, mirror: "file:///d", suites: [bookworm], keyring: keyring.gpg}

        """, path: scratch.file("manifest.yml"))
        let yum = try #require(manifest.upstream(named: "centos"))
        let apt = try #require(manifest.upstream(named: "debian"))
        let signed = FetchAction(package: package, urls: [], reason: nil, upstream: yum, manifestDirectory: scratch.path)
        #expect(signed.parameters.map(\.name) == ["file", "sha256", "size", "rpm-keyring"])
        #expect(signed.parameters.last?.value == SHA256.hash(Data("key bytes".utf8)).hex)
        #expect(FetchAction(package: package, urls: [], reason: nil, upstream: apt, manifestDirectory: scratch.path).parameters.map(\.name)
            == ["file", "sha256", "size"])
    }

    /// kernel-packer's repackage_redhat: the kernel's tree under usr/src/kernels/<release>, BUNDLE_DISTRO
    /// redhat, and nothing else the package holds; farm's build link beside it as for Debian.
    @Test func aRHELBundleHoldsTheKernelTreeOnlyAsKernelPackerLaysItOut() throws {
        let repository = try LocalYumRepository(try Scratch())
        let release = "4.18.0-553.el8_10.x86_64"
        let package = try repository.package("kernel-devel", version: "4.18.0", release: "553.el8_10", files: [
            "usr/src/kernels/\(release)/Makefile": "VERSION = 4\n",
            "usr/src/kernels/\(release)/scripts/mod/modpost": "#!/bin/sh\n",
            "usr/src/kernels/\(release)/.config": "CONFIG_CC_VERSION_TEXT=\"gcc (GCC) 8.5.0\"\n",
            "usr/share/doc/kernel-devel/README": "not headers\n",
        ])
        let scratch = repository.scratch
        try PackageExtractor.extract(package: package, into: scratch.file("staging"))
        let report = try BundleBuilder.build(stagingRoot: scratch.file("staging"), release: release, distro: "redhat",
                                             checksum: "0123abcd", output: scratch.file("bundle.tgz"))
        #expect(report.dropped == ["usr/share"])
        let listing = try runProcess("/usr/bin/tar", ["-tzf", scratch.file("bundle.tgz")]).stdout.split(separator: "\n").map(String.init)
        #expect(listing.sorted() == [
            "./BUNDLE_BUILD_DIR", "./BUNDLE_CHECKSUM", "./BUNDLE_DISTRO", "./BUNDLE_MAJOR", "./BUNDLE_MINOR", "./BUNDLE_UNAME", "./BUNDLE_VERSION",
            "./lib/", "./lib/modules/", "./lib/modules/\(release)/", "./lib/modules/\(release)/build",
            "./usr/", "./usr/src/", "./usr/src/kernels/", "./usr/src/kernels/\(release)/", "./usr/src/kernels/\(release)/.config",
            "./usr/src/kernels/\(release)/Makefile", "./usr/src/kernels/\(release)/scripts/", "./usr/src/kernels/\(release)/scripts/mod/",
            "./usr/src/kernels/\(release)/scripts/mod/modpost",
        ])
        try FileManager.default.createDirectory(atPath: scratch.file("tree"), withIntermediateDirectories: true)
        _ = try runProcess("/usr/bin/tar", ["-xzf", scratch.file("bundle.tgz"), "-C", scratch.file("tree")])
        let meta = try ["DISTRO", "BUILD_DIR", "UNAME", "VERSION", "MAJOR", "MINOR"].map { try scratch.read("tree/BUNDLE_" + $0) }
        #expect(meta == ["redhat", "./usr/src/kernels/\(release)", release, "4", "18", "0"])
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: scratch.file("tree/lib/modules/\(release)/build"))
            == "../../../usr/src/kernels/\(release)")
        #expect(try BundleTree(root: scratch.file("tree"), release: release).config()?.values["CONFIG_CC_VERSION_TEXT"] == "gcc (GCC) 8.5.0")
    }
}
