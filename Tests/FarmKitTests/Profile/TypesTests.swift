import FarmEngine
import FarmKit
import Foundation
import Testing

/// Stands in for a task that made a file: a local file into the CAS under output `output`.
struct LocalOutput: TaskAction {
    let path: String
    let output: String
    var kind: String { "local-output" }
    var version: Int { 1 }
    var parameters: [(name: String, value: String)] { [("path", path), ("output", output)] }

    func run(_ context: TaskContext) async throws -> [String: Digest] {
        [output: try context.objects.putCopy(of: path).digest]
    }
}

@Suite("The types task")
struct TypesTests {
    static let kernel = KernelName(release: "6.1.0-99-amd64", upstream: "debian")

    static func bookworm() throws -> ToolchainRecipe {
        try #require(try ToolchainCatalog.load(directory: DebianArchiveTests.projectRoot + "/recipes/toolchains").recipes["debian-bookworm"])
    }

    /// A bundle (made by tar, as the bundle task's output is unpacked) whose header tree is not
    /// there: `BUNDLE_BUILD_DIR` names a directory the bundle lacks, or the bundle names none.
    @Test(arguments: [true, false])
    func aBundleWithoutHeadersFailsTheTypesTaskNamingTheTaskAndTheKernel(namesTheTree: Bool) async throws {
        let scratch = try Scratch()
        let release = Self.kernel.release
        try scratch.write("bundle/BUNDLE_VERSION", "6")
        try scratch.write("bundle/usr/src/linux-headers-6.1.0-99-common/Makefile", "all:\n")
        if namesTheTree { try scratch.write("bundle/BUNDLE_BUILD_DIR", "./usr/src/linux-headers-\(release)\n") }
        let tar = try runProcess("/bin/tar", ["-czf", scratch.file("bundle.tgz"), "-C", scratch.file("bundle"), "."])
        try #require(tar.status == 0, "\(tar.stderr)")
        try scratch.write("root.tar", "")

        var graph = BuildGraph()
        let bundle = graph.add(LocalOutput(path: scratch.file("bundle.tgz"), output: "bundle"), label: "bundle")
        let root = graph.add(LocalOutput(path: scratch.file("root.tar"), output: "root"), label: "root")
        // The host backend: the headers are checked before any sandbox or root is needed.
        let types = graph.add(TypesAction(release: release, toolchain: try Self.bookworm(), backend: .host), as: .types(kernel: Self.kernel),
                              dependencies: [.init(role: "bundle", node: bundle), .init(role: "toolchain", node: root)])
        let cache = try BuildCache(directory: scratch.file("cache"))
        defer { cache.close() }
        let summary = try await Builder(cache: cache, options: BuildOptions(jobs: 1), reporter: EventLog()).build(graph, collecting: [types])
        #expect(summary.failures == ["types:\(Self.kernel)"])
        #expect(summary.collected[types] == nil)
        let record = try #require(try cache.latestRecord(kind: "types", label: Self.kernel.description))
        let error = record.error ?? ""
        #expect(error.contains("types:6.1.0-99-amd64@debian: kernel 6.1.0-99-amd64 has no header tree in its bundle"), "\(error)")
        #expect(error.contains(namesTheTree ? "no usr/src/linux-headers-6.1.0-99-amd64/Makefile" : "BUNDLE_BUILD_DIR"), "\(error)")
        #expect(error.contains("farm bundle 6.1.0-99-amd64"), "\(error)")
        #expect(record.outputs.isEmpty)
    }

