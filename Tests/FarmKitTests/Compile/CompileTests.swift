import FarmEngine
import FarmKit
import Foundation
import Testing

/// A project crawled from Debian's real archive once per test process, and a cache in which
/// the newest bookworm amd64 kernel's LiME was built from nothing (toolchain by mmdebstrap,
/// bundle, bwrap compile). The tests below share it; each kernel's toolchain is made once.
/// The manifest's text without its `signing:` section (and so without sign and publish tasks):
/// for tests of compiling, which need no keys; a build that signs checks for them before it runs.
func withoutSigning(_ text: String) -> String {
    var kept: [Substring] = []
    var skipping = false
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("signing:") || line.hasPrefix("publish:") { skipping = true; continue }
        if skipping, line.hasPrefix(" ") || line.hasPrefix("#") || line.isEmpty { continue }
        skipping = false
        kept.append(line)
    }
    return kept.joined(separator: "\n")
}

actor CompileProject {
    static let shared = CompileProject()

    struct Built {
        var directory: String
        var manifest: String
        var cache: String
        var release: String
        var module: String
    }

    private var built: Built?

    func get() async throws -> Built {
        if let built { return built }
        let directory = NSTemporaryDirectory() + "farm-compile-\(getpid())"
        CompileProject.removeStale()
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory + "/recipes/toolchains", withIntermediateDirectories: true)
        let root = DebianArchiveTests.projectRoot
        let original = try String(contentsOfFile: root + "/manifest.yml", encoding: .utf8)
        let manifest = directory + "/manifest.yml"
        // Symbol tables are the lab test's and the profile tests' own business: here they would only download images.
        let modulesOnly = ManifestWriter.replacing(section: "profiles", with: "profiles: false\n", in: original)
        try Data(ManifestWriter.replacing(section: "kernels", with: "kernels: []\n", in: modulesOnly).utf8).write(to: URL(fileURLWithPath: manifest))
        for file in ["recipes/lime.yml", "recipes/toolchains/debian-bookworm.yml", "recipes/toolchains/debian-bullseye.yml",
                     "recipes/toolchains/debian-trixie.yml"] {
            try FileManager.default.copyItem(atPath: root + "/" + file, toPath: directory + "/" + file)
        }
        let cache = directory + "/cache"
        let (crawl, _) = try await Crawler.updateManifest(at: manifest, cacheDirectory: cache, prune: false)
        guard crawl.failures.isEmpty else { throw TestFailure("the crawl could not read: \(crawl.failures)") }
        let kernels = try ManifestLoader.load(path: manifest).kernels.filter {
            ($0.suite == "bookworm" || $0.suite == "bookworm-security") && $0.release.hasSuffix("-amd64")
                && !$0.release.hasSuffix("-cloud-amd64") && !$0.release.hasSuffix("-rt-amd64")
        }
        guard let newest = kernels.max(by: { DebianVersion.less($0.version ?? "", $1.version ?? "") }) else {
            throw TestFailure("the crawl found no bookworm amd64 kernel")
        }
        let out = directory + "/out"
        let result = try runProcess(Products.farm, ["module", newest.release, "--unsigned", "--manifest", manifest, "--cache", cache, "-o", out])
        guard result.status == 0 else { throw TestFailure("farm module \(newest.release) failed:\n\(result.stdout)\(result.stderr)") }
        let built = Built(directory: directory, manifest: manifest, cache: cache, release: newest.release,
                          module: out + "/lime-\(newest.release).ko")
        self.built = built
        return built
    }

    /// Projects of test processes that are gone: a root and a toolchain are hundreds of MiB.
    static func removeStale() {
        let temporary = NSTemporaryDirectory()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] where name.hasPrefix("farm-compile-") {
            guard let pid = Int32(name.dropFirst("farm-compile-".count)), kill(pid, 0) != 0 else { continue }
            try? FileManager.default.removeItem(atPath: temporary + name)
        }
    }
}

