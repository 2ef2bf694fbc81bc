import FarmEngine
import Foundation

/// Task kind `compile`: one recipe's module for one kernel, built in a sandbox. Inputs: `bundle`
/// (output `bundle`, the kernel's headers), `toolchain` (output `root`) and `source` (output
/// `package`, a source-carrying .deb, or `tree`, a tar of the source). Output: `module`.
public struct CompileAction: TaskAction {
    public let recipe: Recipe
    public let release: String
    /// The compiler the toolchain provides (`gcc-12`), checked against the kernel's `.config`.
    public let compiler: String
    public let toolchain: String
    public let backend: SandboxBackend

    public init(recipe: Recipe, release: String, toolchain: ToolchainRecipe, backend: SandboxBackend) {
        self.recipe = recipe
        self.release = release
        self.compiler = toolchain.compiler
        self.toolchain = toolchain.name
        self.backend = backend
    }

    public var kind: String { "compile" }

    public var sharedRemotely: Bool { true }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] {
        var parameters = [("recipe", recipe.name), ("release", release), ("build", recipe.build), ("module", recipe.module),
                          ("output", recipe.outputName(release: release)), ("strip", recipe.strip ? "debug" : "no"),
                          ("compiler", compiler), ("source-date-epoch", ToolchainAction.sourceDateEpoch)]
        // bwrap and chroot show the same root at the same paths and give the same bytes; the host does not.
        if !backend.isReproducible { parameters.append(("sandbox", backend.rawValue)) }
        return parameters
    }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run { try compile(context) }
    }

    /// The sandbox a kernel's modules are built in, from the unpacked bundle and toolchain root:
    /// the bundle's `usr/src/*` and `usr/lib/*` at the same absolute paths, the source at `/build`.
    /// Public for the benchmark, which runs plain `make` in the very same sandbox.
    public static func sandbox(bundleTree: String, root: String, source: String, release: String,
                               command: String, backend: SandboxBackend) throws -> SandboxSpec {
        let buildDirectory = try BundleTree(root: bundleTree, release: release).buildDirectory()
        var mounts: [SandboxSpec.Mount] = []
        let realTree = (bundleTree as NSString).resolvingSymlinksInPath
        for directory in ["usr/src", "usr/lib"] {
            let entries = ((try? FileManager.default.contentsOfDirectory(atPath: bundleTree + "/" + directory)) ?? []).sorted()
            for entry in entries {
                let resolved = ((bundleTree + "/" + directory + "/" + entry) as NSString).resolvingSymlinksInPath
                var isDirectory: ObjCBool = false
                guard resolved.hasPrefix(realTree + "/"), FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory),
                      isDirectory.boolValue else { continue }
                mounts.append(.init(source: resolved, target: "/" + directory + "/" + entry))
            }
        }
        var environment = ["KERNEL_RELEASE": release, "SOURCE_DATE_EPOCH": ToolchainAction.sourceDateEpoch,
                           "KBUILD_BUILD_TIMESTAMP": "@" + ToolchainAction.sourceDateEpoch,
                           "KBUILD_BUILD_USER": "farm", "KBUILD_BUILD_HOST": "farm", "KBUILD_BUILD_VERSION": "1"]
        if backend == .host {
            environment["KERNEL_BUILD_DIR"] = bundleTree + "/" + buildDirectory
            environment["MODULE_DIR"] = source
            environment["BUILD_ROOT"] = bundleTree
        } else {
            environment["KERNEL_BUILD_DIR"] = "/" + buildDirectory
            environment["MODULE_DIR"] = SandboxSpec.buildDirectory
        }
        return SandboxSpec(root: root, mounts: mounts, build: source, command: command, environment: environment)
    }

    private func compile(_ context: TaskContext) throws -> [String: Digest] {
        let trees = UnpackedTrees(objects: context.objects)
        let bundleTree = try trees.tree(of: try context.input("bundle", "bundle"), log: context.log)
        let root = backend == .host ? "/" : try trees.tree(of: try context.input("toolchain", "root"), log: context.log)
        context.log.append("sandbox: \(backend.rawValue)\(backend.isReproducible ? "" : " (the host's compiler: not reproducible)")\n")
        if backend != .host { context.log.append("toolchain: \(toolchain) (\(compiler)), root \(root)\n") }

        try checkCompiler(BundleTree(root: bundleTree, release: release), log: context.log)

        let source = context.workDirectory + "/build"
        try prepareSource(context, into: source)
        let module = recipe.module
        var command = "set -e\n" + recipe.build
        if recipe.strip { command += "\nstrip --strip-debug \"$MODULE_DIR/\(module)\"" }
        let spec = try CompileAction.sandbox(bundleTree: bundleTree, root: root, source: source, release: release,
                                             command: command, backend: backend)
        context.log.append("$ \(recipe.build)\n")
        let status = try Sandbox.run(spec, backend: backend, log: context.log)
        guard status == 0 else {
            throw FarmError(message: "building \(recipe.name) for \(release) failed (exit \(status)) in the \(backend.rawValue) sandbox;"
                               + " the whole log: farm log \(context.kind):\(context.label)")
        }
        let built = source + "/" + module
        guard FileManager.default.fileExists(atPath: built) else {
            throw FarmError(message: "the build of \(recipe.name) for \(release) succeeded but left no \(module); check 'module:' in \(recipe.path)")
        }
        try check(module: built, log: context.log)
        return ["module": try context.store(file: built)]
    }

    private func checkCompiler(_ bundle: BundleTree, log: TaskLog) throws {
        let reading = try CompileAction.checkCompiler(headers: try bundle.headers(), release: release, toolchain: toolchain,
                                                      provides: compiler, enforced: backend != .host)
        if let reading {
            log.append("kernel compiler: \(reading.compiler) (\(reading.text.trimmingCharacters(in: .whitespaces)), from \(reading.file))\n")
        } else {
            log.append("neither .config (CONFIG_CC_VERSION_TEXT) nor include/generated/compile.h (LINUX_COMPILER) in the headers name a"
                       + " compiler; the toolchain follows the compiler the manifest names\n")
        }
    }

    /// The headers record the compiler that built the kernel (`CONFIG_CC_VERSION_TEXT` in the
    /// `.config`, else `LINUX_COMPILER` in `include/generated/compile.h`); when `enforced`, the
    /// toolchain must provide that one. Returns what was read, nil when the headers record none.
    public static func checkCompiler(headers: String, release: String, toolchain: String, provides compiler: String,
                                     enforced: Bool = true) throws -> KernelCompiler.Reading? {
        guard let reading = KernelCompiler.read(headers: headers) else { return nil }
        guard !enforced || reading.compiler.name == compiler else {
            let needed = reading.compiler.name
            throw FarmError(message: "kernel \(release) was built with \(needed) (\(reading.file) says '\(reading.text)'), but toolchain"
                               + " \(toolchain) provides \(compiler); add a toolchain recipe with 'compiler: \(needed)' or set 'toolchain:'"
                               + " on the kernel to one")
        }
        return reading
    }

    /// Puts the module's source at `directory`: from a source-carrying .deb (the one directory
    /// under `usr/src/` with a Makefile or Kbuild), or from a source tarball.
    private func prepareSource(_ context: TaskContext, into directory: String) throws {
        if context.inputs["source"]?["package"] != nil {
            let staging = context.workDirectory + "/source-package"
            let summary = try PackageExtractor.extract(package: try context.inputPath("source", "package"), into: staging)
            let sources = staging + "/usr/src"
            let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: sources)) ?? []).sorted().filter { name in
                ["Makefile", "Kbuild"].contains { FileManager.default.fileExists(atPath: sources + "/" + name + "/" + $0) }
            }
            guard candidates.count == 1 else {
                throw FarmError(message: "package \(summary.name ?? "?") \(summary.version ?? "") should hold one module source under /usr/src"
                                   + " (a directory with a Makefile or Kbuild); found \(candidates.isEmpty ? "none" : candidates.joined(separator: ", "))")
            }
            context.log.append("source: \(summary.name ?? "package") \(summary.version ?? ""), /usr/src/\(candidates[0])\n")
            try FileManager.default.moveItem(atPath: sources + "/" + candidates[0], toPath: directory)
        } else {
            try AtomicFile.makeDirectory(directory)
            let archive = try context.inputPath("source", "tree")
            do {
                try UnpackedTrees.untar(archive, into: directory, options: ["--no-same-owner"])
            } catch {
                throw FarmError(message: "the source of \(recipe.name): \(error)")
            }
            context.log.append("source: \(try context.input("source", "tree").short)\n")
        }
    }

    /// The module must say it is for this kernel and is the module the recipe names.
    private func check(module path: String, log: TaskLog) throws {
        let info = try ModuleInfo.read(path: path)
        let vermagic = info.value("vermagic") ?? ""
        let expectedName = ((recipe.module as NSString).deletingPathExtension).replacingOccurrences(of: "-", with: "_")
        guard vermagic.hasPrefix(release + " ") || vermagic == release else {
            throw FarmError(message: "\(recipe.module) was built for the wrong kernel: its vermagic is '\(vermagic)', which does not start with \(release)")
        }
        guard info.value("name") == expectedName else {
            throw FarmError(message: "\(recipe.module) calls itself '\(info.value("name") ?? "")' in .modinfo, not '\(expectedName)'")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        log.append("\(recipe.module): name=\(expectedName) vermagic=\(vermagic), \(size) bytes\n")
    }
}

extension CompileAction {
    public var requirements: [Requirement] { [backend.requirement] }
}
