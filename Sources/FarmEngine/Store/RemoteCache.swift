import Foundation

/// A store shared by several machines beside the local one: task results by key and objects by
/// sha256. FarmKit speaks Bazel's HTTP cache protocol to one; the engine only asks and offers,
/// and checks every object it takes against its digest itself (a server need not).
public protocol RemoteCache: Sendable {
    /// Where it is (a URL), for messages.
    var location: String { get }
    /// False for a cache only read from: the builder offers it nothing.
    var writable: Bool { get }
    /// The result recorded for a task key; nil when the cache has none.
    func result(forKey key: Digest) throws -> RemoteResult?
    /// Where object `digest` is, for messages.
    func location(of digest: Digest) -> String
    /// Writes object `digest` into `file` (no more than `size` bytes); the caller checks the bytes.
    func download(_ digest: Digest, size: Int64, to file: String) throws
    /// Whether the cache already has object `digest`.
    func has(_ digest: Digest) throws -> Bool
    func upload(_ digest: Digest, size: Int64, from file: String) throws
    /// Records a result; called once its objects are uploaded.
    func store(_ result: RemoteResult, forKey key: Digest) throws
}

/// What a remote cache keeps of a successful task: its outputs by name and its log.
public struct RemoteResult: Sendable, Equatable {
    public struct Object: Sendable, Equatable {
        public var digest: Digest
        public var size: Int64
        public init(digest: Digest, size: Int64) {
            self.digest = digest
            self.size = size
        }
    }

    public var outputs: [String: Object]
    public var log: Object?

    public init(outputs: [String: Object], log: Object?) {
        self.outputs = outputs
        self.log = log
    }
}

/// A remote cache that failed to answer. `unreachable` (refused, timed out, a server error) means
/// the cache is no use for the rest of the build; otherwise only this entry is (a malformed
/// result, an object it lists but does not have).
public struct RemoteCacheFailure: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public let unreachable: Bool

    public init(_ message: String, unreachable: Bool) {
        self.message = message
        self.unreachable = unreachable
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}
