import FarmEngine
import FarmKit
import Foundation
import Testing

/// Which toolchain a kernel gets, what a module's .modinfo says, and where module sources come
/// from (a local directory, a git commit), without the network.
struct ToolchainTests {
    static func kernel(_ release: String, compiler: String?, distribution: String? = "debian-12", toolchain: String? = nil) -> Kernel {
        Kernel(release: release, upstream: "debian", family: .debian, suite: "bookworm", distribution: distribution, version: "1", toolchain: toolchain,
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
            for package in ["make", "libelf-dev", "bc"] { #expect(recipe.packages.contains(package)) }
            // Debian's headers build their scripts; Ubuntu's flavour headers ship them compiled
            // (and xenial's kmod cannot be installed in a chroot).
            guard recipe.distribution.hasPrefix("debian") else { continue }
            for package in ["flex", "bison", "libssl-dev", "kmod"] { #expect(recipe.packages.contains(package)) }
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
        let failure = try #require(log.failed["compile:mod/6.16.3+deb13-amd64@debian"])
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

    @Test func anUbuntuXenialKernelGetsTheShippedXenialRootWithGcc5() throws {
        let catalog = try shippedCatalog()
        let recipe = try catalog.recipe(for: Self.kernel("4.4.0-210-generic", compiler: "gcc-5", distribution: "ubuntu-16.04"))
        #expect(recipe.name == "ubuntu-xenial")
        #expect(recipe.upstream == "ubuntu")
        #expect(recipe.suites == ["xenial", "xenial-updates"])
        #expect(recipe.components == ["main", "universe"])
        #expect(recipe.variant == .custom)
        // xenial's kernel Makefile calls plain gcc.
        #expect(recipe.packages.contains("gcc") && recipe.packages.contains("gcc-5"))
    }

    /// Recipes in a scratch catalog: the shipped ones and Ubuntu roots offering gcc-4.8.
    func catalogWithGcc48Roots(_ scratch: Scratch) throws -> ToolchainCatalog {
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes/toolchains", toPath: scratch.file("toolchains"))
        for (name, distribution, upstream) in [("a-trusty-gcc48", "ubuntu-14.04", "trusty"), ("ubuntu-xenial-gcc48", "ubuntu-16.04", "ubuntu")] {
            try scratch.write("toolchains/\(name).yml", """
                farm: 1
                distribution: \(distribution)
                upstream: \(upstream)
                suites: [xenial, xenial-updates]
                components: [main, universe]
                compiler: gcc-4.8
                variant: custom
                packages: [dpkg, make, gcc-4.8, libc6-dev]
                links: {/usr/bin/gcc: gcc-4.8}

                """)
        }
        return try ToolchainCatalog.load(directory: scratch.file("toolchains"))
    }

    @Test func aKernelIsMatchedToARootWithItsCompilerVersionOfItsOwnDistributionFirstElseAnyOther() throws {
        let scratch = try Scratch()
        let catalog = try catalogWithGcc48Roots(scratch)
        // CentOS 7's gcc 4.8.5: no CentOS root, so an Ubuntu one providing gcc-4.8.
        let centos = Self.kernel("3.10.0-1160.el7.x86_64", compiler: "gcc-4.8", distribution: "centos-7")
        #expect(try catalog.recipe(for: centos).name == "a-trusty-gcc48")
        // The kernel's own distribution first.
        #expect(try catalog.recipe(for: Self.kernel("4.4.0-21-generic", compiler: "gcc-4.8", distribution: "ubuntu-16.04")).name == "ubuntu-xenial-gcc48")
        // A root whose upstream the manifest lists comes before one whose upstream it lacks.
        let manifest = try ManifestLoader.load(path: try scratch.write("manifest.yml", """
            farm: 1
            upstreams:
              ubuntu: {kind: apt, mirror: apt, suites: [xenial], components: [main], architectures: [amd64]}
            modules: []
            kernels: []

            """))
        #expect(try catalog.recipe(for: centos, in: manifest).name == "ubuntu-xenial-gcc48")
        // The same version name, not the same family's newest: gcc-4.9 has no root.
        let error = try #require(throws: ManifestError.self) {
            try catalog.recipe(for: Self.kernel("3.16.0-11-amd64", compiler: "linux-compiler-gcc-4.9-x86", distribution: "debian-8"))
        }
        #expect(error.description.contains("manifest.yml:40:5: error: kernel 3.16.0-11-amd64 needs the compiler gcc-4.9"), "\(error)")
    }

    @Test func aRootsLinksVariantSuitesAndUpstreamMakeItsMmdebstrapCommand() throws {
        let scratch = try Scratch()
        try FileManager.default.copyItem(atPath: (try catalogWithGcc48Roots(scratch)).directory, toPath: scratch.file("project/recipes/toolchains"))
        try scratch.write("project/src/Makefile", "obj-m := mod.o\n")
        try scratch.write("project/recipes/mod.yml", "farm: 1\nsource:\n  dir: src\nbuild: make\nmodule: mod.ko\noutput: mod-{release}.ko\n")
        let keyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
        let manifest = try scratch.write("project/manifest.yml", """
            farm: 1
            upstreams:
              debian: {kind: apt, mirror: apt, suites: [bookworm], components: [main], architectures: [amd64]}
              ubuntu: {kind: apt, mirror: "http://127.0.0.1:9/ubuntu", keyring: \(keyring), suites: [xenial], components: [main], architectures: [amd64]}
            modules: [mod]
            kernels:
              - release: 4.4.0-210-generic
                upstream: ubuntu
                suite: xenial
                distribution: ubuntu-16.04
                compiler: gcc-5
                packages: []
              - release: 3.10.0-1160.el7.x86_64
                upstream: debian
                distribution: centos-7
                compiler: gcc-4.8
                packages: []

            """)
        let graph = try Session(manifestPath: manifest, cacheDirectory: scratch.file("cache"), rules: FarmRules(aptRoot: scratch.file("no-apt")))
            .plan([])
        let xenial = try #require(graph.node(named: "toolchain:ubuntu-xenial")?.action as? ToolchainAction)
        let arguments = xenial.mmdebstrapArguments(mode: "unshare", output: "/out/root.tar.zst")
        #expect(arguments.contains("--variant=custom"))
        #expect(arguments.contains("--include=" + xenial.recipe.packages.joined(separator: ",")))
        #expect(Array(arguments.suffix(4)) == ["xenial", "/out/root.tar.zst",
                                               "deb [signed-by=\(keyring)] http://127.0.0.1:9/ubuntu xenial main universe",
                                               "deb [signed-by=\(keyring)] http://127.0.0.1:9/ubuntu xenial-updates main universe"])
        #expect(xenial.parameters.contains { $0 == ("suites", "xenial xenial-updates") })

        // The CentOS kernel's gcc-4.8 root comes from the upstream its recipe names, with its link.
        let gcc48 = try #require(graph.node(named: "toolchain:ubuntu-xenial-gcc48")?.action as? ToolchainAction)
        let command = gcc48.mmdebstrapArguments(mode: "root", output: "/out/root.tar.zst")
        #expect(command.contains(#"--customize-hook=mkdir -p "$1/usr/bin" && ln -sfn 'gcc-4.8' "$1/usr/bin/gcc""#), "\(command)")
        #expect(command.last == "deb [signed-by=\(keyring)] http://127.0.0.1:9/ubuntu xenial-updates main universe")
        #expect(graph.node(named: "compile:mod/3.10.0-1160.el7.x86_64@debian")?.action is CompileAction)
    }

    /// The shipped Debian roots keep the parameters (so the keys) they had before suites, variants and links.
    @Test func debianRootsKeepTheirKeys() throws {
        let recipe = try #require(try shippedCatalog().recipes["debian-bookworm"])
        let action = ToolchainAction(recipe: recipe, sources: ["deb http://127.0.0.1:9/debian bookworm main"], reason: nil)
        #expect(action.parameters.map(\.name) == ["distribution", "suite", "components", "compiler", "packages", "variant", "excluded", "source-date-epoch"])
        #expect(action.parameters.contains { $0 == ("variant", "apt") })
        let arguments = action.mmdebstrapArguments(mode: "root", output: "/o")
        #expect(arguments.contains("--variant=apt"))
        #expect(Array(arguments.suffix(3)) == ["bookworm", "/o", "deb http://127.0.0.1:9/debian bookworm main"])
    }

    /// The default manifest lists no Ubuntu upstream: its build plans as before, and only a kernel
    /// that needs the xenial root fails, saying which upstream to add.
    @Test func aRootWhoseUpstreamTheManifestLacksFailsOnlyTheKernelsThatNeedIt() throws {
        let scratch = try Scratch()
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes/toolchains", toPath: scratch.file("project/recipes/toolchains"))
        try scratch.write("project/src/Makefile", "obj-m := mod.o\n")
        let session = try sourceProject(scratch, source: "  dir: src", kernels: """
          - release: 6.1.0-56-amd64
            upstream: debian
            suite: bookworm
            distribution: debian-12
            compiler: linux-compiler-gcc-12-x86
            packages: []
          - release: 4.4.0-210-generic
            upstream: debian
            distribution: ubuntu-16.04
            compiler: gcc-5
            packages: []

        """)
        let graph = try session.plan([])
        #expect(graph.node(named: "compile:mod/6.1.0-56-amd64@debian")?.action is CompileAction)
        #expect(graph.node(named: "toolchain:ubuntu-xenial") == nil)
        let failed = try #require(graph.node(named: "compile:mod/4.4.0-210-generic@debian")?.action as? UnbuildableAction)
        let recipe = scratch.file("project/recipes/toolchains/ubuntu-xenial.yml")
        let line = try #require(try String(contentsOfFile: recipe, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .firstIndex { $0.hasPrefix("upstream:") }) + 1
        #expect(failed.message.hasPrefix("\(recipe):\(line):11: error: toolchain ubuntu-xenial, which kernel 4.4.0-210-generic needs,"
                                         + " is made from upstream 'ubuntu'"), "\(failed.message)")
        #expect(failed.message.contains("add an apt upstream named 'ubuntu' under 'upstreams:'"), "\(failed.message)")
        #expect(failed.message.contains("keyring: /usr/share/keyrings/ubuntu-archive-keyring.gpg"), "\(failed.message)")
    }

    @Test func recipesWithSuitesVariantsAndLinksAreCheckedWithTheirPlace() throws {
        let scratch = try Scratch()
        let head = "farm: 1\ndistribution: ubuntu-16.04\ncompiler: gcc-5\n"
        for (body, expected) in [
            ("suite: xenial\nsuites: [xenial]\npackages: [gcc-5]\n", "broken.yml:5:9: error: give 'suite' or 'suites', not both"),
            ("suites: []\npackages: [gcc-5]\n", "broken.yml:4:9: error: 'suites' lists no suite"),
            ("packages: [gcc-5]\n", "broken.yml:1:1: error: missing key 'suite' (or 'suites')"),
            ("suite: xenial\nvariant: minbase\npackages: [gcc-5]\n", "broken.yml:5:10: error: unknown variant 'minbase'; expected one of: apt, custom"),
            ("suite: xenial\nvariant: custom\npackages: [gcc-5, make]\n", "broken.yml:6:11: error: a 'variant: custom' root has only the packages it lists, and it must list 'dpkg'"),
            ("suite: xenial\npackages: [gcc-5]\nlinks: {usr/bin/gcc: gcc-5}\n", "broken.yml:6:9: error: a link's path must be absolute"),
            ("suite: xenial\npackages: [gcc-5]\nlinks: {/usr/bin/gcc: \"gcc-5'; rm -rf /\"}\n", "broken.yml:6:23: error: a link target is letters"),
        ] {
            try scratch.write("toolchains/broken.yml", head + body)
            let error = try #require(throws: ManifestError.self) { try ToolchainCatalog.load(directory: scratch.file("toolchains")) }
            #expect(error.description.contains(expected), "\(error)")
        }
        try scratch.write("toolchains/broken.yml", head + "suite: xenial\npackages: [gcc-4.8]\ncompiler: gcc-4.8\n")
        #expect(throws: ManifestError.self) { try ToolchainCatalog.load(directory: scratch.file("toolchains")) }
        try scratch.write("toolchains/broken.yml", "farm: 1\ndistribution: ubuntu-14.04\ncompiler: gcc-4.8\nsuite: trusty\npackages: [gcc-4.8]\n")
        #expect(try ToolchainCatalog.load(directory: scratch.file("toolchains")).recipes["broken"]?.compiler == "gcc-4.8")
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
