/// Says why a task will run: never built, definition changed, input X changed, output missing.
public struct Explainer: Sendable {
    public let cache: BuildCache

    public init(cache: BuildCache) { self.cache = cache }

    public func reason(for node: BuildGraph.Node, definition: TaskDefinition) throws -> String {
        let key = definition.key
        if let record = try cache.record(forKey: key) {
            if record.status != 0 { return "it failed last time (\(record.error ?? "see farm log \(node.name)"))" }
            let missing = record.outputs.filter { !cache.objects.isPresent($0.digest) }
            if missing.isEmpty { return "up to date" }
            return "output \(missing.map(\.name).joined(separator: ", ")) is missing from the store"
        }
        guard let last = try cache.latestRecord(kind: node.kind, label: node.label) else { return "never built" }
        guard let old = TaskDefinition(encoded: last.definition) else { return "its last record is unreadable" }
        return TaskDefinition.difference(from: old, to: definition)
    }
}

extension TaskDefinition {
    /// The changes between two definitions of the same task, in words.
    public static func difference(from old: TaskDefinition, to new: TaskDefinition) -> String {
        var changes: [String] = []
        if old.version != new.version {
            changes.append("definition changed (\(new.kind) implementation version \(old.version) -> \(new.version))")
        }
        let oldParameters = Dictionary(old.parameters, uniquingKeysWith: { a, _ in a })
        let newParameters = Dictionary(new.parameters, uniquingKeysWith: { a, _ in a })
        for name in Set(oldParameters.keys).union(newParameters.keys).sorted() where oldParameters[name] != newParameters[name] {
            changes.append("definition changed (parameter \(name): \(oldParameters[name].map(quoted) ?? "none") -> \(newParameters[name].map(quoted) ?? "none"))")
        }
        let oldInputs = Dictionary(old.inputs.map { ("\($0.role)/\($0.output)", $0.digest) }, uniquingKeysWith: { a, _ in a })
        let newInputs = Dictionary(new.inputs.map { ("\($0.role)/\($0.output)", $0.digest) }, uniquingKeysWith: { a, _ in a })
        for name in Set(oldInputs.keys).union(newInputs.keys).sorted() where oldInputs[name] != newInputs[name] {
            switch (oldInputs[name], newInputs[name]) {
            case let (before?, after?): changes.append("input \(name) changed (\(before.short) -> \(after.short))")
            case (nil, _): changes.append("input \(name) is new")
            case (_, nil): changes.append("input \(name) is gone")
            }
        }
        return changes.isEmpty ? "definition changed" : changes.joined(separator: "; ")
    }

    private static func quoted(_ value: String) -> String {
        value.count > 60 ? "'\(value.prefix(57))...'" : "'\(value)'"
    }
}

extension Explainer {
    /// Explains a task of a planned graph: works out its key from the cached outputs of its
    /// dependencies, and when a dependency itself would run, says so instead.
    /// The outputs the store holds for a task as it is planned now, or nil if it would run.
    public func cachedOutputs(of node: BuildGraph.Node, in graph: BuildGraph) throws -> [String: Digest]? {
        try walk(node, in: graph).outputs[node.id]
    }

    public func explain(_ node: BuildGraph.Node, in graph: BuildGraph) throws -> String {
        "\(node.name): \(try walk(node, in: graph).reasons[node.id] ?? "?")"
    }

    /// Resolves every task the node needs, dependencies first, with the scheduler's resolver:
    /// a dependency in the store gives its outputs; one whose last run at this key failed is
    /// absent (an optional input is left out, as `-k` does); any other would run first.
    private func walk(_ node: BuildGraph.Node, in graph: BuildGraph) throws
        -> (outputs: [BuildGraph.NodeID: [String: Digest]], reasons: [BuildGraph.NodeID: String]) {
        var outputs: [BuildGraph.NodeID: [String: Digest]] = [:]
        var reasons: [BuildGraph.NodeID: String] = [:]
        var failed: Set<BuildGraph.NodeID> = []
        for id in graph.closure(of: [node.id]) {
            let current = graph.nodes[id]
            let resolution = TaskDefinition.resolve(current, in: graph) { dependency in
                if let produced = outputs[dependency.node] { return .outputs(produced) }
                if failed.contains(dependency.node) { return .absent }
                // As the scheduler defers it: a pinned download's outputs are known before it runs.
                if let known = graph.nodes[dependency.node].action.knownOutputs { return .outputs(known) }
                return .unknown(reasons[dependency.node] ?? "?")
            }
            let definition: TaskDefinition
            switch resolution {
            case let .resolved(resolved):
                definition = resolved
            case let .unknown(why):
                reasons[id] = why
                continue
            case let .skipped(why):
                // As a -k build does: skipped, and absent for what depends on it.
                failed.insert(id)
                reasons[id] = why
                continue
            }
            if let cached = try cache.cachedOutputs(forKey: definition.key) {
                outputs[id] = Dictionary(uniqueKeysWithValues: cached.map { ($0.name, $0.digest) })
                reasons[id] = "up to date (key \(definition.key.short))"
            } else {
                if let record = try cache.record(forKey: definition.key), record.status != 0 { failed.insert(id) }
                reasons[id] = try reason(for: current, definition: definition)
            }
        }
        return (outputs, reasons)
    }
}
