import Foundation

/// What a task prints while it runs. Kept whole in the CAS (`farm log TASK`); a failure shows its tail.
public final class TaskLog: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = Data()
    /// Past this size only the end is kept: the part that explains a failure.
    static let limit = 32 << 20

    public init() {}

    public func append(_ text: String) { append(Data(text.utf8)) }

    public func append(_ data: Data) {
        lock.lock()
        defer { lock.unlock() }
        buffer.append(data)
        if buffer.count > TaskLog.limit {
            buffer = Data("[farm: earlier output dropped, the log passed \(TaskLog.limit >> 20) MiB]\n".utf8) + buffer.suffix(TaskLog.limit / 2)
        }
    }

    public var data: Data {
        lock.lock()
        defer { lock.unlock() }
        return buffer
    }

    public var text: String { String(decoding: data, as: UTF8.self) }

    /// The last `lines` lines of a log.
    public static func tail(_ text: String, lines: Int) -> String {
        let all = text.split(separator: "\n", omittingEmptySubsequences: false)
        let trimmed = all.last == "" ? all.dropLast() : all[...]
        return trimmed.suffix(lines).joined(separator: "\n")
    }
}