/// A manifest entry (to append under `kernels:`) for a kernel whose headers, packed by dpkg-deb,
/// have a Makefile that cannot build anything.
func brokenHeadersKernel(_ release: String, in scratch: Scratch) throws -> String {
    try scratch.write("deb/DEBIAN/control", "Package: linux-headers-\(release)\nVersion: 6.1.999-1\nArchitecture: amd64\n"
                      + "Maintainer: farm tests <t@farm.test>\nDescription: broken headers\n")
    try scratch.write("deb/usr/src/linux-headers-\(release)/Makefile",
                      "modules:\n\t@echo 'broken headers: include/generated/autoconf.h is missing' >&2; exit 2\n")
    try scratch.write("deb/usr/src/linux-headers-\(release)/.config", "CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n")
    let deb = scratch.file("linux-headers-\(release)_6.1.999-1_amd64.deb")
    let pack = try runProcess("/usr/bin/dpkg-deb", ["--root-owner-group", "--build", scratch.file("deb"), deb])
    guard pack.status == 0 else { throw TestFailure("dpkg-deb: \(pack.stderr)") }
    let data = try #require(FileManager.default.contents(atPath: deb))
    return """
      - release: \(release)
        upstream: debian
        suite: bookworm
        distribution: debian-12
        compiler: linux-compiler-gcc-12-x86
        packages:
          - url: file://\(deb)
            sha256: \(SHA256.hash(data).hex)
            size: \(data.count)

    """
}

/// Processes whose command line contains `marker`.
func processes(containing marker: String) -> [Int32] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> Int32? in
        guard let pid = Int32(entry), pid != getpid(),
              let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
        let text = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
        return text.contains(marker) ? pid : nil
    }
}

// Nested in the real-archive suite, whose `.serialized` covers it too: crawls and downloads from
// both at once made the mirror drop requests.
extension DebianArchiveTests {
    @Suite("LiME compiled for real kernels", .serialized)
    struct CompileTests {
        @Test func newestBookwormKernelGivesTheSameModuleFromTwoCleanCachesAtDifferentPaths() async throws {
            let project = try await CompileProject.shared.get()
            let first = try #require(FileManager.default.contents(atPath: project.module))
            let info = try ModuleInfo.read(path: project.module)
            #expect(info.value("vermagic")?.hasPrefix(project.release + " ") == true, "vermagic: \(info.value("vermagic") ?? "none")")
            #expect(info.value("name") == "lime")

            // A second cache, at a path of another length, in a directory of another name.
            let scratch = try Scratch()
            let other = scratch.file("elsewhere/second-cache-with-a-longer-name")
            let result = try runProcess(Products.farm, ["module", project.release, "--unsigned", "--manifest", project.manifest, "--cache", other,
                                                        "-o", scratch.file("out")])
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            let second = try #require(FileManager.default.contents(atPath: scratch.file("out/lime-\(project.release).ko")))
            #expect(second == first, "two clean builds differ: \(SHA256.hash(first)) and \(SHA256.hash(second))")

            // The log is kept and says what was checked.
            let log = try runProcess(Products.farm, ["log", "compile:lime/\(project.release)@debian", "--manifest", project.manifest, "--cache", other])
            #expect(log.stdout.contains("vermagic=\(project.release) "))
            #expect(log.stdout.contains("sandbox: bwrap"))
        }

        @Test func brokenHeadersFailWithTheirLogTailAndKeepGoingBuildsTheRest() async throws {
            let project = try await CompileProject.shared.get()
            let scratch = try Scratch()
            let release = "6.1.0-99-amd64"
            let text = withoutSigning(try String(contentsOfFile: project.manifest, encoding: .utf8)) + (try brokenHeadersKernel(release, in: scratch))
            let manifest = try scratch.write("project/manifest.yml", text)
            try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("project/recipes"))

            let build = try runProcess(Products.farm, ["build", "-k", project.release, release, "--manifest", manifest, "--cache", project.cache],
                                       environment: ["CI": "true"])
            let output = build.stdout + build.stderr
            #expect(build.status == 1, "\(output)")
            #expect(output.contains("FAILED: ") && output.contains("compile lime/\(release)"), "\(output)")
            #expect(output.contains("broken headers: include/generated/autoconf.h is missing"), "the log tail is not shown:\n\(output)")
            // The good kernel's module is there, and the broken kernel's log is kept.
            let good = try runProcess(Products.farm, ["module", project.release, "--unsigned", "--manifest", manifest, "--cache", project.cache, "-o", scratch.file("out")])
            #expect(good.status == 0, "\(good.stdout)\(good.stderr)")
            #expect(FileManager.default.fileExists(atPath: scratch.file("out/lime-\(project.release).ko")))
            let log = try runProcess(Products.farm, ["log", "compile:lime/\(release)@debian", "--manifest", manifest, "--cache", project.cache])
            #expect(log.stdout.contains("broken headers"))
        }

