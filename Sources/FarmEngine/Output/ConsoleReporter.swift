import Foundation

/// Human output: a ninja-style status line `[done/total] kind label` redrawn in place on a terminal,
/// plain lines otherwise; a `FAILED:` block with the tail of the log when a task fails.
public final class ConsoleReporter: BuildReporter, @unchecked Sendable {
    public enum Style: Sendable { case statusLine, plain }

    private let style: Style
    private let verbose: Bool
    private let lock = NSLock()
    private var lineShown = false
    private var lastDraw = ContinuousClock.now - .seconds(1)
    private let output: FileHandle
    static let tailLines = 30

    /// Status line only on a terminal without NO_COLOR, CI or TERM=dumb.
    public static func defaultStyle(for output: FileHandle = .standardOutput) -> Style {
        let environment = ProcessInfo.processInfo.environment
        if isatty(output.fileDescriptor) == 0 || environment["NO_COLOR"] != nil || environment["CI"] != nil
            || environment["TERM"] == "dumb" {
            return .plain
        }
        return .statusLine
    }

    public init(style: Style, verbose: Bool = false, output: FileHandle = .standardOutput) {
        self.style = style
        self.verbose = verbose
        self.output = output
    }

    public func report(_ event: BuildEvent) {
        lock.lock()
        defer { lock.unlock() }
        switch event {
        case let .planned(total):
            if verbose { print("farm: \(total) tasks planned") }
        case let .started(task, progress):
            if style == .statusLine {
                draw("[\(progress.finished)/\(progress.total)] \(task.kind) \(task.label)")
            } else if verbose {
                print("[\(progress.finished)/\(progress.total)] start \(task.kind) \(task.label)")
            }
        case let .built(task, progress, duration, log):
            let line = "[\(progress.finished)/\(progress.total)] \(task.kind) \(task.label) (\(Self.seconds(duration)))"
            if style == .statusLine, !verbose {
                draw(line)
            } else {
                print(line)
                if verbose, !log.isEmpty { print(log.hasSuffix("\n") ? String(log.dropLast()) : log) }
            }
        case let .fetched(task, progress, from):
            let line = "[\(progress.finished)/\(progress.total)] \(task.kind) \(task.label) (from \(from))"
            if style == .statusLine, !verbose { draw(line) } else { print(line) }
        case .cached:
            // The summary counts them; a line each would bury what ran.
            break
        case let .failed(task, progress, error, log):
            var block = "FAILED: [\(progress.finished)/\(progress.total)] \(task.kind) \(task.label)\n"
            if let key = task.key { block += "  key: \(key.hex)\n" }
            block += "  error: \(error)\n"
            let tail = TaskLog.tail(log, lines: Self.tailLines)
            if !tail.isEmpty {
                block += "  last lines of the log (all of it: farm log \(task.name)):\n"
                block += tail.split(separator: "\n", omittingEmptySubsequences: false).map { "    \($0)" }.joined(separator: "\n") + "\n"
            }
            print(block, terminator: "")
        case let .skipped(task, _, because):
            print("skipped: \(task.kind) \(task.label): it needs \(because), which failed")
        case let .wouldRun(task, reason):
            print("would run: \(task.kind) \(task.label): \(reason)")
        case let .completed(summary):
            clearLine()
            print(Self.describe(summary))
            if summary.built + summary.failed > 0, !summary.criticalPath.isEmpty {
                print("farm: " + CriticalPath.describe(summary.criticalPath))
            }
        case let .published(_, summary):
            print("farm: " + summary)
        case let .warning(text):
            print("farm: warning: " + text)
        }
    }

    public static func describe(_ summary: BuildSummary) -> String {
        let time = seconds(summary.duration)
        if summary.wouldRun > 0 || (summary.built == 0 && summary.failed == 0 && summary.cached < summary.total) {
            return "farm: dry run: \(summary.wouldRun) of \(summary.total) tasks would run, \(summary.cached) are cached (\(time))"
        }
        if summary.unchangedSinceStamp {
            return "farm: no work to do (nothing changed since the last build of these \(summary.total) tasks, \(time))"
        }
        if summary.built == 0, summary.remote == 0, summary.failed == 0, summary.skipped == 0, summary.notRun == 0 {
            return "farm: no work to do (\(summary.total) tasks up to date, \(time))"
        }
        var parts = ["\(summary.built) built", "\(summary.cached) cached" + (summary.remote > 0 ? " (\(summary.remote) from the remote cache)" : "")]
        if summary.failed > 0 { parts.append("\(summary.failed) failed") }
        if summary.skipped > 0 { parts.append("\(summary.skipped) skipped") }
        if summary.notRun > 0 { parts.append("\(summary.notRun) not run (stopped at the first failure; -k keeps going)") }
        return "farm: \(parts.joined(separator: ", ")) of \(summary.total) tasks in \(time)"
    }

    static func seconds(_ value: Double) -> String {
        value < 10 ? String(format: "%.2fs", value) : String(format: "%.1fs", value)
    }

    private func draw(_ line: String) {
        let now = ContinuousClock.now
        guard now - lastDraw > .milliseconds(80) else { return }
        lastDraw = now
        var columns = 80
        var size = winsize()
        if ioctl(output.fileDescriptor, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { columns = Int(size.ws_col) }
        let shown = line.count > columns - 1 ? String(line.prefix(columns - 4)) + "..." : line
        output.write(Data("\r\u{1B}[K\(shown)".utf8))
        lineShown = true
    }

    private func clearLine() {
        if lineShown {
            output.write(Data("\r\u{1B}[K".utf8))
            lineShown = false
        }
    }

    private func print(_ text: String, terminator: String = "\n") {
        clearLine()
        output.write(Data((text + terminator).utf8))
    }
}
