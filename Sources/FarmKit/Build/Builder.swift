import Foundation

public struct BuildOptions: Sendable {
    /// Tasks of the CPU class run at once (`-j`).
    public var jobs: Int
    /// Downloads at once (`--net-jobs`).
    public var networkJobs: Int
    /// Build everything that does not depend on a failure (`-k`).
    public var keepGoing: Bool
    /// Decide and report what would run; run nothing (`-n`).
    public var dryRun: Bool

    public static var defaultJobs: Int { ProcessInfo.processInfo.activeProcessorCount + 1 }

    public init(jobs: Int = BuildOptions.defaultJobs, networkJobs: Int = 8, keepGoing: Bool = false, dryRun: Bool = false) {
        self.jobs = max(1, jobs)
        self.networkJobs = max(1, networkJobs)
        self.keepGoing = keepGoing
        self.dryRun = dryRun
    }
}

/// Runs a build graph: each task whose key is in the store is taken from it, the rest run in
/// parallel within the limits of their resource class. Each finished task is recorded on its own.
public struct Builder: Sendable {
    public let cache: BuildCache
    public let options: BuildOptions
    public let reporter: any BuildReporter

    public init(cache: BuildCache, options: BuildOptions, reporter: any BuildReporter) {
        self.cache = cache
        self.options = options
        self.reporter = reporter
    }

    /// From this many tasks on, results are read in one scan rather than one query per task.
    static let preloadThreshold = 2_000

    private enum State {
        case waiting
        case done([String: Digest])
        /// Dry run: will run, so its outputs (and its dependents' keys) are unknown.
        case pending
        case failed
        case skipped
    }

    private struct Completion: Sendable {
        let node: BuildGraph.NodeID
        let key: Digest
        let outcome: TaskRunner.Outcome
    }

