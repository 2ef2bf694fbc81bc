import Foundation

/// Exit codes, as the README documents them.
public enum ExitStatus {
    public static let success: Int32 = 0
    /// A task or a capture failed.
    public static let failure: Int32 = 1
    /// Bad input: manifest, recipe, arguments.
    public static let badInput: Int32 = 2
    /// The environment lacks something: a tool or library is not installed.
    public static let environment: Int32 = 3

    public static func code(for error: any Error) -> Int32 {
        switch error {
        case let unmet as RequirementsUnmet:
            return unmet.problems.allSatisfy { $0 is BadInput } ? badInput : environment
        case is BadInput: return badInput
        case is EnvironmentMissing: return environment
        default: return failure
        }
    }
}

/// Errors caused by what the user gave farm (exit 2).
public protocol BadInput: Error {}
/// Errors caused by a missing tool or library (exit 3).
public protocol EnvironmentMissing: Error {}


/// Something farm needs from the machine is not there or does not work (exit 3): a key, a kernel
/// feature, a writable cache. The message says what to do.
public struct EnvironmentError: Error, CustomStringConvertible, LocalizedError, EnvironmentMissing {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
    public var errorDescription: String? { message }
}
