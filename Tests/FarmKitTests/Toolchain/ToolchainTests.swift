import FarmEngine
import FarmKit
import Foundation
import Testing

/// Which toolchain a kernel gets, what a module's .modinfo says, and where module sources come
/// from (a local directory, a git commit), without the network.
struct ToolchainTests {
    static func kernel(_ release: String, compiler: String?, distribution: String? = "debian-12", toolchain: String? = nil) -> Kernel {
        Kernel(release: release, upstream: "debian", suite: "bookworm", distribution: distribution, version: "1", toolchain: toolchain,
               compiler: compiler, packages: [], image: nil, lastSeen: nil, location: SourceLocation(file: "manifest.yml", line: 40, column: 5))
    }

    func shippedCatalog() throws -> ToolchainCatalog {
        try ToolchainCatalog.load(directory: DebianArchiveTests.projectRoot + "/recipes/toolchains")
    }

    @Test func shippedRecipesCoverBullseyeBookwormAndTrixieCompilers() throws {
        let catalog = try shippedCatalog()
        #expect(try catalog.recipe(for: Self.kernel("5.10.0-43-amd64", compiler: "linux-compiler-gcc-10-x86", distribution: "debian-11")).name == "debian-bullseye")
        #expect(try catalog.recipe(for: Self.kernel("6.1.0-56-amd64", compiler: "linux-compiler-gcc-12-x86")).name == "debian-bookworm")
        #expect(try catalog.recipe(for: Self.kernel("6.12.57+deb12-amd64", compiler: "gcc-12")).name == "debian-bookworm")
        #expect(try catalog.recipe(for: Self.kernel("6.12.74+deb13-amd64", compiler: "gcc-14", distribution: "debian-13")).name == "debian-trixie")
        // An explicit toolchain wins over the compiler.
        #expect(try catalog.recipe(for: Self.kernel("6.1.0-56-amd64", compiler: "gcc-12", toolchain: "debian-trixie")).name == "debian-trixie")
        for recipe in catalog.recipes.values {
            #expect(recipe.packages.contains(recipe.compiler))
            for package in ["make", "libelf-dev", "bc", "flex", "bison", "libssl-dev", "kmod"] { #expect(recipe.packages.contains(package)) }
        }
    }

    @Test func aKernelWithNoMatchingToolchainIsRefusedNamingTheCompilerItNeeds() throws {
        let catalog = try shippedCatalog()
        let error = try #require(throws: ManifestError.self) {
            try catalog.recipe(for: Self.kernel("6.16.3+deb13-amd64", compiler: "gcc-15", distribution: "debian-13"))
        }
        #expect(error.description.hasPrefix("manifest.yml:40:5: "))
        #expect(error.description.contains("needs the compiler gcc-15"))
        #expect(error.description.contains("compiler: gcc-15"))
        let unknown = try #require(throws: ManifestError.self) {
            try catalog.recipe(for: Self.kernel("6.1.0-56-amd64", compiler: nil, toolchain: "debian-sid"))
        }
        #expect(unknown.description.contains("names toolchain 'debian-sid'"))
    }

    /// In a build, such a kernel's compile task fails with that message; `-k` goes on without it.
    @Test func aKernelWithNoToolchainFailsItsCompileTaskWithTheCompilerItNeeds() async throws {
        let scratch = try Scratch()
        try scratch.write("project/src/Makefile", "obj-m := mod.o\n")
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes/toolchains", toPath: scratch.file("project/recipes/toolchains"))
        let session = try sourceProject(scratch, source: "  dir: src", kernels: """
          - release: 6.16.3+deb13-amd64
            upstream: debian
            distribution: debian-13
            compiler: gcc-15
            packages:
              - url: file://\(scratch.file("nowhere.deb"))
                sha256: \(String(repeating: "0", count: 64))
                size: 1

        """)
        let log = EventLog()
        let summary = try await session.build(patterns: [], options: BuildOptions(keepGoing: true), reporter: log)
        #expect(!summary.succeeded)
        let failure = try #require(log.failed["compile:mod/6.16.3+deb13-amd64"])
        #expect(failure.error.contains("manifest.yml:6:5: error: kernel 6.16.3+deb13-amd64 needs the compiler gcc-15"), "\(failure.error)")
        #expect(log.built.contains("source:mod"), "-k builds what does not depend on the failure")
    }

    @Test func compilersAreReadFromPackagesAndFromTheKernelConfig() throws {
        #expect(ToolchainCatalog.compilerName("linux-compiler-gcc-12-x86") == "gcc-12")
        #expect(ToolchainCatalog.compilerName("gcc-14") == "gcc-14")
        #expect(ToolchainCatalog.compilerName("clang-16") == nil)
        let scratch = try Scratch()
        let path = try scratch.write(".config", """
        CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
        CONFIG_MODULE_SIG_HASH="sha256"
        # CONFIG_FOO is not set

        """)
        let config = try #require(KernelConfig.read(path: path))
        #expect(config.compiler?.name == "gcc-12")
        #expect(config.values["CONFIG_MODULE_SIG_HASH"] == "sha256")
        #expect(KernelConfig(values: ["CONFIG_CC_VERSION_TEXT": "gcc-14 (Debian 14.2.0-19) 14.2.0"]).compiler?.name == "gcc-14")
    }

    @Test func badToolchainRecipesAreRefusedWithTheirPlace() throws {
        let scratch = try Scratch()
        try scratch.write("toolchains/broken.yml", "farm: 1\ndistribution: debian-12\nsuite: bookworm\ncompiler: gcc-12\npackages: [make]\n")
        let error = try #require(throws: ManifestError.self) { try ToolchainCatalog.load(directory: scratch.file("toolchains")) }
        #expect(error.description.contains("broken.yml:5:"))
        #expect(error.description.contains("must install the compiler 'gcc-12'"))
        try scratch.write("toolchains/broken.yml", "farm: 1\ndistribution: debian-12\nsuite: bookworm\ncompiler: cc\npackages: [cc]\n")
        let compiler = try #require(throws: ManifestError.self) { try ToolchainCatalog.load(directory: scratch.file("toolchains")) }
        #expect(compiler.description.contains("broken.yml:4:11: error: expected a compiler as kernels name it"))
    }

    @Test func malformedModulesAreRefusedNamingTheFile() throws {
        let scratch = try Scratch()
        for (name, bytes) in [("empty.ko", [UInt8]()), ("text.ko", Array("not an elf file at all".utf8)),
                              ("truncated.ko", [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1] + [UInt8](repeating: 0, count: 57))] {
            let path = scratch.file(name)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let error = try #require(throws: FarmError.self) { try ModuleInfo.read(path: path) }
            #expect(error.description.hasPrefix(path + ": not a kernel module"), "\(error)")
        }
    }

    /// A module made by the host's gcc and ld as an ELF object with a .modinfo section.
    @Test func modinfoIsReadFromARealObjectFile() throws {
        let scratch = try Scratch()
        try scratch.write("m.c", """
        __attribute__((section(".modinfo"), used)) static const char a[] = "vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions ";
        __attribute__((section(".modinfo"), used)) static const char b[] = "name=lime";
        int x;

        """)
        let compile = try runProcess("/usr/bin/gcc", ["-c", scratch.file("m.c"), "-o", scratch.file("m.ko")])
        #expect(compile.status == 0, "\(compile.stderr)")
        let info = try ModuleInfo.read(path: scratch.file("m.ko"))
        #expect(info.value("vermagic") == "6.1.0-56-amd64 SMP preempt mod_unload modversions ")
        #expect(info.value("name") == "lime")
    }

    func sourceProject(_ scratch: Scratch, source: String, kernels: String = "") throws -> Session {
        try scratch.write("project/recipes/mod.yml", "farm: 1\nsource:\n\(source)\nbuild: make\nmodule: mod.ko\noutput: mod-{release}.ko\n")
        let manifest = try scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          debian: {kind: apt, mirror: apt, suites: [bookworm], components: [main], architectures: [amd64]}
        modules: [mod]
        kernels:\(kernels.isEmpty ? " []" : "\n" + kernels)

        """)
        return try Session(manifestPath: manifest, cacheDirectory: scratch.file("cache"), rules: FarmRules())
    }

    func sourceTree(_ session: Session, _ scratch: Scratch, into name: String) async throws -> (digest: String, files: [String: String]) {
        let (summary, path) = try await session.buildOne(.source(recipe: "mod"), output: "tree", into: scratch.file(name), as: "source.tgz",
                                                         options: BuildOptions(), reporter: EventLog())
        #expect(summary.succeeded)
        let archive = try #require(path)
        let unpacked = scratch.file(name + "/unpacked")
        try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true)
        #expect(try runProcess("/usr/bin/tar", ["-xzf", archive, "-C", unpacked]).status == 0)
        return (try SHA256.hash(fileAt: archive).digest.hex, treeDigest(unpacked))
    }

    @Test func aDirectorySourceIsKeyedByContentNotByTimeOrPlace() async throws {
        let scratch = try Scratch()
        try scratch.write("project/src/Makefile", "obj-m := mod.o\n")
        try scratch.write("project/src/mod.c", "int x;\n")
        let session = try sourceProject(scratch, source: "  dir: src")
        let first = try await sourceTree(session, scratch, into: "one")
        #expect(first.files.keys.sorted() == ["Makefile", "mod.c"])
        let key = try #require(try session.plan([]).node(named: "source:mod")).action.parameters.first?.value

        // Touching a file changes nothing; editing one changes the key and the tarball.
        utimes(scratch.file("project/src/mod.c"), nil)
        #expect(try sourceProject(scratch, source: "  dir: src").plan([]).node(named: "source:mod")?.action.parameters.first?.value == key)
        try scratch.write("project/src/mod.c", "int y;\n")
        let edited = try sourceProject(scratch, source: "  dir: src")
        #expect(try edited.plan([]).node(named: "source:mod")?.action.parameters.first?.value != key)
        let second = try await sourceTree(edited, scratch, into: "two")
        #expect(second.digest != first.digest)
        #expect(second.files["mod.c"] == SHA256.hash("int y;\n").hex)
    }

    @Test func aGitSourceIsFetchedWithLibgit2AndFollowsTheTree() async throws {
        let scratch = try Scratch()
        let repository = scratch.file("repo")
        try scratch.write("repo/Makefile", "obj-m := mod.o\n")
        try scratch.write("repo/mod.c", "int x;\n")
        try scratch.write("repo/tools/run.sh", "#!/bin/sh\n")
        chmod(scratch.file("repo/tools/run.sh"), 0o755)
        let git = { (arguments: [String]) throws -> String in
            let result = try runProcess("/usr/bin/git", ["-C", repository] + arguments,
                                        environment: ["GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@farm.test", "GIT_COMMITTER_NAME": "t",
                                                      "GIT_COMMITTER_EMAIL": "t@farm.test"])
            guard result.status == 0 else { throw TestFailure("git \(arguments): \(result.stderr)") }
            return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        _ = try git(["init", "-q", "-b", "main"])
        _ = try git(["add", "."])
        _ = try git(["commit", "-q", "-m", "first"])
        let first = try git(["rev-parse", "HEAD"])
        _ = try git(["commit", "-q", "--allow-empty", "-m", "same tree, another commit"])
        let second = try git(["rev-parse", "HEAD"])

        let one = try await sourceTree(try sourceProject(scratch, source: "  git: file://\(repository)\n  commit: \(first)"), scratch, into: "one")
        #expect(one.files.keys.sorted() == ["Makefile", "mod.c", "tools/run.sh"])
        #expect(FileManager.default.isExecutableFile(atPath: scratch.file("one/unpacked/tools/run.sh")))
        let two = try await sourceTree(try sourceProject(scratch, source: "  git: file://\(repository)\n  commit: \(second)"), scratch, into: "two")
        #expect(two.digest == one.digest, "the same tree gave another tarball")

        let missing = try sourceProject(scratch, source: "  git: file://\(repository)\n  commit: \(String(repeating: "ab", count: 20))")
        let log = EventLog()
        let summary = try await missing.build(patterns: [], options: BuildOptions(), reporter: log)
        #expect(!summary.succeeded)
        #expect(log.failed.values.contains { $0.error.contains("no commit abababab") }, "\(log.failed)")
    }
}
