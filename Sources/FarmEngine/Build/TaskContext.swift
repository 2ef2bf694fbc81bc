import Foundation

/// What a running task sees: its inputs (by role and output name), a scratch directory on the
/// cache's file system, its log, and the CAS to put its outputs into.
public struct TaskContext: Sendable {
    public let kind: String
    public let label: String
    public let key: Digest
    public let inputs: [String: [String: Digest]]
    public let objects: ContentStore
    public let workDirectory: String
    public let log: TaskLog

    /// The roles of all inputs whose role starts with `prefix`, sorted (`package.0`, `package.1`, ...).
    public func roles(withPrefix prefix: String) -> [String] {
        inputs.keys.filter { $0.hasPrefix(prefix) }.sorted { $0.localizedStandardCompare($1) == .orderedAscending }
    }

    public func input(_ role: String, _ output: String) throws -> Digest {
        guard let digest = inputs[role]?[output] else {
            throw FarmError(message: "task \(kind):\(label) has no input '\(role)' with output '\(output)'")
        }
        return digest
    }

    /// The path of an input object, after checking its bytes against its digest.
    public func inputPath(_ role: String, _ output: String) throws -> String {
        try objects.verifiedPath(of: try input(role, output))
    }

    public func readInput(_ role: String, _ output: String) throws -> Data {
        try objects.read(try input(role, output))
    }

    /// Moves a file the task wrote (anywhere under `workDirectory`) into the CAS.
    public func store(file: String) throws -> Digest { try objects.adopt(file).digest }

    public func store(_ data: Data) throws -> Digest { try objects.put(data).digest }
}
