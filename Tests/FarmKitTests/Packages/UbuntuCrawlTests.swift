import FarmEngine
import FarmKit
import Foundation
import Testing

/// `farm crawl` on Ubuntu-format archives built by the test (dpkg-deb, dpkg-scanpackages, gpg),
/// run through the real farm binary.
@Suite("Crawling Ubuntu archives")
struct UbuntuCrawlTests {
    /// An upstream per (name, suite), all on the fixture archive, with its keyring.
    func project(_ archive: LocalAptArchive, upstreams: [(name: String, suite: String)] = [("ubuntu", "xenial")],
                 family: String? = "ubuntu") throws -> String {
        try archive.scratch.write("project/recipes/lime.yml", CrawlTests.recipe)
        var text = "farm: 1\nupstreams:\n"
        for upstream in upstreams {
            text += "  \(upstream.name):\n    kind: apt\n" + (family.map { "    family: \($0)\n" } ?? "")
            text += "    mirror: file://\(archive.root)\n    keyring: \(archive.keyring)\n    suites: [\(upstream.suite)]\n"
        }
        return try archive.scratch.write("project/manifest.yml", text + "modules: [lime]\nkernels: []\n")
    }

    func farm(_ arguments: [String], _ archive: LocalAptArchive) throws -> ProcessResult {
        try runProcess(Products.farm, arguments + ["--manifest", archive.scratch.file("project/manifest.yml"),
                                                   "--cache", archive.scratch.file("cache")], environment: ["CI": "true"])
    }

    func xenial(_ archive: LocalAptArchive) throws {
        try archive.ubuntuKernel(abi: "4.4.0-210", version: "4.4.0-210.242")
        try archive.ubuntuKernel(abi: "4.4.0-1128", flavour: "aws", derivative: "aws", version: "4.4.0-1128.142")
        // Not a layout any rule knows: reported by name.
        try archive.package("linux-headers-4.4.0-99-oddity", version: "4.4.0-99.1", depends: "libc6", suite: "xenial")
        try archive.publish(suite: "xenial", version: "16.04", codename: "xenial")
    }

