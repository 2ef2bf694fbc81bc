import Foundation

public struct BuildOptions: Sendable {
    /// Tasks of the CPU class run at once (`-j`).
    public var jobs: Int
    /// Downloads at once (`--net-jobs`).
    public var networkJobs: Int
    /// Tree unpacking and packing tasks at once (`--io-jobs`).
    public var ioJobs: Int
    /// Build everything that does not depend on a failure (`-k`).
    public var keepGoing: Bool
    /// Decide and report what would run; run nothing (`-n`).
    public var dryRun: Bool
    /// Asked for the results of kinds shared remotely before they run, and offered them after
    /// (`--remote-cache`). A dry run does not ask it.
    public var remoteCache: (any RemoteCache)?

    public static var defaultJobs: Int { ProcessInfo.processInfo.activeProcessorCount + 1 }

    public static var defaultIOJobs: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / 2) }

    public init(jobs: Int = BuildOptions.defaultJobs, networkJobs: Int = 8, ioJobs: Int = BuildOptions.defaultIOJobs,
                keepGoing: Bool = false, dryRun: Bool = false, remoteCache: (any RemoteCache)? = nil) {
        self.jobs = max(1, jobs)
        self.networkJobs = max(1, networkJobs)
        self.ioJobs = max(1, ioJobs)
        self.keepGoing = keepGoing
        self.dryRun = dryRun
        self.remoteCache = remoteCache
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

    /// Uploads to the remote cache at once, beside the tasks.
    static let uploadsAtOnce = 2

    private struct Completion: Sendable {
        let node: BuildGraph.NodeID
        let key: Digest
        let outcome: TaskRunner.Outcome
    }

    private enum Finished: Sendable {
        case task(Completion)
        case upload
    }

    /// Builds `targets` and what they need (everything when nil).
    public func build(_ graph: BuildGraph, targets: [BuildGraph.NodeID]? = nil,
                      collecting: Set<BuildGraph.NodeID> = []) async throws -> BuildSummary {
        let clock = ContinuousClock.now
        let writesBefore = cache.databaseChanges
        var schedule = Schedule(graph: graph, targets: targets)
        reporter.report(.planned(total: schedule.summary.total))
        if schedule.selected.count >= Builder.preloadThreshold { try cache.preloadResults() }
        var stopping = false
        var timing = CriticalPath.Timing()
        let remote = options.dryRun ? nil : options.remoteCache.map { RemoteSharing(cache: $0, store: cache, reporter: reporter) }
        var uploads: [(key: Digest, result: RemoteResult, task: String)] = []
        var uploading = 0
        // Tasks launched only to look for their result remotely (their deferred inputs are not
        // here), and those that did and missed.
        var probing = Set<BuildGraph.NodeID>(), probed = Set<BuildGraph.NodeID>()

        try await withThrowingTaskGroup(of: Finished.self) { group in
            func launch() {
                guard !stopping else { return }
                let limits: [ResourceClass: Int] = [.network: options.networkJobs, .cpu: options.jobs, .io: options.ioJobs]
                for (id, definition) in schedule.launchable(limits: limits) {
                    let node = graph.nodes[id]
                    timing.started(id, at: (ContinuousClock.now - clock).seconds)
                    reporter.report(.started(.init(kind: node.kind, label: node.label, key: definition.key), schedule.progress))
                    let shared = node.action.sharedRemotely ? remote : nil
                    let probeOnly = probing.remove(id) != nil
                    // A task whose probe missed is not looked for again (a slow server would hold it twice).
                    let ask = !probed.contains(id)
                    group.addTask { [cache] in
                        let outcome = await TaskRunner(cache: cache, remote: shared).run(node, definition: definition, probeOnly: probeOnly, ask: ask)
                        return .task(Completion(node: id, key: definition.key, outcome: outcome))
                    }
                }
            }

            // Off the cooperative pool (libcurl blocks), a few at a time, so a slow server never
            // holds up a task; the build waits for the last ones before it returns.
            func launchUploads() {
                guard let remote else { return }
                while uploading < Builder.uploadsAtOnce, !uploads.isEmpty {
                    let upload = uploads.removeFirst()
                    uploading += 1
                    group.addTask {
                        try? await Blocking.run { remote.offer(upload.result, forKey: upload.key, of: upload.task) }
                        return .upload
                    }
                }
            }

            try settle(&schedule, timing: &timing, since: clock, probe: remote == nil ? nil : { probing.insert($0) }, probed: probed)
            // Everything not taken from the store now will run (or, in a dry run, would run).
            try Builder.checkRequirements(of: schedule.toRun)
            launch()
            while let finished = try await group.next() {
                guard case let .task(completion) = finished else {
                    uploading -= 1
                    launchUploads()
                    continue
                }
                let node = graph.nodes[completion.node]
                let task = BuildEvent.Task(kind: node.kind, label: node.label, key: completion.key)
                let outcome = completion.outcome
                timing.finished(completion.node, at: (ContinuousClock.now - clock).seconds)
                if outcome.notFoundRemotely {
                    probed.insert(completion.node)
                    schedule.notFoundRemotely(completion.node)
                } else if let outputs = outcome.outputs, let from = outcome.fetchedFrom {
                    schedule.succeeded(completion.node, outputs: outputs, fromRemote: true)
                    reporter.report(.fetched(task, schedule.progress, from: from))
                } else if let outputs = outcome.outputs {
                    schedule.succeeded(completion.node, outputs: outputs)
                    reporter.report(.built(task, schedule.progress, duration: outcome.duration, log: outcome.log))
                    if let offer = outcome.offer {
                        uploads.append((completion.key, offer, node.name))
                        launchUploads()
                    }
                } else {
                    schedule.failed(completion.node)
                    reporter.report(.failed(task, schedule.progress, error: outcome.error ?? "failed", log: outcome.log))
                    if options.keepGoing {
                        for skipped in schedule.skipDependents(of: completion.node) {
                            let node = graph.nodes[skipped]
                            reporter.report(.skipped(.init(kind: node.kind, label: node.label), schedule.progress,
                                                     because: graph.nodes[completion.node].name))
                        }
                    } else {
                        stopping = true
                    }
                }
                if !stopping {
                    try settle(&schedule, timing: &timing, since: clock, probe: remote == nil ? nil : { probing.insert($0) }, probed: probed)
                }
                launch()
            }
        }

        var summary = schedule.summary
        for id in collecting {
            if case let .done(outputs) = schedule.state[id] { summary.collected[id] = outputs }
        }
        if stopping { summary.notRun = schedule.notDecided }
        summary.duration = (ContinuousClock.now - clock).seconds
        summary.databaseWrites = cache.databaseChanges - writesBefore
        summary.criticalPath = timing.criticalPath(in: graph)
        reporter.report(.completed(summary))
        return summary
    }

    /// Decides each ready task: taken from the store, queued to run, or (dry run) marked pending
    /// with the reason it would run.
    ///
    /// A task whose outputs are known before it runs (a pinned download) is deferred until a task
    /// that reads them must run here; one shared remotely is first looked for there (`probe`),
    /// once (`probed`), and only a miss makes its deferred inputs run.
    private func settle(_ schedule: inout Schedule, timing: inout CriticalPath.Timing, since clock: ContinuousClock.Instant,
                        probe: ((BuildGraph.NodeID) -> Void)? = nil, probed: Set<BuildGraph.NodeID> = []) throws {
        try cache.readBatch {
            while let id = schedule.nextReady() {
                let node = schedule.graph.nodes[id]
                let task = BuildEvent.Task(kind: node.kind, label: node.label)
                let definition: TaskDefinition
                switch schedule.resolve(id) {
                case let .resolved(resolved):
                    definition = resolved
                case let .unknown(why), let .skipped(why):
                    // Only in a dry run (a real build decides a task once its inputs are done, and
                    // skips the dependents of a failure): an input will be rebuilt first.
                    schedule.markPending(id, reason: why)
                    reporter.report(.wouldRun(task, reason: why))
                    continue
                }
                if let outputs = try cache.cachedOutputs(forKey: definition.key) {
                    schedule.takeFromStore(id, outputs: Dictionary(uniqueKeysWithValues: outputs.map { ($0.name, $0.digest) }))
                    var withKey = task
                    withKey.key = definition.key
                    reporter.report(.cached(withKey, schedule.progress))
                } else if let known = node.action.knownOutputs, !schedule.required.contains(id) {
                    schedule.deferRun(id, outputs: known)
                } else if options.dryRun {
                    let reason = try Explainer(cache: cache).reason(for: node, definition: definition)
                    schedule.markPending(id, reason: reason)
                    var withKey = task
                    withKey.key = definition.key
                    reporter.report(.wouldRun(withKey, reason: reason))
                    schedule.runDeferredInputs(of: id)
                } else if schedule.hasDeferredInputs(id), let probe, node.action.sharedRemotely, !probed.contains(id) {
                    probe(id)
                    schedule.enqueue(id, definition)
                } else if schedule.hasDeferredInputs(id) {
                    schedule.runDeferredInputs(of: id)
                } else {
                    schedule.enqueue(id, definition)
                    timing.ready(id, at: (ContinuousClock.now - clock).seconds)
                }
            }
        }
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
/// With a remote cache, its result is first looked for there.
struct TaskRunner: Sendable {
    let cache: BuildCache
    var remote: RemoteSharing?

    struct Outcome: Sendable {
        /// nil when the task failed.
        var outputs: [String: Digest]?
        var error: String?
        var log: String
        var duration: Double
        /// The remote cache the result came from, when it was not run here.
        var fetchedFrom: String?
        /// What to offer the remote cache: the outputs and log of a task that ran here.
        var offer: RemoteResult?
        /// Launched only to look for its result remotely (`probeOnly`), and not found there.
        var notFoundRemotely = false
    }

    /// `probeOnly`: the task's inputs are not all in the store (deferred downloads), so only the
    /// remote cache is asked; a miss is reported, not run.
    /// `ask: false`: the remote cache was asked already; the result is still offered to it.
    func run(_ node: BuildGraph.Node, definition: TaskDefinition, probeOnly: Bool = false, ask: Bool = true) async -> Outcome {
        let key = definition.key
        let log = TaskLog()
        let started = Date()
        let clock = ContinuousClock.now
        if ask, let remote, let outputs = try? await Blocking.run({ remote.take(node, definition: definition) }) {
            return Outcome(outputs: outputs, log: "", duration: (ContinuousClock.now - clock).seconds, fetchedFrom: remote.cache.location)
        }
        if probeOnly {
            return Outcome(log: "", duration: (ContinuousClock.now - clock).seconds, notFoundRemotely: true)
        }
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
                throw FarmError(message: "task \(node.name) returned output '\(name)' that is not in the store")
            }
            outputs = produced
        } catch {
            failure = "\(error)"
            log.append("farm: \(node.name) failed: \(error)\n")
        }
        try? FileManager.default.removeItem(atPath: work)

        let elapsed = ContinuousClock.now - clock
        let duration = elapsed.seconds
        var offer: RemoteResult?
        do {
            let (logDigest, logSize) = try cache.objects.put(log.data)
            let recorded = (outputs ?? [:]).map { name, digest in
                TaskRecord.Output(name: name, digest: digest, size: cache.objects.size(of: digest) ?? 0)
            }
            try cache.save(TaskRecord(key: key, kind: node.kind, label: node.label, definition: definition.encoded,
                                      outputs: recorded, log: logDigest, started: started, duration: duration,
                                      status: outputs == nil ? 1 : 0, error: failure, farmVersion: FarmVersion.current))
            if outputs != nil, remote?.offering == true {
                offer = RemoteResult(outputs: Dictionary(uniqueKeysWithValues: recorded.map { ($0.name, .init(digest: $0.digest, size: $0.size)) }),
                                     log: .init(digest: logDigest, size: logSize))
            }
        } catch {
            failure = (failure.map { $0 + "; " } ?? "") + "recording the result failed: \(error)"
            outputs = nil
        }
        return Outcome(outputs: outputs, error: failure, log: log.text, duration: duration, offer: offer)
    }
}
