/// Which pool of the scheduler a task waits in.
public enum ResourceClass: String, Sendable, Codable {
    /// Downloads: limited by `--net-jobs`.
    case network
    /// Builds, compression, signing: limited by `-j`.
    case cpu
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
    /// Produces the task's outputs in the CAS and returns them by name.
    func run(_ context: TaskContext) async throws -> [String: Digest]
}

extension TaskAction {
    public var resource: ResourceClass { .cpu }
}
