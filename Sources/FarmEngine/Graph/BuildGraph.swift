/// The DAG of tasks for one build. Nodes are added dependencies first, so it cannot hold a cycle,
/// and node ids are already a topological order.
public struct BuildGraph: Sendable {
    public typealias NodeID = Int

    public struct Dependency: Sendable, Hashable {
        /// The name under which the dependent sees this input (e.g. `package.0`, `toolchain`).
        public var role: String
        public var node: NodeID
        /// Under `-k`, a failed optional input is left out rather than skipping the dependent
        /// (publish takes the modules that built; one broken kernel never stops the rest).
        public var optional: Bool

        public init(role: String, node: NodeID, optional: Bool = false) {
            self.role = role
            self.node = node
            self.optional = optional
        }
    }

    public struct Node: Sendable {
        public let id: NodeID
        public let action: any TaskAction
        public let label: String
        public let dependencies: [Dependency]
        public var kind: String { action.kind }
        /// `kind:label`, how users name a task on the command line.
        public var name: String { "\(action.kind):\(label)" }
    }

    public private(set) var nodes: [Node] = []
    public private(set) var dependents: [[NodeID]] = []
    private var byName: [String: NodeID] = [:]

    public init() {}

    public var count: Int { nodes.count }

    /// Adds a task, or returns the one already added under the same kind and label (a package
    /// shared by several kernels is fetched once).
    @discardableResult
    public mutating func add(_ action: any TaskAction, label: String, dependencies: [Dependency] = []) -> NodeID {
        let name = "\(action.kind):\(label)"
        if let existing = byName[name] { return existing }
        let id = nodes.count
        precondition(dependencies.allSatisfy { $0.node < id }, "dependencies must be added before their dependents")
        nodes.append(Node(id: id, action: action, label: label, dependencies: dependencies))
        dependents.append([])
        for dependency in dependencies { dependents[dependency.node].append(id) }
        byName[name] = id
        return id
    }

    public func node(named name: String) -> Node? { byName[name].map { nodes[$0] } }

    /// The nodes a set of targets needs, themselves included, in topological order.
    public func closure(of targets: [NodeID]) -> [NodeID] {
        var seen = Set<NodeID>()
        var stack = targets
        while let id = stack.popLast() {
            guard seen.insert(id).inserted else { continue }
            stack.append(contentsOf: nodes[id].dependencies.map(\.node))
        }
        return seen.sorted()
    }
}
