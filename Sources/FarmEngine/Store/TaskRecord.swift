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

    /// Reads `name digest size` lines back; on the no-op path once per task, so it avoids splitting.
    static func decode(_ text: String) -> [Output] {
        var outputs: [Output] = []
        let utf8 = text.utf8
        var lineStart = utf8.startIndex
        while lineStart < utf8.endIndex {
            let lineEnd = utf8[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? utf8.endIndex
            let line = utf8[lineStart..<lineEnd]
            if let firstSpace = line.firstIndex(of: UInt8(ascii: " ")) {
                let digestStart = utf8.index(after: firstSpace)
                if let digestEnd = utf8.index(digestStart, offsetBy: 64, limitedBy: lineEnd), digestEnd < lineEnd,
                   let size = Int64(Substring(utf8[utf8.index(after: digestEnd)..<lineEnd])) {
                    outputs.append(Output(name: String(Substring(utf8[lineStart..<firstSpace])),
                                          digest: Digest(trustedHex: String(Substring(utf8[digestStart..<digestEnd]))), size: size))
                }
            }
            lineStart = lineEnd == utf8.endIndex ? lineEnd : utf8.index(after: lineEnd)
        }
        return outputs
    }
}