        /// A 4.4 kernel's headers record their compiler only in compile.h: a toolchain with another
        /// compiler is refused before make runs, naming both compilers and the file read.
        @Test func headersWhoseCompileHNamesAnotherCompilerFailTheCompileNamingBoth() async throws {
            let project = try await CompileProject.shared.get()
            let goodLog = try runProcess(Products.farm, ["log", "compile:lime/\(project.release)@debian", "--manifest", project.manifest, "--cache", project.cache])
            #expect(goodLog.stdout.contains("kernel compiler: gcc-12 (x86_64-linux-gnu-gcc-12 (Debian"), "\(goodLog.stdout)")
            #expect(goodLog.stdout.contains("/.config)"), "\(goodLog.stdout)")

            let scratch = try Scratch()
            let release = "4.4.0-999-generic"
            let tree = "usr/src/linux-headers-\(release)"
            let deb = try Fixtures.deb(in: scratch, name: "linux-headers-\(release)", compression: "xz", files: [
                "\(tree)/include/generated/compile.h": KernelCompilerTests.xenialCompileH,
                "\(tree)/Makefile": "modules:\n\t@echo 'make ran' >&2; exit 2\n",
            ])
            let data = try #require(FileManager.default.contents(atPath: deb))
            let kernel = """
              - release: \(release)
                upstream: debian
                suite: bookworm
                distribution: debian-12
                compiler: linux-compiler-gcc-12-x86
                packages:
                  - url: file://\(deb)
                    sha256: \(SHA256.hash(data).hex)
                    size: \(data.count)

            """
            let manifest = try scratch.write("project/manifest.yml", withoutSigning(try String(contentsOfFile: project.manifest, encoding: .utf8)) + kernel)
            try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("project/recipes"))
            let build = try runProcess(Products.farm, ["build", release, "--manifest", manifest, "--cache", project.cache], environment: ["CI": "true"])
            let output = build.stdout + build.stderr
            #expect(build.status == 1, "\(output)")
            #expect(output.contains("kernel \(release) was built with gcc-5 ("), "\(output)")
            #expect(output.contains("/\(tree)/include/generated/compile.h says 'gcc version 5.4.0 20160609"), "\(output)")
            #expect(output.contains("toolchain debian-bookworm provides gcc-12"), "\(output)")
            #expect(!output.contains("make ran"), "make ran despite the mismatch:\n\(output)")
        }

        @Test(arguments: [SIGKILL, SIGINT])
        func aKilledFarmLeavesNoSandboxProcess(signal: Int32) async throws {
            let project = try await CompileProject.shared.get()
            let scratch = try Scratch()
            let marker = "farm-sandbox-marker-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.copyItem(atPath: project.directory + "/recipes", toPath: scratch.file("project/recipes"))
            try scratch.write("project/manifest.yml", withoutSigning(try String(contentsOfFile: project.manifest, encoding: .utf8)))
            let recipe = try String(contentsOfFile: scratch.file("project/recipes/lime.yml"), encoding: .utf8)
            try scratch.write("project/recipes/lime.yml", recipe.replacingOccurrences(
                of: "build: make", with: "build: sleep 317 # \(marker)\n  make").replacingOccurrences(of: "build: sleep", with: "build: |\n  sleep"))

            let farm = Process()
            farm.executableURL = URL(fileURLWithPath: Products.farm)
            farm.arguments = ["build", project.release, "--manifest", scratch.file("project/manifest.yml"), "--cache", project.cache]
            farm.standardOutput = FileHandle.nullDevice
            farm.standardError = FileHandle.nullDevice
            try farm.run()
            var deadline = Date().addingTimeInterval(120)
            while processes(containing: marker).isEmpty, Date() < deadline, farm.isRunning { usleep(100_000) }
            try #require(!processes(containing: marker).isEmpty, "the sandbox never started")
            kill(farm.processIdentifier, signal)
            farm.waitUntilExit()
            deadline = Date().addingTimeInterval(10)
            while !(processes(containing: marker).isEmpty && processes(containing: "sleep 317").isEmpty), Date() < deadline { usleep(100_000) }
            #expect(processes(containing: marker).isEmpty, "sandbox processes outlived farm")
            #expect(processes(containing: "sleep 317").isEmpty, "the build command outlived farm")
        }

        /// The chroot backend shows the same root at the same paths, so it gives the very same bytes;
        /// the host backend builds with the host's gcc-12 and still makes a module for the kernel.
        @Test func chrootGivesBwrapsBytesAndHostBuildsAModuleForTheKernel() async throws {
            let project = try await CompileProject.shared.get()
            let scratch = try Scratch()
            let cache = try BuildCache(directory: project.cache, access: .shared)
            defer { cache.close() }
            let session = try Session(manifestPath: project.manifest, cacheDirectory: project.cache, rules: FarmRules())
            let graph = try session.plan([project.release])
            let explainer = Explainer(cache: cache)
            func output(_ name: String, _ output: String) throws -> Digest {
                let node = try #require(graph.node(named: name))
                return try #require(try explainer.cachedOutputs(of: node, in: graph)?[output])
            }
            let trees = UnpackedTrees(objects: cache.objects)
            let log = TaskLog()
            let bundle = try trees.tree(of: try output("bundle:\(project.release)@debian", "bundle"), log: log)
            let root = try trees.tree(of: try output("toolchain:debian-bookworm", "root"), log: log)
            let source = try cache.objects.verifiedPath(of: try output("fetch:lime-forensics-dkms_\(try limeVersion(session))_all.deb", "package"))
            _ = try PackageExtractor.extract(package: source, into: scratch.file("lime"))
            let tree = try #require(try FileManager.default.contentsOfDirectory(atPath: scratch.file("lime/usr/src")).first)

            var backends: [SandboxBackend] = [.host]
            if geteuid() == 0 { backends.append(.chroot) }
            for backend in backends {
                let directory = scratch.file("build-\(backend.rawValue)")
                try FileManager.default.copyItem(atPath: scratch.file("lime/usr/src/\(tree)"), toPath: directory)
                let spec = try CompileAction.sandbox(bundleTree: bundle, root: root, source: directory, release: project.release,
                                                     command: "set -e\nmake -C \"$KERNEL_BUILD_DIR\" M=\"$MODULE_DIR\" modules\nstrip --strip-debug lime.ko",
                                                     backend: backend)
                let log = TaskLog()
                let status = try Sandbox.run(spec, backend: backend, log: log)
                #expect(status == 0, "\(backend): \(log.text)")
                let module = directory + "/lime.ko"
                #expect(try ModuleInfo.read(path: module).value("vermagic")?.hasPrefix(project.release + " ") == true)
                if backend == .chroot {
                    #expect(FileManager.default.contents(atPath: module) == FileManager.default.contents(atPath: project.module),
                            "the chroot sandbox gave other bytes than bwrap")
                }
            }
        }

        /// farm's module signature against Linux's own scripts/sign-file (from the kernel's
        /// linux-kbuild package, in its bundle), on the real LiME module: the same bytes.
        @Test(arguments: ["sha256", "sha512"])
        func moduleSignatureIsByteIdenticalToLinuxSignFile(hash: String) async throws {
            let project = try await CompileProject.shared.get()
            let scratch = try Scratch()
            let unpacked = project.cache + "/unpacked"
            let signFile = try #require(try FileManager.default.contentsOfDirectory(atPath: unpacked).lazy.compactMap { tree -> String? in
                let lib = unpacked + "/" + tree + "/usr/lib"
                let kbuild = (try? FileManager.default.contentsOfDirectory(atPath: lib))?.first { $0.hasPrefix("linux-kbuild-") }
                return kbuild.map { lib + "/" + $0 + "/scripts/sign-file" }.flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }
            }.first, "no sign-file in the bundles")
            let (key, certificate) = try makeSigningKey(in: scratch.file("keys"))
            let module = try #require(FileManager.default.contents(atPath: project.module))
            try FileManager.default.copyItem(atPath: project.module, toPath: scratch.file("lime.ko"))
            let linux = try runProcess(signFile, [hash, key, certificate, scratch.file("lime.ko")])
            #expect(linux.status == 0, "\(signFile): \(linux.stderr)")
            let theirs = try #require(FileManager.default.contents(atPath: scratch.file("lime.ko")))
            let ours = try ModuleSigner.sign(module: module, key: key, certificate: certificate, hash: hash)
            #expect(theirs.count > module.count)
            #expect(ours == theirs, "farm's signed module differs from sign-file's (\(ours.count) and \(theirs.count) bytes)")
            // And farm's verifier accepts what Linux's tool signed.
            #expect(try ModuleVerifier.verify(theirs, name: "lime.ko", certificate: certificate).hash == hash)
        }

        func limeVersion(_ session: Session) throws -> String {
            try #require(session.manifest.packages.first { $0.name == "lime-forensics-dkms" }?.version)
        }
    }
}
