import FarmEngine
import FarmKit
import Foundation

// Task kinds made up to exercise the engine: they have the shape of the real graph (packages
// fetched, a bundle per kernel, a shared toolchain, compile, sign, one publish) and do real store
// work, but compute their bytes from their inputs instead of downloading and compiling.

/// Stands in for a download: its output is the package URL's bytes. The pinned sha256 is a
/// parameter, so changing only the pin reruns this task yet yields the same output (early cutoff).
public struct SyntheticFetch: TaskAction {
    public let url: String
    public let sha256: String
    public var kind: String { "synthetic-fetch" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("url", url), ("sha256", sha256)] }
    public var resource: ResourceClass { .network }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        context.log.append("fetched \(url)\n")
        return ["package": try context.store(Data("package \(url)\n".utf8))]
    }
}

/// Joins a kernel's packages, as a bundle task would.
public struct SyntheticBundle: TaskAction {
    public let release: String
    public var kind: String { "synthetic-bundle" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("release", release)] }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        var bundle = Data("bundle \(release)\n".utf8)
        for role in context.roles(withPrefix: "package.") {
            bundle.append(try context.readInput(role, "package"))
        }
        return ["bundle": try context.store(bundle)]
    }
}

public struct SyntheticToolchain: TaskAction {
    public let name: String
    public init(name: String) { self.name = name }
    public var kind: String { "synthetic-toolchain" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("name", name)] }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        ["root": try context.store(Data("toolchain \(name)\n".utf8))]
    }
}

/// Stands in for a compile. A kernel whose first package URL contains `FAIL` fails with a log;
/// `FARM_SYNTHETIC_DELAY_MS` makes every compile take that long (to kill a build mid-way).
public struct SyntheticCompile: TaskAction {
    public let release: String
    public let fails: Bool
    public var kind: String { "synthetic-compile" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("release", release), ("fails", fails ? "yes" : "no")] }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        if let delay = ProcessInfo.processInfo.environment["FARM_SYNTHETIC_DELAY_MS"].flatMap(Int.init), delay > 0 {
            try await Task.sleep(for: .milliseconds(delay))
        }
        let bundle = try context.readInput("bundle", "bundle")
        let root = try context.readInput("toolchain", "root")
        context.log.append("compiling for \(release)\nline 2 of the compiler's output\n")
        if fails {
            context.log.append("error: headers for \(release) are broken\n")
            throw FarmError(message: "the compiler exited with status 2")
        }
        var hasher = SHA256()
        hasher.update(bundle)
        hasher.update(root)
        return ["module": try context.store(Data("module for \(release) \(hasher.finalize().hex)\n".utf8))]
    }
}

public struct SyntheticSign: TaskAction {
    public let release: String
    public var kind: String { "synthetic-sign" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("release", release)] }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        var module = try context.readInput("module", "module")
        module.append(Data("~signed~\n".utf8))
        return ["signed": try context.store(module)]
    }
}

public struct SyntheticPublish: TaskAction {
    public var kind: String { "synthetic-publish" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [] }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        var index = ""
        for role in context.roles(withPrefix: "module.") {
            index += "\(role) \(try context.input(role, "signed").hex)\n"
        }
        return ["index": try context.store(Data(index.utf8))]
    }
}

/// Per kernel: one fetch per package, bundle, compile (with the kernel's toolchain), sign; then
/// one publish over all kernels. A kernel with two packages gives five tasks.
public struct SyntheticRules: BuildRules {
    public let publish: Bool

    public init(publish: Bool = true) { self.publish = publish }

    /// The synthetic kinds read nothing but the manifest.
    public func planInputs(manifest: Manifest, recipes: RecipeBook) -> [String]? { [] }
    public var settings: String { "synthetic publish \(publish)" }

    public func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws {
        var signed: [BuildGraph.Dependency] = []
        for kernel in kernels {
            var packages: [BuildGraph.Dependency] = []
            for (index, package) in kernel.packages.enumerated() {
                let id = graph.add(SyntheticFetch(url: package.url, sha256: package.sha256.hex), label: package.url)
                packages.append(.init(role: "package.\(index)", node: id))
            }
            let bundle = graph.add(SyntheticBundle(release: kernel.release), label: kernel.release, dependencies: packages)
            let toolchainName = kernel.toolchain ?? "default"
            let toolchain = graph.add(SyntheticToolchain(name: toolchainName), label: toolchainName)
            let fails = kernel.packages.first?.url.contains("FAIL") ?? false
            let compile = graph.add(SyntheticCompile(release: kernel.release, fails: fails), label: kernel.release,
                                    dependencies: [.init(role: "bundle", node: bundle), .init(role: "toolchain", node: toolchain)])
            let sign = graph.add(SyntheticSign(release: kernel.release), label: kernel.release,
                                 dependencies: [.init(role: "module", node: compile)])
            // As the product's publish: a module that failed is left out, under -k, rather than stopping it.
            signed.append(.init(role: "module.\(kernel.release)", node: sign, optional: true))
        }
        if publish, !signed.isEmpty {
            graph.add(SyntheticPublish(), label: "repository", dependencies: signed)
        }
    }
}

/// Writes a manifest of `count` kernels with two pinned packages each, for tests and benchmarks.
public enum SyntheticManifest {
    public static func text(kernels count: Int, toolchains: Int = 3, failing: Set<Int> = []) -> String {
        var text = """
        farm: 1
        upstreams:
          synthetic:
            kind: apt
            mirror: apt
            suites: [bookworm]
        kernels:

        """
        for index in 0..<count {
            let release = "6.\(index / 1000).\(index % 1000)-\(index)-amd64"
            let marker = failing.contains(index) ? "FAIL-" : ""
            text += """
              - release: \(release)
                upstream: synthetic
                toolchain: toolchain-\(index % toolchains)
                packages:
                  - url: pool/main/l/linux/\(marker)linux-headers-\(release)_amd64.deb
                    sha256: \(SHA256.hash("headers \(index)").hex)
                    size: \(1000 + index)
                  - url: pool/main/l/linux/linux-kbuild-\(release)_amd64.deb
                    sha256: \(SHA256.hash("kbuild \(index)").hex)
                    size: \(2000 + index)

            """
        }
        return text
    }
}
