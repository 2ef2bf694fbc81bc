import Foundation

/// Passes every event on to another reporter and keeps how each task ended, so a build report is
/// made from what the build did instead of from a second look at the cache.
public final class OutcomeRecorder: BuildReporter, @unchecked Sendable {
    public enum Outcome: Sendable, Equatable {
        case built(key: Digest?)
        case cached(key: Digest?)
        case failed(key: Digest?, error: String)
        /// `because` is the failed task it needed.
        case skipped(because: String)
    }

    private let lock = NSLock()
    private let next: any BuildReporter
    private var outcomes: [String: Outcome] = [:]

    public init(passingTo next: any BuildReporter) { self.next = next }

    public func report(_ event: BuildEvent) {
        var recorded: (String, Outcome)?
        switch event {
        case let .built(task, _, _, _): recorded = (task.name, .built(key: task.key))
        case let .cached(task, _): recorded = (task.name, .cached(key: task.key))
        // From the remote cache: recorded in the local store now, so cached as far as a report goes.
        case let .fetched(task, _, _): recorded = (task.name, .cached(key: task.key))
        case let .failed(task, _, error, _): recorded = (task.name, .failed(key: task.key, error: error))
        case let .skipped(task, _, because): recorded = (task.name, .skipped(because: because))
        default: break
        }
        if let (name, outcome) = recorded { lock.withLock { outcomes[name] = outcome } }
        next.report(event)
    }

    /// The keys of every task that succeeded, built or taken from the store: what the build used.
    public var usedKeys: [Digest] {
        lock.withLock {
            outcomes.values.compactMap {
                switch $0 {
                case let .built(key), let .cached(key): key
                default: nil
                }
            }
        }
    }

    /// How the task named `kind:label` ended; nil when it never ran (not planned, or the build stopped first).
    public func outcome(of task: String) -> Outcome? {
        lock.withLock { outcomes[task] }
    }
}
