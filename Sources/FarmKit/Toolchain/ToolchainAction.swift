import FarmEngine
import Foundation

/// Task kind `toolchain`: a root file system made by mmdebstrap from a toolchain recipe, stored
/// as one `root.tar.zst`. The key covers the recipe, not the mirror; mmdebstrap's output is
/// byte-reproducible for the same packages, and compile keys use the tarball's digest, so a
/// rebuilt identical root rebuilds no module.
public struct ToolchainAction: TaskAction {
    /// The fixed time every file in a root (and every module) is stamped with.
    public static let sourceDateEpoch = "1700000000"
    /// Documentation and translations nobody compiles with.
    static let excluded = ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*"]

    public let recipe: ToolchainRecipe
    /// One `deb [signed-by=...] URI suite components` line per suite of the recipe, from its
    /// upstream; empty when no mirror could be worked out (`reason`).
    public let sources: [String]
    public let reason: String?

    public init(recipe: ToolchainRecipe, sources: [String], reason: String?) {
        self.recipe = recipe
        self.sources = sources
        self.reason = reason
    }

    public var kind: String { "toolchain" }

    public var sharedRemotely: Bool { true }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] {
        var parameters = [("distribution", recipe.distribution), ("suite", recipe.suite), ("components", recipe.components.joined(separator: " ")),
                          ("compiler", recipe.compiler), ("packages", recipe.packages.joined(separator: " ")), ("variant", recipe.variant.rawValue),
                          ("excluded", ToolchainAction.excluded.joined(separator: " ")), ("source-date-epoch", ToolchainAction.sourceDateEpoch)]
        // Only when used, so that the roots of recipes without them keep their keys.
        if recipe.suites.count > 1 { parameters.append(("suites", recipe.suites.joined(separator: " "))) }
        if !recipe.links.isEmpty { parameters.append(("links", recipe.links.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))) }
        return parameters
    }
    public var resource: ResourceClass { .cpu }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        guard !sources.isEmpty else {
            throw FarmError(message: "toolchain \(recipe.name) (\(recipe.path)): no mirror for suite \(recipe.suite): \(reason ?? "unknown")")
        }
        guard let mmdebstrap = Executable.find("mmdebstrap") else {
            throw FarmError.toolMissing(tool: "mmdebstrap", package: "mmdebstrap", purpose: "making toolchain \(recipe.name)")
        }
        var command = [mmdebstrap]
        if geteuid() == 0 {
            // In root mode mmdebstrap mounts /proc, /sys, /dev/pts and a bind of the host's /dev/shm
            // into its root. In a mount namespace of its own those mounts vanish with it, and in a
            // pid namespace whose first process dies with unshare (which dies with farm) nothing of
            // it outlives farm: not mmdebstrap, not apt, not gpg-agent. Unshare mode makes its own.
            guard let unshare = Executable.find("unshare") else {
                throw FarmError.toolMissing(tool: "unshare", package: "util-linux", purpose: "making toolchain \(recipe.name)")
            }
            command = [unshare, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=KILL", "--", mmdebstrap]
        }
        let (recipe, launcher, action) = (self.recipe, command, self)
        return try await Blocking.run {
            // A killed farm's mmdebstrap left its root (250 MB) and gpg home in its work directory.
            Leftovers.removeAbandoned(in: context.objects.temporaryDirectory)
            let output = context.workDirectory + "/root.tar.zst"
            // mmdebstrap's own temporary directory, in the cache: what a killed run leaves is farm's to clean.
            let temporary = context.workDirectory + "/tmp"
            try AtomicFile.makeDirectory(temporary)
            let arguments = action.mmdebstrapArguments(mode: geteuid() == 0 ? "root" : "unshare", output: output)
            context.log.append("mmdebstrap \(arguments.joined(separator: " "))\n")
            var environment = ProcessInfo.processInfo.environment.filter { ["PATH", "http_proxy", "https_proxy", "no_proxy"].contains($0.key) }
            environment["TMPDIR"] = temporary
            environment["SOURCE_DATE_EPOCH"] = ToolchainAction.sourceDateEpoch
            environment["LC_ALL"] = "C.UTF-8"
            let status = try Sandbox.runLogged(launcher[0], Array(launcher.dropFirst()) + arguments, environment: environment, log: context.log)
            guard status == 0, FileManager.default.fileExists(atPath: output) else {
                throw FarmError(message: "mmdebstrap failed (exit \(status)) making toolchain \(recipe.name) from '\(action.sources.joined(separator: "', '"))';"
                                     + " the log says why: farm log \(FarmTask.toolchain(name: recipe.name))")
            }
            return ["root": try context.store(file: output)]
        }
    }
}

extension ToolchainAction {
    /// mmdebstrap's arguments after the program: the recipe's variant and packages, every suite's
    /// source line, the links, and a listing of the installed packages for the log.
    public func mmdebstrapArguments(mode: String, output: String) -> [String] {
        var arguments = ["--mode=\(mode)", "--variant=\(recipe.variant.rawValue)", "--format=tar",
                         "--include=" + recipe.packages.joined(separator: ",")]
        arguments += ToolchainAction.excluded.map { "--dpkgopt=path-exclude=\($0)" }
        // The recipe's characters are checked (ToolchainRecipe.parseLinks), so quoting is enough.
        for (path, target) in recipe.links.sorted(by: { $0.key < $1.key }) {
            let directory = (path as NSString).deletingLastPathComponent
            arguments.append(#"--customize-hook=mkdir -p "$1\#(directory)" && ln -sfn '\#(target)' "$1\#(path)""#)
        }
        // The package list goes into the log: which gcc a module was built with, to the version.
        arguments.append(#"--customize-hook=chroot "$1" dpkg-query -W -f '${Package} ${Version}\n'"#)
        return arguments + [recipe.suite, output] + sources
    }

    public var requirements: [Requirement] {
        [.tool("mmdebstrap", package: "mmdebstrap", purpose: "making toolchain roots (recipes/toolchains/)"),
         .tool("zstd", package: "zstd", purpose: "making toolchain roots (root.tar.zst)")]
    }
}