    /// Builds `targets` and what they need (everything when nil).
    public func build(_ graph: BuildGraph, targets: [BuildGraph.NodeID]? = nil,
                      collecting: Set<BuildGraph.NodeID> = []) async throws -> BuildSummary {
        let clock = ContinuousClock.now
        let writesBefore = cache.databaseChanges
        let selected = targets.map { graph.closure(of: $0) } ?? Array(graph.nodes.indices)
        let inBuild = targets == nil ? nil : Set(selected)
        var state = [State](repeating: .waiting, count: graph.count)
        // Dry run: why each task that would run would run, for the reasons of its dependents.
        var reasons: [BuildGraph.NodeID: String] = [:]
        var remaining = [Int](repeating: 0, count: graph.count)
        for id in selected { remaining[id] = graph.nodes[id].dependencies.count }

        var summary = BuildSummary()
        summary.total = selected.count
        reporter.report(.planned(total: summary.total))

        if selected.count >= Builder.preloadThreshold { try cache.preloadResults() }
        var ready = selected.filter { remaining[$0] == 0 }.reversed() as [BuildGraph.NodeID]
        var queues: [ResourceClass: [(BuildGraph.NodeID, TaskDefinition)]] = [.cpu: [], .network: []]
        var running: [ResourceClass: Int] = [.cpu: 0, .network: 0]
        var stopping = false
        var finished = 0

        func progress() -> BuildEvent.Progress {
            BuildEvent.Progress(finished: finished, total: summary.total, running: running.values.reduce(0, +))
        }

        func release(_ id: BuildGraph.NodeID) {
            for dependent in graph.dependents[id] where inBuild?.contains(dependent) ?? true {
                remaining[dependent] -= 1
                if remaining[dependent] == 0 { ready.append(dependent) }
            }
        }

        /// Marks everything downstream of a failed task as skipped, except where it is an
        /// optional input: that dependent goes on without it.
        func skipDependents(of id: BuildGraph.NodeID) {
            var stack = graph.dependents[id].map { (parent: id, node: $0) }
            while let (parent, next) = stack.popLast() {
                guard inBuild?.contains(next) ?? true, case .waiting = state[next] else { continue }
                let node = graph.nodes[next]
                if node.dependencies.contains(where: { $0.node == parent && $0.optional }) {
                    remaining[next] -= 1
                    if remaining[next] == 0 { ready.append(next) }
                    continue
                }
                state[next] = .skipped
                summary.skipped += 1
                finished += 1
                reporter.report(.skipped(.init(kind: node.kind, label: node.label), progress(), because: graph.nodes[id].name))
                stack.append(contentsOf: graph.dependents[next].map { (parent: next, node: $0) })
            }
        }

        /// Decides each ready task: from the store, or queued to run.
        func settleReady() throws {
            try cache.readBatch { try settleBatch() }
        }

        func settleBatch() throws {
            while let id = ready.popLast() {
                guard case .waiting = state[id] else { continue }
                let node = graph.nodes[id]
                let resolution = TaskDefinition.resolve(node, in: graph) { dependency in
                    switch state[dependency.node] {
                    case let .done(outputs): .outputs(outputs)
                    case .failed, .skipped: .absent
                    case .pending, .waiting: .unknown(reasons[dependency.node] ?? "it runs first")
                    }
                }
                let task = BuildEvent.Task(kind: node.kind, label: node.label)
                guard case let .resolved(definition) = resolution else {
                    // Only in a dry run (a real build settles a task once its inputs are done, and
                    // skips the dependents of a failure): an input will be rebuilt first.
                    let reason = switch resolution { case let .unknown(why), let .skipped(why): why; case .resolved: "" }
                    state[id] = .pending
                    summary.wouldRun += 1
                    reasons[id] = reason
                    reporter.report(.wouldRun(task, reason: reason))
                    release(id)
                    continue
                }
                if let outputs = try cache.cachedOutputs(forKey: definition.key) {
                    state[id] = .done(Dictionary(uniqueKeysWithValues: outputs.map { ($0.name, $0.digest) }))
                    summary.cached += 1
                    finished += 1
                    release(id)
                } else if options.dryRun {
                    state[id] = .pending
                    summary.wouldRun += 1
                    var withKey = task
                    withKey.key = definition.key
                    let reason = try Explainer(cache: cache).reason(for: node, definition: definition)
                    reasons[id] = reason
                    reporter.report(.wouldRun(withKey, reason: reason))
                    release(id)
                } else {
                    queues[node.action.resource, default: []].append((id, definition))
                }
            }
        }

        try await withThrowingTaskGroup(of: Completion.self) { group in
            func launch() {
                guard !stopping else { return }
                for resource in [ResourceClass.network, .cpu] {
                    let limit = resource == .network ? options.networkJobs : options.jobs
                    while running[resource, default: 0] < limit, !(queues[resource]?.isEmpty ?? true) {
                        let (id, definition) = queues[resource]!.removeFirst()
                        running[resource, default: 0] += 1
                        let node = graph.nodes[id]
                        reporter.report(.started(.init(kind: node.kind, label: node.label, key: definition.key), progress()))
                        group.addTask { [cache] in
                            let outcome = await TaskRunner(cache: cache).run(node, definition: definition)
                            return Completion(node: id, key: definition.key, outcome: outcome)
                        }
                    }
                }
            }

            try settleReady()
            // Everything not taken from the store now will run (or, in a dry run, would run).
            try Builder.checkRequirements(of: selected.lazy.filter { if case .done = state[$0] { false } else { true } }.map { graph.nodes[$0] })
            launch()
            while let completion = try await group.next() {
                let node = graph.nodes[completion.node]
                running[node.action.resource, default: 1] -= 1
                finished += 1
                let task = BuildEvent.Task(kind: node.kind, label: node.label, key: completion.key)
                let outcome = completion.outcome
                if let outputs = outcome.outputs {
                    state[completion.node] = .done(outputs)
                    summary.built += 1
                    reporter.report(.built(task, progress(), duration: outcome.duration, log: outcome.log))
                    release(completion.node)
                } else {
                    state[completion.node] = .failed
                    reporter.report(.failed(task, progress(), error: outcome.error ?? "failed", log: outcome.log))
                    summary.failed += 1
                    summary.failures.append(node.name)
                    if options.keepGoing {
                        skipDependents(of: completion.node)
                    } else {
                        stopping = true
                    }
                }
                if !stopping { try settleReady() }
                launch()
            }
        }

        for id in collecting {
            if case let .done(outputs) = state[id] { summary.collected[id] = outputs }
        }
        if stopping {
            summary.notRun = selected.filter { if case .waiting = state[$0] { return true } else { return false } }.count
        }
        let elapsed = ContinuousClock.now - clock
        summary.duration = elapsed.seconds
        summary.databaseWrites = cache.databaseChanges - writesBefore
        reporter.report(.completed(summary))
        return summary
    }
}

