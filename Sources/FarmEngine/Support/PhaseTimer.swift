import Foundation

/// `FARM_TIMING=1` prints how long each phase of a command took to standard error, like
/// `ninja -d stats`: how the no-op budget is spent.
public struct PhaseTimer: Sendable {
    public static let enabled = ProcessInfo.processInfo.environment["FARM_TIMING"] == "1"
    private var last = ContinuousClock.now

    public init() {}

    public mutating func mark(_ phase: String) {
        guard PhaseTimer.enabled else { return }
        let now = ContinuousClock.now
        let elapsed = now - last
        last = now
        let ms = elapsed.seconds * 1000
        FileHandle.standardError.write(Data(String(format: "farm: timing: %-24@ %8.1f ms\n", phase, ms).utf8))
    }
}
