import Foundation

/// What the scheduler reports as a build goes; reporters turn it into a status line, plain lines or JSON.
public enum BuildEvent: Sendable {
    public struct Task: Sendable {
        public var kind: String
        public var label: String
        public var key: Digest?
        public var name: String { "\(kind):\(label)" }

        public init(kind: String, label: String, key: Digest? = nil) {
            self.kind = kind
            self.label = label
            self.key = key
        }
    }

    public struct Progress: Sendable {
        public var finished: Int
        public var total: Int
        public var running: Int

        public init(finished: Int, total: Int, running: Int) {
            self.finished = finished
            self.total = total
            self.running = running
        }
    }

    case planned(total: Int)
    case started(Task, Progress)
    case built(Task, Progress, duration: Double, log: String)
    /// Not run here: its result came from the remote cache at `from`.
    case fetched(Task, Progress, from: String)
    /// Taken from the store: its key has a recorded result whose outputs all exist.
    case cached(Task, Progress)
    case failed(Task, Progress, error: String, log: String)
    /// Not run because a task it depends on failed.
    case skipped(Task, Progress, because: String)
    /// Dry run: the task would run; `reason` says why.
    case wouldRun(Task, reason: String)
    case completed(BuildSummary)
    /// The publish directory was brought up to date with the build's publication.
    case published(directory: String, summary: String)
    /// Something the user should know that does not fail the build (a remote cache that cannot be used).
    case warning(String)
}

public struct BuildSummary: Sendable, Codable {
    public var total = 0
    public var built = 0
    /// Tasks not run: taken from the local store or, `remote` of them, from the remote cache.
    public var cached = 0
    public var remote = 0
    public var failed = 0
    public var skipped = 0
    /// Tasks not started because the build stopped at the first failure (no `-k`).
    public var notRun = 0
    public var wouldRun = 0
    public var duration: Double = 0
    public var databaseWrites = 0
    public var failures: [String] = []
    /// The chain of tasks that ran which decided the build's wall time, first to last (empty when nothing ran).
    public var criticalPath: [CriticalPath.Step] = []
    /// The build was proved to have nothing to do by the last complete build's stamp, without a plan.
    public var unchangedSinceStamp = false
    /// The outputs of the tasks the build was asked to collect (`Builder.build(_:collecting:)`), when they are done.
    public var collected: [BuildGraph.NodeID: [String: Digest]] = [:]

    public var succeeded: Bool { failed == 0 && skipped == 0 && notRun == 0 }

    public init() {}

    enum CodingKeys: String, CodingKey {
        case total, built, cached, remote, failed, skipped, notRun, wouldRun, duration, databaseWrites, failures, unchangedSinceStamp, criticalPath
    }
}

public protocol BuildReporter: Sendable {
    func report(_ event: BuildEvent)
}
