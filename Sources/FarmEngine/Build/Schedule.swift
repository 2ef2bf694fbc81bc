/// The scheduler's state machine, apart from running anything: which tasks are waiting, ready,
/// queued per resource class, running, done, failed or skipped, and the counts that move a task
/// from waiting to ready. `Builder` decides each ready task (store or queue) and runs the queue;
/// a dry run uses the same machine and only marks tasks pending.
struct Schedule {
    enum State {
        case waiting
        case done([String: Digest])
        /// Dry run: will run, so its outputs (and its dependents' keys) are unknown.
        case pending
        case failed
        case skipped
        /// Not run: its outputs are known before it runs (`TaskAction.knownOutputs`), and no task
        /// that reads them has had to run yet. Counted as cached until one does.
        case deferred([String: Digest])
    }

    let graph: BuildGraph
    /// The tasks of this build (a target and what it needs, or everything).
    let selected: [BuildGraph.NodeID]
    private let inBuild: Set<BuildGraph.NodeID>?
    private(set) var state: [State]
    private var remaining: [Int]
    /// Tasks whose inputs are all settled, to be decided next (a stack).
    private var ready: [BuildGraph.NodeID]
    private var queues: [ResourceClass: [(BuildGraph.NodeID, TaskDefinition)]] = [.cpu: [], .network: [], .io: []]
    private(set) var running: [ResourceClass: Int] = [.cpu: 0, .network: 0, .io: 0]
    /// Dry run: why each task that would run would run, for the reasons of its dependents.
    private(set) var reasons: [BuildGraph.NodeID: String] = [:]
    private(set) var finished = 0
    var summary = BuildSummary()
    /// Deferred tasks a dependent needed: they run now, whatever they know.
    private(set) var required = Set<BuildGraph.NodeID>()
    /// Queued or running: decided already, whatever becomes ready meanwhile.
    private var inFlight = Set<BuildGraph.NodeID>()

    init(graph: BuildGraph, targets: [BuildGraph.NodeID]?) {
        self.graph = graph
        selected = targets.map { graph.closure(of: $0) } ?? Array(graph.nodes.indices)
        inBuild = targets == nil ? nil : Set(selected)
        state = [State](repeating: .waiting, count: graph.count)
        var remaining = [Int](repeating: 0, count: graph.count)
        for id in selected { remaining[id] = graph.nodes[id].dependencies.count }
        self.remaining = remaining
        ready = selected.filter { remaining[$0] == 0 }.reversed()
        // A task asked for by name runs (or comes from the store) even when its outputs are known.
        required = Set(targets ?? [])
        summary.total = selected.count
    }

    var progress: BuildEvent.Progress {
        BuildEvent.Progress(finished: finished, total: summary.total, running: running.values.reduce(0, +))
    }

    /// The next ready task, if any.
    mutating func nextReady() -> BuildGraph.NodeID? {
        while let id = ready.popLast() {
            // Ready once, then waiting again for a deferred input it shares: it comes back when that is done.
            if case .waiting = state[id], !inFlight.contains(id), remaining[id] == 0 { return id }
        }
        return nil
    }

    /// The task's definition from what its dependencies gave, by the one resolver.
    func resolve(_ id: BuildGraph.NodeID) -> DefinitionResolution {
        TaskDefinition.resolve(graph.nodes[id], in: graph) { dependency in
            switch state[dependency.node] {
            case let .done(outputs), let .deferred(outputs): .outputs(outputs)
            case .failed, .skipped: .absent
            case .pending, .waiting: .unknown(reasons[dependency.node] ?? "it runs first")
            }
        }
    }

    mutating func takeFromStore(_ id: BuildGraph.NodeID, outputs: [String: Digest]) {
        state[id] = .done(outputs)
        summary.cached += 1
        finished += 1
        release(id)
    }

    /// Puts off a task whose outputs are known (`knownOutputs`) until a dependent needs it.
    mutating func deferRun(_ id: BuildGraph.NodeID, outputs: [String: Digest]) {
        state[id] = .deferred(outputs)
        summary.cached += 1
        finished += 1
        release(id)
    }

    /// Whether `id` reads the outputs of a task that was put off.
    func hasDeferredInputs(_ id: BuildGraph.NodeID) -> Bool {
        graph.nodes[id].dependencies.contains { if case .deferred = state[$0.node] { true } else { false } }
    }