    /// The profile task asks for a kernel's types only when its image has no BTF: `planTypes`
    /// adds them after the kernel's bundle and toolchain, and a build's plan has none.
    @Test func planTypesAddsTheTaskOverTheKernelsBundleAndToolchainAndABuildPlansNone() throws {
        let scratch = try Scratch()
        try FileManager.default.copyItem(atPath: DebianArchiveTests.projectRoot + "/recipes/toolchains", toPath: scratch.file("project/recipes/toolchains"))
        try scratch.write("project/src/Makefile", "obj-m := mod.o\n")
        try scratch.write("project/recipes/mod.yml", "farm: 1\nsource:\n  dir: src\nbuild: make\nmodule: mod.ko\noutput: mod-{release}.ko\n")
        func kernel(_ release: String, _ distribution: String, _ compiler: String) -> String {
            """
              - release: \(release)
                upstream: debian
                distribution: \(distribution)
                compiler: \(compiler)
                packages:
                  - url: file://\(scratch.file("nowhere.deb"))
                    sha256: \(String(repeating: "0", count: 64))
                    size: 1

            """
        }
        let manifest = try scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          debian: {kind: apt, mirror: apt, suites: [bookworm], components: [main], architectures: [amd64]}
        modules: [mod]
        kernels:
        \(kernel("6.1.0-56-amd64", "debian-12", "linux-compiler-gcc-12-x86"))\(kernel("6.16.3+deb13-amd64", "debian-13", "gcc-15"))
        """)
        let session = try Session(manifestPath: manifest, cacheDirectory: scratch.file("cache"), rules: FarmRules())
        var graph = BuildGraph()
        let types = try FarmRules().planTypes(try session.kernel("6.1.0-56-amd64"), manifest: session.manifest, into: &graph)
        #expect(graph.nodes[types].name == "types:6.1.0-56-amd64@debian")
        #expect(Set(graph.nodes[types].dependencies.map { "\($0.role) \(graph.nodes[$0.node].name)" })
                    == ["bundle bundle:6.1.0-56-amd64@debian", "toolchain toolchain:debian-bookworm"])
        #expect(try !session.plan([]).nodes.contains { $0.action.kind == "types" })
        // A kernel no toolchain recipe covers: the planner's error names the compiler it needs.
        let error = try #require(throws: (any Error).self) {
            try FarmRules().planTypes(try session.kernel("6.16.3+deb13-amd64"), manifest: session.manifest, into: &graph)
        }
        #expect("\(error)".contains("needs the compiler gcc-15"), "\(error)")
    }

    @Test func editingTheModuleSourceChangesTheTasksKey() throws {
        let action = TypesAction(release: Self.kernel.release, toolchain: try Self.bookworm(), backend: .bwrap)
        let parameters = Dictionary(action.parameters.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(parameters["module"] == TypesModule.digest.hex)
        #expect(parameters["compiler"] == "gcc-12")
        #expect(parameters["sandbox"] == nil, "bwrap's result is shared with chroot's")
        #expect(TypesAction(release: Self.kernel.release, toolchain: try Self.bookworm(), backend: .host).parameters.contains { $0 == ("sandbox", "host") })
    }
}

/// `pahole -C NAME` printed: the struct's size and its top-level members' byte offsets.
struct PaholeLayout: Equatable, CustomStringConvertible {
    var size: Int
    var offsets: [String: Int]
    var description: String { "size \(size), " + offsets.sorted { $0.key < $1.key }.map { "\($0.key) at \($0.value)" }.joined(separator: ", ") }

    init(_ text: String, members: [String]) throws {
        let sizeLine = try #require(text.split(separator: "\n").first { $0.contains("/* size: ") }, "no size in:\n\(text)")
        size = try #require(Int(sizeLine.split(separator: "size: ")[1].prefix { $0.isNumber }))
        offsets = [:]
        // Top-level members are indented by one tab: `\tpid_t   pid;   /*  2416     4 */`.
        for line in text.split(separator: "\n") where line.hasPrefix("\t") && !line.hasPrefix("\t\t") {
            guard let semicolon = line.firstIndex(of: ";"), let comment = line.range(of: "/*") else { continue }
            let declaration = line[..<semicolon]
            let name = declaration.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "*" }).last.map { String($0.prefix { $0 != "[" }) }
            guard let name, members.contains(name),
                  let offset = Int(line[comment.upperBound...].drop { $0 == " " }.prefix { $0.isNumber }) else { continue }
            offsets[name] = offset
        }
    }
}

extension DebianArchiveTests {
    @Suite("Kernel types from a module's DWARF, for a real kernel", .serialized)
    struct TypesArchiveTests {
        /// The point of the DWARF path: the module compiled against a kernel's headers must lay
        /// out the structures as that kernel's own BTF does. Debian 6.1 has both, so the two are
        /// compared: task_struct's size and the members pslist reads, then every struct both name.
        @Test func typesFromTheModulesDWARFLayTaskStructOutAsTheKernelsOwnBTF() async throws {
            let project = try await CompileProject.shared.get()
            let session = try Session(manifestPath: project.manifest, cacheDirectory: project.cache, rules: FarmRules())
            let kernel = try #require(session.manifest.kernels.filter {
                ($0.suite == "bookworm" || $0.suite == "bookworm-security") && $0.release.hasPrefix("6.1.") && $0.release.hasSuffix("-amd64")
                    && !$0.release.hasSuffix("-cloud-amd64") && !$0.release.hasSuffix("-rt-amd64")
            }.max { DebianVersion.less($0.version ?? "", $1.version ?? "") }, "no bookworm 6.1 amd64 kernel")
            let rules = FarmRules()
            var graph = BuildGraph()
            let types = try rules.planTypes(kernel, manifest: session.manifest, into: &graph)
            #expect(graph.nodes[types].name == "types:\(kernel.name)")
            _ = try rules.planLab(kernel, manifest: session.manifest, into: &graph)
            let image = try #require(graph.nodes.first { $0.action.kind == "fetch" && $0.label.hasPrefix("linux-image-\(kernel.release)") })
            let cache = try session.openCache()
            defer { cache.close() }
            let summary = try await Builder(cache: cache, options: BuildOptions(jobs: 2), reporter: EventLog())
                .build(graph, targets: [types, image.id], collecting: [types, image.id])
            let log = try? session.log("types:\(kernel.name)").text
            try #require(summary.succeeded, "\(summary.failures)\n\(log ?? "")")
            #expect(log?.contains("sandbox: bwrap") == true && log?.contains("toolchain: debian-bookworm (gcc-12)") == true, "\(log ?? "")")
            let btf = try cache.objects.verifiedPath(of: try #require(summary.collected[types]?["btf"]))

            let scratch = try Scratch()
            let vmlinux = try Self.vmlinux(package: try cache.objects.verifiedPath(of: try #require(summary.collected[image.id]?["package"])),
                                           release: kernel.release, scratch: scratch)
            let pahole = try #require(Executable.find("pahole"), "pahole (dwarves) is needed")
            func layout(_ file: String) throws -> PaholeLayout {
                let result = try runProcess(pahole, ["-C", "task_struct", file])
                try #require(result.status == 0, "pahole -C task_struct \(file): \(result.stderr)")
                return try PaholeLayout(result.stdout, members: ["pid", "comm", "tasks", "mm"])
            }
            let ours = try layout(btf)
            let kernels = try layout(vmlinux)
            #expect(ours.offsets.count == 4, "\(ours)")
            #expect(ours == kernels, "the module's task_struct: \(ours); the kernel's own: \(kernels)")

            func sizes(_ file: String) throws -> [String: Set<String>] {
                let result = try runProcess(pahole, ["--sizes", file])
                try #require(result.status == 0, "pahole --sizes \(file): \(result.stderr)")
                var sizes: [String: Set<String>] = [:]
                for line in result.stdout.split(separator: "\n") {
                    let fields = line.split(separator: "\t")
                    if fields.count >= 2 { sizes[String(fields[0]), default: []].insert(String(fields[1])) }
                }
                return sizes
            }
            let (module, image2) = (try sizes(btf), try sizes(vmlinux))
            // The types Volatility 3's linux plugins read that a header declares.
            for name in ["task_struct", "mm_struct", "vm_area_struct", "files_struct", "fdtable", "file", "dentry", "inode", "super_block",
                         "vfsmount", "module", "list_head", "hlist_head", "kobject", "kset", "cred", "socket", "sock", "inet_sock", "unix_sock",
                         "nsproxy", "pid", "pid_namespace", "timekeeper", "linux_binprm", "net_device", "maple_tree"] {
                #expect(module[name] != nil, "the module's BTF has no struct \(name)")
            }
            let common = module.keys.filter { image2[$0] != nil }
            let differing = common.filter { module[$0]!.isDisjoint(with: image2[$0]!) }.sorted()
            #expect(common.count > 1000, "only \(common.count) structs in both")
            #expect(differing.isEmpty, "sizes differ for \(differing.count) of \(common.count) structs: \(differing.prefix(20))")
        }

        /// The kernel ELF inside an image package's bzImage: the payload the setup header places
        /// (offset at 0x248, length at 0x24c, after the setup sectors), less its 4-byte size.
        static func vmlinux(package: String, release: String, scratch: Scratch) throws -> String {
            _ = try PackageExtractor.extract(package: package, into: scratch.file("image"))
            let bzImage = try Data(contentsOf: URL(fileURLWithPath: scratch.file("image/boot/vmlinuz-\(release)")))
            func word(_ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(bzImage[bzImage.startIndex + at + $1]) << (8 * $1) } }
            let setupSectors = Int(bzImage[bzImage.startIndex + 0x1f1]) == 0 ? 4 : Int(bzImage[bzImage.startIndex + 0x1f1])
            let start = (setupSectors + 1) * 512 + word(0x248)
            let payload = bzImage.subdata(in: bzImage.startIndex + start ..< bzImage.startIndex + start + word(0x24c) - 4)
            try payload.write(to: URL(fileURLWithPath: scratch.file("payload")))
            let tool = payload.starts(with: [0xfd, 0x37, 0x7a, 0x58, 0x5a]) ? "xz" : "zstd"
            let output = scratch.file("vmlinux")
            let result = try runProcess("/bin/sh", ["-c", "\(tool) -dc \"$0\" > \"$1\"", scratch.file("payload"), output])
            try #require(result.status == 0, "\(tool) -d on the payload of \(release): \(result.stderr)")
            return output
        }
    }
}
