import FarmEngine
import Foundation

/// Turns the kernels a build covers into tasks. The product's rules add fetch, bundle, compile,
/// sign and publish tasks; tests supply rules of their own.
public protocol BuildRules: Sendable {
    func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws
    /// What a lab boots for `kernel` (`farm lab up`): the node whose outputs are `kernel` and `initramfs`.
    func planLab(_ kernel: Kernel, manifest: Manifest, into graph: inout BuildGraph) throws -> BuildGraph.NodeID
    /// `kernel`'s symbol table (`farm profile`), whether or not the manifest has `profiles: true`:
    /// the node whose outputs are `table` and `banner`.
    func planProfile(_ kernel: Kernel, manifest: Manifest, into graph: inout BuildGraph) throws -> BuildGraph.NodeID
    /// Every file or directory (walked) besides the manifest that a plan is made from, for the
    /// up-to-date stamp (`UpToDateStamp`); nil when the rules cannot say, and then no stamp is kept.
    func planInputs(manifest: Manifest, recipes: RecipeBook) -> [String]?
    /// The rules' own settings that change a plan (a sandbox option, an apt root), for the stamp's identity.
    var settings: String { get }
    /// The tasks a build report (`--report`, `farm report`) follows for `kernel`.
    func reportTasks(for kernel: Kernel, manifest: Manifest, recipes: RecipeBook) -> KernelTasks
}

extension BuildRules {
    public func planInputs(manifest: Manifest, recipes: RecipeBook) -> [String]? { nil }
    public var settings: String { "" }
    public func reportTasks(for kernel: Kernel, manifest: Manifest, recipes: RecipeBook) -> KernelTasks { KernelTasks() }

    public func planLab(_ kernel: Kernel, manifest: Manifest, into graph: inout BuildGraph) throws -> BuildGraph.NodeID {
        throw FarmError.badInput("these rules make no lab image")
    }

    public func planProfile(_ kernel: Kernel, manifest: Manifest, into graph: inout BuildGraph) throws -> BuildGraph.NodeID {
        throw FarmError.badInput("these rules make no symbol table")
    }
}

/// From manifest + recipes + patterns to a DAG of typed tasks.
public struct Planner: Sendable {
    public let rules: any BuildRules

    public init(rules: any BuildRules) { self.rules = rules }

    /// The kernels that match any of the patterns (all kernels when there is none).
    public static func select(_ kernels: [Kernel], patterns: [KernelPattern], manifestPath: String) throws -> [Kernel] {
        guard !patterns.isEmpty else { return kernels }
        for pattern in patterns where !kernels.contains(where: { pattern.matches($0) }) {
            let examples = kernels.prefix(3).map(\.release).joined(separator: ", ")
            throw FarmError.badInput("pattern '\(pattern)' matches none of the \(kernels.count) kernels in \(manifestPath)"
                + (examples.isEmpty ? "; run 'farm crawl' to list kernels" : " (e.g. \(examples)); quote the pattern so the shell does not expand it"))
        }
        return kernels.filter { kernel in patterns.contains { $0.matches(kernel) } }
    }

    /// The tasks for the kernels `patterns` select (all without one), and of those only the
    /// ones in `shard` when given. A shard that holds fewer kernels than the manifest publishes
    /// nothing, as a pattern's build does; the whole manifest's build publishes from the cache.
    public func plan(manifest: Manifest, recipes: RecipeBook, patterns: [KernelPattern], shard: KernelShard? = nil) throws -> BuildGraph {
        var kernels = try Planner.select(manifest.kernels, patterns: patterns, manifestPath: manifest.path)
        if let shard { kernels = kernels.filter(shard.contains) }
        var graph = BuildGraph()
        try rules.plan(kernels: kernels, manifest: manifest, recipes: recipes, into: &graph)
        return graph
    }
}