    /// The deferred tasks `id` reads must run after all: they become ready, and every undecided
    /// task that reads them (`id` among them) waits for them again.
    mutating func runDeferredInputs(of id: BuildGraph.NodeID) {
        for dependency in graph.nodes[id].dependencies {
            guard case .deferred = state[dependency.node], required.insert(dependency.node).inserted else { continue }
            state[dependency.node] = .waiting
            summary.cached -= 1
            finished -= 1
            for dependent in graph.dependents[dependency.node] where inBuild?.contains(dependent) ?? true {
                if case .waiting = state[dependent] { remaining[dependent] += 1 }
            }
            ready.append(dependency.node)
        }
    }

    /// A task launched only to look for its result in the remote cache did not find it: it goes
    /// back to waiting, for the deferred inputs it now needs (`runDeferredInputs`).
    mutating func notFoundRemotely(_ id: BuildGraph.NodeID) {
        running[graph.nodes[id].action.resource, default: 1] -= 1
        inFlight.remove(id)
        runDeferredInputs(of: id)
        if remaining[id] == 0 { ready.append(id) }
    }

    /// Dry run: the task would run, for `reason`.
    mutating func markPending(_ id: BuildGraph.NodeID, reason: String) {
        state[id] = .pending
        summary.wouldRun += 1
        reasons[id] = reason
        release(id)
    }

    mutating func enqueue(_ id: BuildGraph.NodeID, _ definition: TaskDefinition) {
        inFlight.insert(id)
        queues[graph.nodes[id].action.resource, default: []].append((id, definition))
    }

    /// Takes queued tasks up to each class's limit, marking them running.
    mutating func launchable(limits: [ResourceClass: Int]) -> [(BuildGraph.NodeID, TaskDefinition)] {
        var launched: [(BuildGraph.NodeID, TaskDefinition)] = []
        for resource in [ResourceClass.network, .io, .cpu] {
            let limit = limits[resource] ?? 1
            while running[resource, default: 0] < limit, !(queues[resource]?.isEmpty ?? true) {
                launched.append(queues[resource]!.removeFirst())
                running[resource, default: 0] += 1
            }
        }
        return launched
    }

    /// The task ran, or (`fromRemote`) its result was taken from the remote cache instead.
    mutating func succeeded(_ id: BuildGraph.NodeID, outputs: [String: Digest], fromRemote: Bool = false) {
        running[graph.nodes[id].action.resource, default: 1] -= 1
        inFlight.remove(id)
        finished += 1
        state[id] = .done(outputs)
        if fromRemote {
            summary.cached += 1
            summary.remote += 1
        } else {
            summary.built += 1
        }
        release(id)
    }

    mutating func failed(_ id: BuildGraph.NodeID) {
        running[graph.nodes[id].action.resource, default: 1] -= 1
        inFlight.remove(id)
        finished += 1
        state[id] = .failed
        summary.failed += 1
        summary.failures.append(graph.nodes[id].name)
    }

    /// Marks everything downstream of a failed task as skipped, except where it is an optional
    /// input: that dependent goes on without it. Returns the skipped tasks, in order.
    mutating func skipDependents(of id: BuildGraph.NodeID) -> [BuildGraph.NodeID] {
        var skipped: [BuildGraph.NodeID] = []
        var stack = graph.dependents[id].map { (parent: id, node: $0) }
        while let (parent, next) = stack.popLast() {
            guard inBuild?.contains(next) ?? true, case .waiting = state[next] else { continue }
            if graph.nodes[next].dependencies.contains(where: { $0.node == parent && $0.optional }) {
                remaining[next] -= 1
                if remaining[next] == 0 { ready.append(next) }
                continue
            }
            state[next] = .skipped
            summary.skipped += 1
            finished += 1
            skipped.append(next)
            stack.append(contentsOf: graph.dependents[next].map { (parent: next, node: $0) })
        }
        return skipped
    }

    /// Tasks that were never decided (the build stopped at a failure).
    var notDecided: Int { selected.filter { if case .waiting = state[$0] { true } else { false } }.count }

    /// Tasks not taken from the store: they will run (or, in a dry run, would).
    var toRun: [BuildGraph.Node] {
        selected.filter {
            switch state[$0] {
            case .done, .deferred: false
            default: true
            }
        }.map { graph.nodes[$0] }
    }

    private mutating func release(_ id: BuildGraph.NodeID) {
        for dependent in graph.dependents[id] where inBuild?.contains(dependent) ?? true {
            remaining[dependent] -= 1
            if remaining[dependent] == 0 { ready.append(dependent) }
        }
    }
}