    @Test func crawlPinsUbuntuKernelsWithTheirDistributionAndCompiler() throws {
        let archive = try LocalAptArchive(try Scratch())
        try xenial(archive)
        let path = try project(archive)

        let crawl = try farm(["crawl"], archive)
        #expect(crawl.status == 0, "\(crawl.stdout)\(crawl.stderr)")
        #expect(crawl.stdout.contains("new kernel: 4.4.0-210-generic@ubuntu\n"), "\(crawl.stdout)")
        #expect(crawl.stdout.contains("new kernel: 4.4.0-1128-aws@ubuntu\n"), "\(crawl.stdout)")
        #expect(crawl.stdout.contains("warning: no rule of its family takes ubuntu/xenial: linux-headers-4.4.0-99-oddity\n"), "\(crawl.stdout)")
        // Meta packages (linux-headers-generic, linux-headers-aws) are neither kernels nor noise.
        #expect(!crawl.stdout.contains("takes ubuntu/xenial: linux-headers-generic"), "\(crawl.stdout)")
        #expect(!crawl.stdout.contains("takes ubuntu/xenial: linux-headers-aws"), "\(crawl.stdout)")

        let manifest = try ManifestLoader.load(path: path)
        #expect(manifest.kernels.map(\.release) == ["4.4.0-210-generic", "4.4.0-1128-aws"])
        let generic = try #require(manifest.kernels.first { $0.release == "4.4.0-210-generic" })
        #expect(generic.upstream == "ubuntu")
        #expect(generic.family == .ubuntu)
        #expect(generic.suite == "xenial")
        #expect(generic.distribution == "ubuntu-16.04")
        #expect(generic.version == "4.4.0-210.242")
        // Ubuntu's headers depend on no compiler: it was read from compile.h (gcc 5.4.0).
        #expect(generic.compiler == "gcc-5")
        #expect(generic.packages.map { ($0.url as NSString).lastPathComponent } == [
            "linux-headers-4.4.0-210-generic_4.4.0-210.242_amd64.deb", "linux-headers-4.4.0-210_4.4.0-210.242_all.deb",
        ])
        #expect(generic.image.map { ($0.url as NSString).lastPathComponent } == "linux-image-4.4.0-210-generic_4.4.0-210.242_amd64.deb")
        #expect(generic.imageModules.map { ($0.url as NSString).lastPathComponent } == "linux-modules-4.4.0-210-generic_4.4.0-210.242_amd64.deb")
        let aws = try #require(manifest.kernels.first { $0.release == "4.4.0-1128-aws" })
        #expect(aws.packages.map { ($0.url as NSString).lastPathComponent } == [
            "linux-headers-4.4.0-1128-aws_4.4.0-1128.142_amd64.deb", "linux-aws-headers-4.4.0-1128_4.4.0-1128.142_all.deb",
        ])
        #expect(aws.compiler == "gcc-5")
        for package in generic.packages + aws.packages + [try #require(generic.image), try #require(generic.imageModules)] {
            let (digest, size) = try SHA256.hash(fileAt: archive.root + "/" + package.url)
            #expect(package.sha256 == digest && package.size == size)
        }

        // The headers downloaded to read the compiler are in the CAS: the build's fetch is a hit.
        let objects = ContentStore(reading: archive.scratch.file("cache/cas"))
        #expect(objects.isPresent(generic.packages[0].sha256))
        #expect(!objects.isPresent(generic.packages[1].sha256), "only the flavour headers are downloaded")

        // Crawled again with the same pins: the compiler is kept, nothing is downloaded.
        unlink(objects.path(of: generic.packages[0].sha256))
        let again = try farm(["crawl"], archive)
        #expect(again.status == 0 && again.stdout.contains("unchanged"), "\(again.stdout)\(again.stderr)")
        #expect(!objects.isPresent(generic.packages[0].sha256))
        #expect(try ManifestLoader.load(path: path).kernels.map(\.compiler) == ["gcc-5", "gcc-5"])
    }

    @Test(arguments: [
        ("", "gcc version 5.4.0 20160609 (Ubuntu 5.4.0-6ubuntu1~16.04.12) ", "gcc-5"),
        ("", "gcc version 4.8.4 (Ubuntu 4.8.4-2ubuntu1~14.04.4) ", "gcc-4.8"),
        ("CONFIG_CC_VERSION_TEXT=\"gcc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0\"\n", "gcc version 9.9.9 (not this one) ", "gcc-11"),
        ("CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0\"\n", "", "gcc-12"),
    ])
    func theCompilerIsReadFromTheHeadersConfigOrCompileH(_ config: String, _ compileH: String, _ expected: String) throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.ubuntuKernel(abi: "4.4.0-210", version: "4.4.0-210.242", compiler: compileH, config: config)
        let deb = archive.root + "/pool/main/l/linux/linux-headers-4.4.0-210-generic_4.4.0-210.242_amd64.deb"
        #expect(try Crawler.compiler(ofPackageAt: deb) == expected)
    }

    /// A user who forgets `family: ubuntu` gets Debian's rules on an Ubuntu archive: the suite
    /// holds no kernel for them, and the crawl says so and fails instead of pinning nothing.
    @Test func aSuiteThatYieldsNoKernelFailsTheCrawl() throws {
        let archive = try LocalAptArchive(try Scratch())
        try xenial(archive)
        let path = try project(archive, family: nil)
        let before = try String(contentsOfFile: path, encoding: .utf8)

        let crawl = try farm(["crawl"], archive)
        #expect(crawl.status == 1, "\(crawl.stdout)\(crawl.stderr)")
        #expect(crawl.stderr.contains("farm: crawl failed for ubuntu/xenial: read, but no kernel found in main (amd64): looked for linux-headers-<abi>-<flavour>"),
                "\(crawl.stderr)")
        #expect(crawl.stderr.contains("(family debian); 3 headers package(s) matched no rule"), "\(crawl.stderr)")
        #expect(crawl.stdout.contains("warning: no rule of its family takes ubuntu/xenial: linux-headers-4.4.0-210-generic"), "\(crawl.stdout)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == before)

        // --json says it too, and still exits 1 with the reason on stderr.
        let json = try farm(["crawl", "--json"], archive)
        #expect(json.status == 1)
        #expect(json.stderr.contains("farm: crawl failed for ubuntu/xenial: read, but no kernel found"), "\(json.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.stdout)")
        #expect((object["failures"] as? [String])?.first?.hasPrefix("ubuntu/xenial: read, but no kernel found") == true, "\(json.stdout)")
        #expect((object["unmatched"] as? [String])?.count == 3)
    }

    /// `--json`: one object a script can read, naming each kernel by upstream and release.
    @Test func crawlJSONListsAddedPrunedMissingAndUnservedKernels() throws {
        let archive = try LocalAptArchive(try Scratch())
        try xenial(archive)
        _ = try project(archive)
        func json(_ arguments: [String]) throws -> [String: Any] {
            let result = try farm(["crawl", "--json"] + arguments, archive)
            #expect(result.stdout.split(separator: "\n").count == 1, "\(result.stdout)")
            return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)\(result.stderr)")
        }
        func kernels(_ object: [String: Any], _ key: String) -> [String] {
            (object[key] as? [[String: String]] ?? []).map { "\($0["upstream"] ?? "?")/\($0["release"] ?? "?")" }
        }

        let first = try json([])
        #expect(kernels(first, "added") == ["ubuntu/4.4.0-210-generic", "ubuntu/4.4.0-1128-aws"])
        #expect(first["unmatched"] as? [String] == ["ubuntu/xenial: linux-headers-4.4.0-99-oddity"])
        #expect(first["failures"] as? [String] == [])
        #expect(first["changed"] as? Bool == true)

        // The aws kernel leaves the index; a new kernel's headers are listed but not served.
        try archive.ubuntuKernel(abi: "4.4.0-211", version: "4.4.0-211.243")
        try archive.publish(suite: "xenial", version: "16.04", codename: "xenial") { !$0.contains("1128") }
        unlink(archive.root + "/pool/main/l/linux/linux-headers-4.4.0-211_4.4.0-211.243_all.deb")
        let second = try json([])
        #expect(kernels(second, "missing") == ["ubuntu/4.4.0-1128-aws"])
        #expect(kernels(second, "unserved") == ["ubuntu/4.4.0-211-generic"])
        #expect(kernels(second, "added") == [])
        #expect((second["warnings"] as? [String] ?? []).contains { $0.contains("no mirror serves linux-headers-4.4.0-211_4.4.0-211.243_all.deb") })

        let pruned = try json(["--prune"])
        #expect(kernels(pruned, "pruned") == ["ubuntu/4.4.0-1128-aws"])
        #expect(pruned["kernels"] as? Int == 1)
    }

    /// xenial's `4.4.0-45-generic` and trusty's HWE kernel of the same release are two kernels:
    /// both are pinned, and pruning one upstream's leaves the other's.
    @Test func theSameReleaseFromTwoUpstreamsIsTwoKernels() throws {
        let archive = try LocalAptArchive(try Scratch())
        try archive.ubuntuKernel(abi: "4.4.0-45", version: "4.4.0-45.66", suite: "xenial")
        try archive.publish(suite: "xenial", version: "16.04", codename: "xenial")
        try archive.ubuntuKernel(abi: "4.4.0-45", derivative: "lts-xenial", version: "4.4.0-45.66~14.04.1", suite: "trusty")
        try archive.publish(suite: "trusty", version: "14.04", codename: "trusty") { $0.contains("~14.04") }
        let path = try project(archive, upstreams: [("xenial", "xenial"), ("trusty", "trusty")])

        let crawl = try farm(["crawl"], archive)
        #expect(crawl.status == 0, "\(crawl.stdout)\(crawl.stderr)")
        let manifest = try ManifestLoader.load(path: path)
        #expect(manifest.kernels.map(\.name.description) == ["4.4.0-45-generic@trusty", "4.4.0-45-generic@xenial"])
        #expect(manifest.kernels.map(\.distribution) == ["ubuntu-14.04", "ubuntu-16.04"])
        #expect(manifest.kernels.map(\.version) == ["4.4.0-45.66~14.04.1", "4.4.0-45.66"])
    }
}
