import FarmEngine
import FarmKit
import Foundation
import Testing

// Nested in the real-archive suite (its `.serialized` covers it): it starts from the real Debian
// project CompileProject crawled and built, whose cache holds the bookworm toolchain root.
extension DebianArchiveTests {
    @Suite("LiME compiled for a RHEL-layout kernel", .serialized)
    struct RHELCompileTests {
        /// The newest bookworm 6.1 kernel's prepared headers (common, arch and kbuild packages)
        /// merged into one tree with compiled scripts, as RHEL's kernel-devel ships it, packed as a
        /// signed kernel-devel RPM holding /usr/src/kernels/<release>/ in a signed createrepo_c
        /// repository: `farm crawl` pins it as a RHEL kernel, `farm build` compiles LiME against it
        /// with the bookworm gcc-12 root, signs and publishes it, and Margarita Shotgun reads it.
        @Test func aKernelDevelRPMInRHELsLayoutCrawlsBuildsSignsAndPublishesLiME() async throws {
            let project = try await CompileProject.shared.get()
            let debian = try ManifestLoader.load(path: project.manifest)
            let kernel = try #require(debian.kernels.filter {
                ($0.suite == "bookworm" || $0.suite == "bookworm-security") && $0.release.hasPrefix("6.1.0-") && $0.release.hasSuffix("-amd64")
                    && !$0.release.hasSuffix("-cloud-amd64") && !$0.release.hasSuffix("-rt-amd64")
            }.max { DebianVersion.less($0.version ?? "", $1.version ?? "") })
            let release = kernel.release
            let abi = String(release.dropLast("-amd64".count))
            let repository = try LocalYumRepository(try Scratch())
            let scratch = repository.scratch

            // Debian's three header packages, as farm's Debian bundle holds them.
            let session = try Session(manifestPath: project.manifest, cacheDirectory: project.cache, rules: FarmRules())
            let (summary, bundle) = try await session.buildOne(.bundle(kernel: kernel.name), output: "bundle", into: scratch.file("debian"),
                                                              as: "bundle.tgz", options: BuildOptions(), reporter: EventLog())
            #expect(summary.succeeded)
            let debianTree = scratch.file("debian/tree")
            try FileManager.default.createDirectory(atPath: debianTree, withIntermediateDirectories: true)
            #expect(try runProcess("/usr/bin/tar", ["-xzf", try #require(bundle), "-C", debianTree]).status == 0)
            // One tree: the common headers, then the arch tree over them with its links to the
            // kbuild package's compiled scripts and tools followed; the common Makefile is the tree's own.
            let tree = scratch.file("devel/usr/src/kernels/\(release)")
            try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
            let merge = try runProcess("/bin/sh", ["-c", """
                set -e
                tar -C '\(debianTree)/usr/src/linux-headers-\(abi)-common' -cf - . | tar -C '\(tree)' -xf -
                tar -C '\(debianTree)/usr/src/linux-headers-\(release)' --exclude=./Makefile -chf - . | tar -C '\(tree)' -xf -
                """])
            #expect(merge.status == 0, "\(merge.stderr)")
            #expect(FileManager.default.isExecutableFile(atPath: tree + "/scripts/mod/modpost"))
            try repository.package("kernel-devel", version: "6.1.0", release: String(abi.dropFirst("6.1.0-".count)), files: [:],
                                   root: scratch.file("devel"))
            try repository.publish(".")

            // The crawl of the yum upstream alone.
            let directory = scratch.file("project")
            let rhel = "  rhel:\n    kind: yum\n    mirror: \(repository.url)\n    suites: [.]\n    keyring: \(repository.keyring)\n"
            let crawlManifest = try scratch.write("project/crawl.yml", "farm: 1\nupstreams:\n\(rhel)modules: []\nkernels: []\n")
            let crawl = try await Crawler.updateManifest(at: crawlManifest, cacheDirectory: scratch.file("crawl-cache"), prune: false).result
            #expect(crawl.failures.isEmpty && crawl.warnings.isEmpty, "\(crawl.failures) \(crawl.warnings)")
            let pinned = try #require(try ManifestLoader.load(path: crawlManifest).kernels.first)
            #expect(pinned.release == release)
            #expect(pinned.family == .rhel)
            #expect(pinned.compiler == "gcc-12")

            // The Debian project (its lime-forensics-dkms pin, signing and publish) with the RHEL kernel only.
            let original = try String(contentsOfFile: project.manifest, encoding: .utf8)
            let text = ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: [pinned]), in: original)
                .replacingOccurrences(of: "upstreams:\n", with: "upstreams:\n" + rhel)
            let manifest = try scratch.write("project/manifest.yml", text)
            try FileManager.default.createDirectory(atPath: directory + "/recipes/toolchains", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: project.directory + "/recipes/lime.yml", toPath: directory + "/recipes/lime.yml")
            // The root comes from Debian's archive whatever the kernel's upstream.
            let toolchain = try String(contentsOfFile: project.directory + "/recipes/toolchains/debian-bookworm.yml", encoding: .utf8)
            try scratch.write("project/recipes/toolchains/debian-bookworm.yml", toolchain + "upstream: debian\n")
            func farm(_ arguments: [String]) throws -> ProcessResult {
                try runProcess(Products.farm, arguments + ["--manifest", manifest], environment: ["CI": "true"])
            }
            let keys = try farm(["keys", "init"])
            #expect(keys.status == 0, "\(keys.stdout)\(keys.stderr)")
            let build = try farm(["build", "--cache", project.cache])
            #expect(build.status == 0, "\(build.stdout)\(build.stderr)")

            let module = directory + "/repo/modules/lime-\(release).ko"
            let info = try ModuleInfo.read(path: module)
            #expect(info.value("vermagic")?.hasPrefix(release + " ") == true, "vermagic: \(info.value("vermagic") ?? "none")")
            let verified = try farm(["verify", directory + "/repo"])
            #expect(verified.status == 0 && verified.stdout.contains("module signatures OK"), "\(verified.stdout)\(verified.stderr)")
            // Margarita Shotgun 0.4.1 fetches and verifies it for `uname -r`, over HTTP.
            let server = try StaticServer(directory: directory + "/repo")
            let fetched = try MargaritaShotgun.fetch(server.url, release: release, trusting: directory + "/keys/repo.asc", scratch: scratch,
                                                     into: scratch.file("ms"))
            #expect(fetched.status == 0, "\(fetched.stdout)\(fetched.stderr)")
            #expect(FileManager.default.contents(atPath: scratch.file("ms/lime-\(release).ko")) == FileManager.default.contents(atPath: module))
            let log = try farm(["log", "bundle:\(release)@rhel", "--cache", project.cache])
            #expect(log.stdout.contains("bundle-\(release).tgz"), "\(log.stdout)")
            let fetch = try farm(["log", "fetch:kernel-devel-6.1.0-\(abi.dropFirst("6.1.0-".count)).x86_64.rpm", "--cache", project.cache])
            #expect(fetch.stdout.contains("good RSA header, payload sha256 signature by a key of \(repository.keyring)"), "\(fetch.stdout)")
        }
    }
}
