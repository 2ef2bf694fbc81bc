import FarmEngine
import FarmKit
import Foundation
import Testing

/// Against Debian's real archive, through the host's apt sources. `.ci/run` runs these; without
/// apt sources naming a Debian mirror they skip and say so.
let hostHasDebianSources: Bool = {
    guard let sources = try? AptSources.load() else { return false }
    return (try? sources.entry(for: "bookworm")) != nil && (try? sources.entry(for: "bookworm-security")) != nil
}()

// One at a time: three crawls at once, each with eight HEAD requests in flight, plus bundle
// downloads, made the mirror drop requests in CI.
@Suite("Debian's archive, for real", .serialized, .enabled(if: hostHasDebianSources, "the host's apt sources name no Debian archive"))
struct DebianArchiveTests {
    static var projectRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/", !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            url.deleteLastPathComponent()
        }
        return url.path
    }

    /// A copy of the project's default manifest with no kernels, crawled afresh.
    func crawledProject(_ scratch: Scratch) async throws -> (path: String, result: Crawler.Result, changed: Bool) {
        let original = try String(contentsOfFile: DebianArchiveTests.projectRoot + "/manifest.yml", encoding: .utf8)
        let empty = ManifestWriter.replacing(section: "kernels", with: "kernels: []\n", in: original)
        let path = try scratch.write("project/manifest.yml", empty)
        try scratch.write("project/recipes/lime.yml", try String(contentsOfFile: DebianArchiveTests.projectRoot + "/recipes/lime.yml", encoding: .utf8))
        let (result, changed) = try await Crawler.updateManifest(at: path, cacheDirectory: scratch.file("project/cache"), prune: false)
        return (path, result, changed)
    }

    /// The newest bookworm kernel (bookworm or bookworm-security, flavour amd64), optionally of
    /// one series: bookworm-security carries both 6.1 and 6.12 (`6.12.x+deb12`).
    func newestBookwormAmd64(_ manifest: Manifest, series: String = "") throws -> Kernel {
        let candidates = manifest.kernels.filter {
            ($0.suite == "bookworm" || $0.suite == "bookworm-security") && $0.release.hasSuffix("-amd64")
                && !$0.release.hasSuffix("-cloud-amd64") && !$0.release.hasSuffix("-rt-amd64") && $0.release.hasPrefix(series)
        }
        return try #require(candidates.max { DebianVersion.less($0.version ?? "", $1.version ?? "") })
    }

    @Test func crawlListsEveryBookwormFlavourAndASecondCrawlChangesNothing() async throws {
        let scratch = try Scratch()
        let (path, result, changed) = try await crawledProject(scratch)
        #expect(changed)
        #expect(result.failures.isEmpty, "\(result.failures)")
        let manifest = try ManifestLoader.load(path: path)
        let newest = try newestBookwormAmd64(manifest, series: "6.1.")
        let abi = String(newest.release.dropLast("-amd64".count))
        for flavour in ["amd64", "cloud-amd64", "rt-amd64"] {
            let kernel = try #require(manifest.kernels.first { $0.release == "\(abi)-\(flavour)" }, "no \(abi)-\(flavour)")
            #expect(kernel.packages.count == 3)
            #expect(kernel.image != nil)
            #expect(kernel.compiler == "linux-compiler-gcc-12-x86")
            #expect(kernel.distribution == "debian-12")
        }
        // Every kernel of every suite is pinned completely, and each suite contributed.
        #expect(manifest.kernels.allSatisfy { $0.packages.count == 3 && $0.packages.allSatisfy { $0.size > 0 } })
        for suite in ["bookworm-security", "bookworm-backports", "bullseye-security", "trixie"] {
            #expect(manifest.kernels.contains { $0.suite == suite }, "no kernel from \(suite)")
        }
        #expect(manifest.packages.contains { $0.name == "lime-forensics-dkms" })

        let before = try String(contentsOfFile: path, encoding: .utf8)
        let (second, again) = try await Crawler.updateManifest(at: path, cacheDirectory: scratch.file("project/cache"), prune: false)
        // A suite that fails to read marks its kernels last-seen, which is a change; say so.
        #expect(second.failures.isEmpty, "the second crawl could not read: \(second.failures)")
        #expect(!again, "the second crawl changed the manifest; missing: \(second.missing), added: \(second.added)")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == before)
    }

    /// The newest bookworm kernel overall, and the newest of bookworm's own 6.1 series.
    @Test(arguments: ["", "6.1."])
    func bundleOfTheNewestBookwormKernelBuildsAModuleWithTheHostsCompiler(series: String) async throws {
        let scratch = try Scratch()
        let (path, _, _) = try await crawledProject(scratch)
        let kernel = try newestBookwormAmd64(try ManifestLoader.load(path: path), series: series)
        let release = kernel.release
        let session = try Session(manifestPath: path, cacheDirectory: nil, rules: FarmRules())
        let (summary, bundle) = try await session.buildOne(.bundle(kernel: kernel.name), output: "bundle", into: scratch.file("out"),
                                                          as: "bundle-\(release).tgz", options: BuildOptions(), reporter: EventLog())
        #expect(summary.succeeded)
        let tgz = try #require(bundle)

        let root = scratch.file("extracted")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let untar = try runProcess("/usr/bin/tar", ["-xzf", tgz, "-C", root])
        #expect(untar.status == 0, "\(untar.stderr)")
        #expect(try scratch.read("extracted/BUNDLE_UNAME") == release)
        let buildDirectory = try scratch.read("extracted/BUNDLE_BUILD_DIR")
        #expect(buildDirectory == "./usr/src/linux-headers-\(release)")

        try scratch.write("module/hello.c", """
        #include <linux/module.h>
        #include <linux/init.h>
        MODULE_LICENSE("GPL");
        static int __init hello_init(void) { return 0; }
        static void __exit hello_exit(void) {}
        module_init(hello_init);
        module_exit(hello_exit);

        """)
        try scratch.write("module/Kbuild", "obj-m := hello.o\n")
        // As stackrox/collector consumed kernel-packer bundles: make -C <dir>/<BUNDLE_BUILD_DIR> BUILD_ROOT=<dir>.
        let make = try runProcess("/usr/bin/make", ["-C", root + "/" + buildDirectory, "BUILD_ROOT=\(root)", "M=\(scratch.file("module"))", "CC=gcc-12", "modules"])
        #expect(make.status == 0, "\(make.stdout)\(make.stderr)")
        let module = try #require(FileManager.default.contents(atPath: scratch.file("module/hello.ko")))
        #expect(module.range(of: Data("vermagic=\(release) ".utf8)) != nil)
    }
}
