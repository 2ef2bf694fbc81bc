import Foundation

/// One finished task as the store remembers it.
public struct TaskRecord: Sendable {
    public struct Output: Sendable, Hashable {
        public var name: String
        public var digest: Digest
        public var size: Int64
    }

    public var key: Digest
    public var kind: String
    public var label: String
    /// The canonical definition the key hashes, kept so `farm explain` can say what changed.
    public var definition: String
    public var outputs: [Output]
    public var log: Digest?
    public var started: Date
    public var duration: Double
    /// 0 for success; a failed task is recorded with its log and error but never counts as cached.
    public var status: Int
    public var error: String?
    public var farmVersion: String

    public var name: String { "\(kind):\(label)" }

    public func output(_ name: String) -> Output? { outputs.first { $0.name == name } }

    static func encode(_ outputs: [Output]) -> String {
        outputs.sorted { $0.name < $1.name }.map { "\($0.name) \($0.digest.hex) \($0.size)\n" }.joined()
    }

    static func decode(_ text: String) -> [Output] {
        text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 3, let digest = Digest(hex: String(parts[1])), let size = Int64(parts[2]) else { return nil }
            return Output(name: String(parts[0]), digest: digest, size: size)
        }
    }
}
