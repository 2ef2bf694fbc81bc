import Foundation

/// farm's error for messages: what happened, where (file:line:column, URL, host, task) and what
/// to do, with the class that decides the exit code (`ExitStatus.code`). Errors a caller branches
/// on keep types of their own (`HTTPError`'s status, `OpenSSLError`'s kind, `ManifestError`'s place).
public struct FarmError: Error, CustomStringConvertible, LocalizedError {
    public enum Category: Sendable {
        /// A task, a capture or a check failed (exit 1).
        case failure
        /// What the user gave farm is wrong: manifest, recipe, arguments, keys (exit 2).
        case badInput
        /// The machine lacks something: a tool, a key, a sandbox that starts, a writable cache (exit 3).
        case environment
    }

    public let category: Category
    public let message: String

    public init(_ message: String, category: Category = .failure) {
        self.message = message
        self.category = category
    }

    public init(message: String) { self.init(message) }

    public static func badInput(_ message: String) -> FarmError { FarmError(message, category: .badInput) }
    public static func environment(_ message: String) -> FarmError { FarmError(message, category: .environment) }

    /// A tool farm runs is not installed: says which package provides it.
    public static func toolMissing(tool: String, package: String, purpose: String) -> FarmError {
        .environment("\(tool) is not installed; \(purpose) needs it: apt-get install \(package)")
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}
