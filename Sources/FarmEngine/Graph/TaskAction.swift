import Foundation

/// Which pool of the scheduler a task waits in.
public enum ResourceClass: String, Sendable, Codable {
    /// Downloads: limited by `--net-jobs`.
    case network
    /// Builds, compression, signing: limited by `-j`.
    case cpu
    /// Unpacking and packing large trees (bundles): limited by `--io-jobs`, apart from `-j`, so
    /// they neither starve compiles of their slots nor run three at once on two cores.
    case io
}

/// What one task kind does. The graph holds one action per task; the scheduler runs it when the
/// task's key is not in the store.
public protocol TaskAction: Sendable {
    /// The task kind (`fetch`, `bundle`, ...): names the task together with its label.
    var kind: String { get }
    /// Bumped whenever the implementation changes what it produces, so old results stop matching.
    var version: Int { get }
    /// Everything besides input contents that changes the result, as name/value pairs.
    var parameters: [(name: String, value: String)] { get }
    var resource: ResourceClass { get }
    /// What the task needs from outside the graph (a tool, a key, a kernel feature). The builder
    /// checks them for every task it is about to run before it runs any, so a missing key is
    /// reported at once, not after minutes of other work.
    var requirements: [Requirement] { get }
    /// Whether a remote cache (`--remote-cache`) is asked for and offered this kind's results:
    /// those slow to make and the same on every machine. Downloads are not: every machine has a mirror.
    var sharedRemotely: Bool { get }
    /// Outputs known before the task runs (a download pinned by its sha256), or nil. Such a task
    /// is deferred: its dependents are decided on these digests, and it runs only when one of them
    /// has to run here, so a machine whose store or remote cache has every result downloads nothing.
    var knownOutputs: [String: Digest]? { get }
    /// Produces the task's outputs in the CAS and returns them by name.
    func run(_ context: TaskContext) async throws -> [String: Digest]
}

extension TaskAction {
    public var resource: ResourceClass { .cpu }
    public var requirements: [Requirement] { [] }
    public var sharedRemotely: Bool { false }
    public var knownOutputs: [String: Digest]? { nil }
}

/// Something a task needs that no task makes. `id` names it, so that the thousand tasks needing
/// one tool check it once; `check` returns the error a user gets when it is missing.
public struct Requirement: Sendable {
    public let id: String
    public let check: @Sendable () -> (any Error)?

    public init(id: String, check: @escaping @Sendable () -> (any Error)?) {
        self.id = id
        self.check = check
    }

    /// A program on PATH, with the package that provides it.
    public static func tool(_ name: String, package: String, purpose: String) -> Requirement {
        Requirement(id: "tool:" + name) {
            Executable.find(name) == nil ? FarmError.toolMissing(tool: name, package: package, purpose: purpose) : nil
        }
    }

    /// A requirement known to be unmet when the plan was made (a key that is not there).
    public static func unmet(_ id: String, _ error: any Error) -> Requirement {
        Requirement(id: id) { error }
    }
}

/// The requirements of the tasks a build was about to run that do not hold: nothing was run.
public struct RequirementsUnmet: Error, CustomStringConvertible, LocalizedError {
    public let problems: [any Error]
    public var description: String {
        problems.count == 1 ? "\(problems[0])"
            : "before running anything, farm found \(problems.count) problems:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
    public var errorDescription: String? { description }
}
