import FarmEngine
import Foundation

/// Task kind `types`: a kernel's types as raw BTF, for kernels whose image carries none (Debian
/// before 5.10, Ubuntu 4.4, CentOS 7). farm's `TypesModule` is compiled with debug information
/// against the kernel's own headers in the sandbox and with the toolchain LiME is compiled with,
/// so its DWARF lays the structures out as the kernel's compiler did; `pahole
/// --btf_encode_detached` then turns that DWARF into a BTF file `BTF(path:)` reads. Inputs:
/// `bundle` (output `bundle`) and `toolchain` (output `root`). Output: `btf`.
public struct TypesAction: TaskAction {
    public let release: String
    /// The compiler the toolchain provides (`gcc-12`), checked against the kernel's headers.
    public let compiler: String
    public let toolchain: String
    public let backend: SandboxBackend

    public init(release: String, toolchain: ToolchainRecipe, backend: SandboxBackend) {
        self.release = release
        self.compiler = toolchain.compiler
        self.toolchain = toolchain.name
        self.backend = backend
    }

    public var kind: String { "types" }

    public var sharedRemotely: Bool { true }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] {
        var parameters = [("release", release), ("compiler", compiler), ("module", TypesModule.digest.hex),
                          ("source-date-epoch", ToolchainAction.sourceDateEpoch)]
        if !backend.isReproducible { parameters.append(("sandbox", backend.rawValue)) }
        return parameters
    }
    public var resource: ResourceClass { .cpu }

    public var requirements: [Requirement] {
        [backend.requirement, .tool("pahole", package: "dwarves", purpose: "kernel types for symbol tables (the types task)")]
    }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run { try build(context) }
    }

    private func build(_ context: TaskContext) throws -> [String: Digest] {
        let task = context.kind + ":" + context.label
        let trees = UnpackedTrees(objects: context.objects)
        let bundleTree = try trees.tree(of: try context.input("bundle", "bundle"), log: context.log)
        let bundle = BundleTree(root: bundleTree, release: release)
        try checkHeaders(bundle, task: task)
        let root = backend == .host ? "/" : try trees.tree(of: try context.input("toolchain", "root"), log: context.log)
        context.log.append("sandbox: \(backend.rawValue)\(backend.isReproducible ? "" : " (the host's compiler: not reproducible)")\n")
        if backend != .host { context.log.append("toolchain: \(toolchain) (\(compiler)), root \(root)\n") }
        if let reading = try CompileAction.checkCompiler(headers: try bundle.headers(), release: release, toolchain: toolchain,
                                                         provides: compiler, enforced: backend != .host) {
            context.log.append("kernel compiler: \(reading.compiler) (from \(reading.file))\n")
        }

        let source = context.workDirectory + "/build"
        try AtomicFile.makeDirectory(source)
        try Data(TypesModule.source.utf8).write(to: URL(fileURLWithPath: source + "/farm_types.c"))
        try Data(TypesModule.kbuild.utf8).write(to: URL(fileURLWithPath: source + "/Kbuild"))
        let make = #"make -C "$KERNEL_BUILD_DIR" M="$MODULE_DIR" modules"#
        let spec = try CompileAction.sandbox(bundleTree: bundleTree, root: root, source: source, release: release,
                                             command: "set -e\n" + make, backend: backend)
        context.log.append("$ \(make)\n")
        let status = try Sandbox.run(spec, backend: backend, log: context.log)
        let module = source + "/" + TypesModule.fileName
        guard status == 0, FileManager.default.fileExists(atPath: module) else {
            throw FarmError(message: "\(task): compiling farm's types module against the headers of \(release) failed (exit \(status))"
                               + " in the \(backend.rawValue) sandbox; the whole log: farm log \(task)")
        }
        return ["btf": try context.store(file: try encode(module: module, task: task, log: context.log))]
    }

    /// The headers are what the module is compiled against: a bundle without them would fail in
    /// make with a message about a missing Makefile, far from the cause.
    private func checkHeaders(_ bundle: BundleTree, task: String) throws {
        let headers: String
        do {
            headers = try bundle.headers()
        } catch {
            throw FarmError(message: "\(task): kernel \(release) has no header tree in its bundle (\(error)); the types module is compiled"
                               + " against the kernel's headers: pin its linux-headers packages ('farm crawl') and check 'farm bundle \(release)'")
        }
        guard FileManager.default.fileExists(atPath: headers + "/Makefile") else {
            let relative = String(headers.dropFirst(bundle.root.count + 1))
            throw FarmError(message: "\(task): kernel \(release) has no header tree in its bundle (no \(relative)/Makefile); the types module"
                               + " is compiled against the kernel's headers: pin its linux-headers packages ('farm crawl') and check"
                               + " 'farm bundle \(release)'")
        }
    }

    /// pahole on the host (it only reads the module's DWARF, nothing runs from the kernel's tree),
    /// then a check that the one type every plugin starts from came through.
    private func encode(module: String, task: String, log: TaskLog) throws -> String {
        guard let pahole = Executable.find("pahole") else {
            throw FarmError.toolMissing(tool: "pahole", package: "dwarves", purpose: "kernel types for symbol tables (\(task))")
        }
        let version = try? Executable.run(pahole, ["--version"])
        log.append("pahole \(version?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? "(version unknown)")\n")
        let output = (module as NSString).deletingLastPathComponent + "/types.btf"
        let arguments = ["--btf_encode_detached=" + output, module]
        log.append("$ pahole \(arguments.joined(separator: " "))\n")
        let status = try Sandbox.runLogged(pahole, arguments, environment: ["LC_ALL": "C"], log: log)
        guard status == 0, FileManager.default.fileExists(atPath: output) else {
            throw FarmError(message: "\(task): pahole could not encode the DWARF of \(TypesModule.fileName) for \(release) as BTF (exit \(status));"
                               + " the log says why: farm log \(task)")
        }
        let sizes = try Executable.run(pahole, ["--sizes", output])
        let structs = sizes.stdout.split(separator: "\n")
        guard let taskStruct = structs.first(where: { $0.hasPrefix("task_struct\t") }) else {
            throw FarmError(message: "\(task): the BTF pahole made from \(TypesModule.fileName) for \(release) has no task_struct"
                               + " (\(structs.count) structs): the module was built without debug information; farm log \(task) shows the build")
        }
        let size = try FileManager.default.attributesOfItem(atPath: output)[.size] as? Int ?? 0
        log.append("types.btf: \(size) bytes, \(structs.count) structs, task_struct \(taskStruct.split(separator: "\t").dropFirst().first ?? "?") bytes\n")
        return output
    }
}
