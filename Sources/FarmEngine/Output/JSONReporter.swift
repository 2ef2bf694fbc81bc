import Foundation

/// `--json`: one JSON object per line and event, for machines. Every object carries `schema`
/// (bumped when a field changes meaning or goes away) and `time`, UTC, so a CI log can be read
/// without farm and lined up with other logs.
public final class JSONReporter: BuildReporter, @unchecked Sendable {
    public static let schema = 1
    private let lock = NSLock()
    private let output: FileHandle

    public init(output: FileHandle = .standardOutput) { self.output = output }

    /// UTC with milliseconds: events of one build are often less than a second apart.
    public static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: TimeZone(identifier: "UTC")!))
    }

    public func report(_ event: BuildEvent) {
        var object: [String: Any]
        switch event {
        case let .planned(total):
            object = ["event": "planned", "total": total]
        case let .started(task, progress):
            object = fields("started", task, progress)
        case let .built(task, progress, duration, _):
            object = fields("built", task, progress)
            object["duration"] = duration
        case let .fetched(task, progress, from):
            object = fields("fetched", task, progress)
            object["from"] = from
        case let .cached(task, progress):
            object = fields("cached", task, progress)
        case let .failed(task, progress, error, log):
            object = fields("failed", task, progress)
            object["error"] = error
            object["log_tail"] = TaskLog.tail(log, lines: 30)
        case let .skipped(task, progress, because):
            object = fields("skipped", task, progress)
            object["because"] = because
        case let .wouldRun(task, reason):
            object = fields("would_run", task, nil)
            object["reason"] = reason
        case let .completed(summary):
            object = ["event": "completed", "total": summary.total, "built": summary.built, "cached": summary.cached, "remote": summary.remote,
                      "failed": summary.failed, "skipped": summary.skipped, "not_run": summary.notRun,
                      "would_run": summary.wouldRun, "duration": summary.duration, "database_writes": summary.databaseWrites,
                      "failures": summary.failures, "unchanged_since_stamp": summary.unchangedSinceStamp,
                      "critical_path": summary.criticalPath.map { ["task": $0.task, "seconds": $0.seconds, "waited": $0.waited] }]
        case let .published(directory, summary):
            object = ["event": "published", "directory": directory, "summary": summary]
        case let .warning(text):
            object = ["event": "warning", "message": text]
        }
        object["schema"] = JSONReporter.schema
        object["time"] = JSONReporter.timestamp(Date())
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        lock.lock()
        output.write(data + Data("\n".utf8))
        lock.unlock()
    }

    private func fields(_ name: String, _ task: BuildEvent.Task, _ progress: BuildEvent.Progress?) -> [String: Any] {
        var object: [String: Any] = ["event": name, "kind": task.kind, "label": task.label, "task": task.name]
        if let key = task.key { object["key"] = key.hex }
        if let progress { object["finished"] = progress.finished; object["total"] = progress.total }
        return object
    }
}
