import FarmEngine
import FarmKit
import Foundation
import Testing

@Suite("Crawling yum repositories")
struct YumCrawlTests {
    func project(_ repository: LocalYumRepository, upstreams: String) throws -> String {
        try repository.scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
        \(upstreams)
        modules: []
        kernels: []

        """)
    }

    func crawl(_ manifest: String, _ repository: LocalYumRepository) async throws -> Crawler.Result {
        try await Crawler.updateManifest(at: manifest, cacheDirectory: repository.scratch.file("cache"), prune: false,
                                         aptRoot: repository.scratch.file("no-apt")).result
    }

    @Test func crawlPinsRHELKernelsWithTheirReleaseDistributionAndCompiler() async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.kernelDevel(version: "3.10.0", release: "1160.el7",
                                   linuxCompiler: "gcc version 4.8.5 20150623 (Red Hat 4.8.5-44) (GCC) ")
        try repository.kernelImage(version: "3.10.0", release: "1160.el7")
        try repository.kernelDevel(version: "4.18.0", release: "553.el8_10", ccVersionText: "gcc (GCC) 8.5.0 20210514 (Red Hat 8.5.0-22)", rpmv3: true)
        try repository.kernelImage("kernel-core", version: "4.18.0", release: "553.el8_10")
        try repository.kernelImage("kernel-modules", version: "4.18.0", release: "553.el8_10")
        try repository.kernelDevel(version: "4.18.0", release: "553.el8_10", name: "kernel-debug-devel")
        try repository.publish("os/x86_64")
        try repository.kernelDevel(version: "5.10.225", release: "213.878.amzn2", repository: "amzn/x86_64",
                                   ccVersionText: "gcc10-gcc (GCC) 10.5.0 20230707 (Red Hat 10.5.0-1)")
        try repository.kernelImage(version: "5.10.225", release: "213.878.amzn2", repository: "amzn/x86_64")
        try repository.publish("amzn/x86_64")
        let path = try project(repository, upstreams: """
          centos:
            kind: yum
            mirror: \(repository.url)
            suites: [os/x86_64]
            keyring: \(repository.keyring)
          amazon:
            kind: yum
            mirror: \(repository.url)/amzn
            suites: [x86_64]
            keyring: \(repository.keyring)
        """)

        let result = try await crawl(path, repository)
        #expect(result.failures.isEmpty, "\(result.failures)")
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        #expect(result.unmatched == ["centos/os/x86_64: kernel-debug-devel-4.18.0-553.el8_10.x86_64"])
        let manifest = try ManifestLoader.load(path: path)
        // Each kernel-devel the crawl read is in the store, so the build's fetch task downloads nothing.
        for kernel in manifest.kernels {
            #expect(FileManager.default.fileExists(atPath: ContentStore.path(in: repository.scratch.file("cache/cas"), of: kernel.packages[0].sha256)),
                    "\(kernel.release)")
        }
        #expect(manifest.kernels.map(\.release) == ["5.10.225-213.878.amzn2.x86_64", "3.10.0-1160.el7.x86_64", "4.18.0-553.el8_10.x86_64"])
        let el7 = try #require(manifest.kernels.first { $0.release == "3.10.0-1160.el7.x86_64" })
        #expect(el7.family == .rhel)
        #expect(el7.upstream == "centos")
        #expect(el7.suite == "os/x86_64")
        #expect(el7.distribution == "rhel-7")
        #expect(el7.compiler == "gcc-4.8")
        #expect(el7.version == "3.10.0-1160.el7")
        #expect(el7.packages.map(\.url) == ["os/x86_64/Packages/kernel-devel-3.10.0-1160.el7.x86_64.rpm"])
        #expect(el7.image?.url == "os/x86_64/Packages/kernel-3.10.0-1160.el7.x86_64.rpm")
        // Published for `uname -m` x86_64, as Margarita Shotgun asks for it.
        #expect(el7.debianArchitecture == "amd64")
        let (digest, size) = try SHA256.hash(fileAt: repository.root + "/" + el7.packages[0].url)
        #expect(el7.packages[0].sha256 == digest && el7.packages[0].size == size)

        let el8 = try #require(manifest.kernels.first { $0.release == "4.18.0-553.el8_10.x86_64" })
        #expect(el8.distribution == "rhel-8")
        #expect(el8.compiler == "gcc-8")
        #expect(el8.image?.url == "os/x86_64/Packages/kernel-core-4.18.0-553.el8_10.x86_64.rpm")
        let amazon = try #require(manifest.kernels.first { $0.release == "5.10.225-213.878.amzn2.x86_64" })
        #expect(amazon.distribution == "amzn-2")
        #expect(amazon.compiler == "gcc-10")
        #expect(amazon.packages.map(\.url) == ["x86_64/Packages/kernel-devel-5.10.225-213.878.amzn2.x86_64.rpm"])
    }

    @Test func anUpstreamsDistributionNamesItsKernelsDistribution() async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.kernelDevel(version: "3.10.0", release: "1160.119.1.el7", repository: ".", linuxCompiler: "gcc version 4.8.5 20150623 (Red Hat 4.8.5-44) (GCC) ")
        try repository.publish(".")
        let path = try project(repository, upstreams: """
          centos:
            kind: yum
            mirror: \(repository.url)
            suites: [.]
            distribution: centos-7
        """)
        let result = try await crawl(path, repository)
        #expect(result.failures.isEmpty, "\(result.failures)")
        let kernel = try #require(try ManifestLoader.load(path: path).kernels.first)
        #expect(kernel.release == "3.10.0-1160.119.1.el7.x86_64")
        #expect(kernel.distribution == "centos-7")
        #expect(kernel.packages.map(\.url) == ["Packages/kernel-devel-3.10.0-1160.119.1.el7.x86_64.rpm"])
    }

    /// The release is the tree's name under /usr/src/kernels, as kernel-packer takes it: a package
    /// whose version says otherwise (a Debian kernel repackaged) still gives what `uname -r` prints.
    @Test func theReleaseIsTheNameOfTheTreeTheKernelDevelHolds() async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.kernelDevel(version: "6.1.0", release: "41", ccVersionText: "gcc-12 (Debian 12.2.0-14) 12.2.0", tree: "6.1.0-41-amd64")
        try repository.publish()
        let path = try project(repository, upstreams: """
          local:
            kind: yum
            mirror: \(repository.url)
            suites: [os/x86_64]
            keyring: \(repository.keyring)
        """)
        let result = try await crawl(path, repository)
        #expect(result.failures.isEmpty, "\(result.failures)")
        let kernel = try #require(try ManifestLoader.load(path: path).kernels.first)
        #expect(kernel.release == "6.1.0-41-amd64")
        #expect(kernel.compiler == "gcc-12")
        #expect(kernel.version == "6.1.0-41")
        // A second crawl finds the same pin and changes nothing, without fetching the package again
        // (the bytes the mirror now serves under its name would not match the pin).
        try Data("not the package".utf8).write(to: URL(fileURLWithPath: repository.root + "/" + kernel.packages[0].url))
        let (again, changed) = try await Crawler.updateManifest(at: path, cacheDirectory: repository.scratch.file("cache"), prune: false,
                                                                aptRoot: repository.scratch.file("no-apt"))
        #expect(again.kernels.map(\.release) == ["6.1.0-41-amd64"])
        #expect(!changed, "\(again.warnings)")
    }

    @Test func anUnsignedRepomdIsRefusedWhenTheUpstreamHasAKeyring() async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.kernelDevel(version: "3.10.0", release: "1160.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        try repository.publish("os/x86_64", sign: false)
        let path = try project(repository, upstreams: """
          centos:
            kind: yum
            mirror: \(repository.url)
            suites: [os/x86_64]
            keyring: \(repository.keyring)
        """)
        let result = try await crawl(path, repository)
        let failure = try #require(result.failures.first)
        #expect(failure.hasPrefix("centos/os/x86_64: \(repository.url)/os/x86_64/repodata/repomd.xml.asc: cannot fetch the repository's signature"), "\(failure)")
        #expect(failure.contains("an unsigned repository is refused"))
        #expect(result.kernels.isEmpty)

        // Signed by a key the keyring lacks: refused too.
        try repository.publish("os/x86_64", sign: false)
        let other = try LocalYumRepository(try Scratch())
        try other.gpg(["--local-user", LocalYumRepository.key, "--detach-sign", "--armor", "--output",
                       repository.root + "/os/x86_64/repodata/repomd.xml.asc", repository.root + "/os/x86_64/repodata/repomd.xml"])
        let again = try await crawl(path, repository)
        let bad = try #require(again.failures.first)
        #expect(bad.contains("repodata/repomd.xml: the OpenPGP signature does not verify against \(repository.keyring)"), "\(bad)")
    }

    @Test func aTamperedRPMIsRefusedByItsOwnSignature() async throws {
        let repository = try LocalYumRepository(try Scratch())
        let payload = try repository.kernelDevel(version: "3.10.0", release: "1160.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        let header = try repository.kernelDevel(version: "3.10.0", release: "1160.2.1.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        let whole = try repository.kernelDevel(version: "3.10.0", release: "1160.3.1.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ", rpmv3: true)
        try repository.kernelDevel(version: "3.10.0", release: "1160.4.1.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        try repository.package("kernel-devel", version: "3.10.0", release: "1160.5.1.el7",
                               files: ["usr/src/kernels/3.10.0-1160.5.1.el7.x86_64/Makefile": "all:\n"], sign: false)
        // One byte of each: the last of the payload, one of the header's summary. The repository
        // is then regenerated and signed, so its sha256 pins match and only the RPM's signature can tell.
        try flipLastByte(payload)
        try replace("farm test package", with: "farm test packagE", in: header)
        try flipLastByte(whole)
        try repository.publish("os/x86_64")
        let path = try project(repository, upstreams: """
          centos:
            kind: yum
            mirror: \(repository.url)
            suites: [os/x86_64]
            keyring: \(repository.keyring)
        """)
        let result = try await crawl(path, repository)
        #expect(result.failures.isEmpty, "\(result.failures)")
        #expect(result.kernels.map(\.release) == ["3.10.0-1160.4.1.el7.x86_64"])
        // What the signature check refused never entered the store; the good one did.
        let stored = Set(((FileManager.default.enumerator(atPath: repository.scratch.file("cache/cas"))?.allObjects as? [String]) ?? [])
            .map { ($0 as NSString).lastPathComponent })
        for file in [payload, header, whole] {
            #expect(!stored.contains(try SHA256.hash(fileAt: file).digest.hex), "\(file) is in the store")
        }
        #expect(stored.contains(try #require(result.kernels.first).packages[0].sha256.hex))
        let warnings = result.warnings.joined(separator: "\n")
        #expect(warnings.contains("3.10.0-1160.el7.x86_64: kernel-devel-3.10.0-1160.el7.x86_64.rpm: its payload's sha256 is"), "\(warnings)")
        #expect(warnings.contains("the payload was changed after signing; the package is refused; left out"), "\(warnings)")
        #expect(warnings.contains("3.10.0-1160.2.1.el7.x86_64: kernel-devel-3.10.0-1160.2.1.el7.x86_64.rpm (its RSA header signature): the OpenPGP signature does not verify"), "\(warnings)")
        #expect(warnings.contains("3.10.0-1160.3.1.el7.x86_64: kernel-devel-3.10.0-1160.3.1.el7.x86_64.rpm (its PGP header+payload signature): the OpenPGP signature does not verify"), "\(warnings)")
        #expect(warnings.contains("3.10.0-1160.5.1.el7.x86_64: kernel-devel-3.10.0-1160.5.1.el7.x86_64.rpm: it carries no OpenPGP signature, and its upstream has a keyring"), "\(warnings)")
    }

    @Test func aRepositoryWithoutKernelsFailsTheCrawl() async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.package("bash", version: "4.2.46", release: "34.el7", files: ["usr/bin/not-bash": "x\n"])
        try repository.publish("os/x86_64")
        let path = try project(repository, upstreams: """
          centos:
            kind: yum
            mirror: \(repository.url)
            suites: [os/x86_64]
            keyring: \(repository.keyring)
        """)
        let result = try await crawl(path, repository)
        #expect(result.failures == ["centos/os/x86_64: read, but no kernel found (x86_64): looked for kernel-devel packages (family rhel);"
                                    + " check 'mirror', 'suites' and 'family:' in the manifest"])
    }

    @Test(arguments: ["gz", "xz", "zstd"])
    func readsPrimaryMetadataInEachCompressionCreaterepoWrites(_ compression: String) async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.kernelDevel(version: "3.10.0", release: "1160.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        let directory = repository.root + "/os/x86_64"
        // Debian 12's createrepo_c writes gz and xz; a zstd primary, as createrepo_c 1.0 writes
        // by default, is made from the gz one with zstd and repomd.xml pointed at it.
        let made = try runProcess("/usr/bin/createrepo_c", ["--quiet", "--no-database", "--general-compress-type", compression == "zstd" ? "gz" : compression, directory])
        #expect(made.status == 0, "\(made.stderr)")
        if compression == "zstd" { try recompressPrimaryWithZstd(directory) }
        let repomd = try String(contentsOfFile: directory + "/repodata/repomd.xml", encoding: .utf8)
        #expect(repomd.contains("primary.xml.\(compression == "zstd" ? "zst" : compression)\""), "\(repomd)")
        #expect(!repomd.contains("primary_db"))
        let path = try project(repository, upstreams: """
          centos:
            kind: yum
            mirror: \(repository.url)
            suites: [os/x86_64]
        """)
        let result = try await crawl(path, repository)
        #expect(result.failures.isEmpty, "\(result.failures)")
        #expect(result.kernels.map(\.release) == ["3.10.0-1160.el7.x86_64"])
    }

    /// farm pins by sha256: a package listed with a sha1 only is left out by name, and a
    /// repository whose repomd lists primary by sha1 is refused.
    @Test func sha1OnlyEntriesAreLeftOutAndASha1RepomdIsRefused() async throws {
        let repository = try LocalYumRepository(try Scratch())
        try repository.kernelDevel(version: "3.10.0", release: "1160.el7", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        try repository.kernelDevel(version: "3.10.0", release: "1160.2.1.el7", repository: "sha1/x86_64", linuxCompiler: "gcc version 4.8.5 (GCC) ")
        try repository.publish("os/x86_64")
        let sha1 = try runProcess("/usr/bin/createrepo_c", ["--quiet", "--no-database", "--checksum", "sha1", "--repomd-checksum", "sha256",
                                                            repository.root + "/sha1/x86_64"])
        #expect(sha1.status == 0, "\(sha1.stderr)")
        let path = try project(repository, upstreams: """
          centos:
            kind: yum
            mirror: \(repository.url)
            suites: [os/x86_64, sha1/x86_64]
        """)
        let result = try await crawl(path, repository)
        #expect(result.warnings.contains { $0.contains("sha1/x86_64/repodata/") && $0.hasSuffix("kernel-devel-3.10.0-1160.2.1.el7.x86_64 (checksum sha1) has no sha256 checksum; left out (farm pins by sha256 only)") },
                "\(result.warnings)")
        #expect(result.kernels.map(\.release) == ["3.10.0-1160.el7.x86_64"])

        let all = try runProcess("/usr/bin/createrepo_c", ["--quiet", "--no-database", "--checksum", "sha1", repository.root + "/sha1/x86_64"])
        #expect(all.status == 0, "\(all.stderr)")
        let again = try await crawl(path, repository)
        #expect(again.failures.contains { $0.hasPrefix("centos/sha1/x86_64: \(repository.url)/sha1/x86_64/repodata/repomd.xml: the primary entry's checksum is 'sha1'") },
                "\(again.failures)")
    }

    @Test func aRepomdOrMirrorlistThatNeverEndsIsCutOff() throws {
        let scratch = try Scratch()
        try FileManager.default.createDirectory(atPath: scratch.file("www"), withIntermediateDirectories: true)
        let server = try FlakyServer(directory: scratch.file("www"), failures: 0, scratch: scratch)
        defer { server.stop() }
        let manifest = try ManifestLoader.parse("""
        farm: 1
        upstreams:
          centos: {kind: yum, mirror: "http://127.0.0.1:\(server.port)/endless", suites: [os]}

        """, path: scratch.file("manifest.yml"))
        let upstream = try #require(manifest.upstream(named: "centos"))
        let repository = YumRepository(mirror: upstream.mirror, keyring: nil)
        let error = #expect(throws: FarmError.self) {
            try repository.index(of: upstream, suite: "os", component: "main", architecture: "x86_64", workDirectory: scratch.path,
                                 downloader: Downloader(), relevant: { _ in true })
        }
        #expect(error?.description.contains("http://127.0.0.1:\(server.port)/endless/os/repodata/repomd.xml: the server sent more than the 16 MiB farm allows for a repomd.xml") == true,
                "\(String(describing: error))")
        let listed = YumRepository(mirror: nil, mirrorlist: "http://127.0.0.1:\(server.port)/endless/mirrorlist", keyring: nil)
        let listError = #expect(throws: FarmError.self) { try listed.baseURLs(workDirectory: scratch.path, downloader: Downloader()) }
        #expect(listError?.description.contains("the server sent more than the 1 MiB farm allows for a mirrorlist") == true, "\(String(describing: listError))")
    }

    func recompressPrimaryWithZstd(_ directory: String) throws {
        let repomdPath = directory + "/repodata/repomd.xml"
        var repomd = try String(contentsOfFile: repomdPath, encoding: .utf8)
        let gz = try #require(try FileManager.default.contentsOfDirectory(atPath: directory + "/repodata").first { $0.hasSuffix("-primary.xml.gz") })
        let (oldDigest, oldSize) = try SHA256.hash(fileAt: directory + "/repodata/" + gz)
        let xml = directory + "/repodata/primary.xml"
        #expect(try runProcess("/bin/sh", ["-c", "gzip -dc '\(directory)/repodata/\(gz)' > '\(xml)' && zstd -q --rm '\(xml)'"]).status == 0)
        let (digest, size) = try SHA256.hash(fileAt: xml + ".zst")
        repomd = repomd.replacingOccurrences(of: "repodata/\(gz)", with: "repodata/primary.xml.zst")
            .replacingOccurrences(of: ">\(oldDigest.hex)<", with: ">\(digest.hex)<")
            .replacingOccurrences(of: "<size>\(oldSize)</size>", with: "<size>\(size)</size>")
        try Data(repomd.utf8).write(to: URL(fileURLWithPath: repomdPath))
    }

    func flipLastByte(_ path: String) throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[data.count - 1] ^= 0x01
        try data.write(to: URL(fileURLWithPath: path))
    }

    func replace(_ text: String, with replacement: String, in path: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let range = try #require(data.range(of: Data(text.utf8)))
        var changed = data
        changed.replaceSubrange(range, with: Data(replacement.utf8))
        try changed.write(to: URL(fileURLWithPath: path))
    }
}
