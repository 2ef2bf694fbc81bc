import FarmEngine
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
    /// Known before it runs, as a real fetch's pin: deferred until a task that reads it runs here.
    public var knownOutputs: [String: Digest]? { ["package": SHA256.hash(Data(contents.utf8))] }
    private var contents: String { "package \(url)\n" }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        context.log.append("fetched \(url)\n")
        return ["package": try context.store(Data(contents.utf8))]
    }
}

/// Joins a kernel's packages, as a bundle task would.
public struct SyntheticBundle: TaskAction {
    public let release: String
    public var kind: String { "synthetic-bundle" }
    public var sharedRemotely: Bool { true }
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
    public var sharedRemotely: Bool { true }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("name", name)] }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        ["root": try context.store(Data("toolchain \(name)\n".utf8))]
    }
}

/// Stands in for a compile. A kernel marked `fails` fails with a log;
/// `FARM_SYNTHETIC_DELAY_MS` makes every compile take that long (to kill a build mid-way).
public struct SyntheticCompile: TaskAction {
    public let release: String
    public let fails: Bool
    public var kind: String { "synthetic-compile" }
    public var sharedRemotely: Bool { true }
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
    public var sharedRemotely: Bool { true }
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
