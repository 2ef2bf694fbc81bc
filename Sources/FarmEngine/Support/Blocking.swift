import Foundation

/// Runs blocking work (a download, a child process, decompression) on a thread of its own, so
/// it never holds one of the few threads Swift's cooperative pool has (two on this machine).
public enum Blocking {
    public static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                continuation.resume(with: Result { try work() })
            }.start()
        }
    }
}