extension Builder {
    /// Checks, once per requirement, what the given tasks need from outside the graph; throws
    /// every problem at once, so a user fixes them in one go.
    static func checkRequirements<Nodes: Sequence>(of nodes: Nodes) throws where Nodes.Element == BuildGraph.Node {
        var seen = Set<String>()
        var problems: [any Error] = []
        for node in nodes {
            for requirement in node.action.requirements where seen.insert(requirement.id).inserted {
                if let problem = requirement.check() { problems.append(problem) }
            }
        }
        if !problems.isEmpty { throw RequirementsUnmet(problems: problems) }
    }
}

/// Runs one task: scratch directory, the action, outputs and log into the CAS, then one record.
struct TaskRunner: Sendable {
    let cache: BuildCache

    struct Outcome: Sendable {
        /// nil when the task failed.
        var outputs: [String: Digest]?
        var error: String?
        var log: String
        var duration: Double
    }

    func run(_ node: BuildGraph.Node, definition: TaskDefinition) async -> Outcome {
        let key = definition.key
        let log = TaskLog()
        let started = Date()
        let clock = ContinuousClock.now
        let work = cache.objects.temporaryPath("work-\(node.kind)")
        var inputs: [String: [String: Digest]] = [:]
        for input in definition.inputs { inputs[input.role, default: [:]][input.output] = input.digest }

        var outputs: [String: Digest]?
        var failure: String?
        do {
            try AtomicFile.makeDirectory(work)
            let context = TaskContext(kind: node.kind, label: node.label, key: key, inputs: inputs,
                                      objects: cache.objects, workDirectory: work, log: log)
            let produced = try await node.action.run(context)
            for (name, digest) in produced where cache.objects.size(of: digest) == nil {
                throw TaskInputError(message: "task \(node.name) returned output '\(name)' that is not in the store")
            }
            outputs = produced
        } catch {
            failure = "\(error)"
            log.append("farm: \(node.name) failed: \(error)\n")
        }
        try? FileManager.default.removeItem(atPath: work)

        let elapsed = ContinuousClock.now - clock
        let duration = elapsed.seconds
        do {
            let logDigest = try cache.objects.put(log.data).digest
            let recorded = (outputs ?? [:]).map { name, digest in
                TaskRecord.Output(name: name, digest: digest, size: cache.objects.size(of: digest) ?? 0)
            }
            try cache.save(TaskRecord(key: key, kind: node.kind, label: node.label, definition: definition.encoded,
                                      outputs: recorded, log: logDigest, started: started, duration: duration,
                                      status: outputs == nil ? 1 : 0, error: failure, farmVersion: FarmVersion.current))
        } catch {
            failure = (failure.map { $0 + "; " } ?? "") + "recording the result failed: \(error)"
            outputs = nil
        }
        return Outcome(outputs: outputs, error: failure, log: log.text, duration: duration)
    }
}
