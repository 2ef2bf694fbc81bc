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
        case let farm as FarmError:
            switch farm.category {
            case .failure: return failure
            case .badInput: return badInput
            case .environment: return environment
            }
        case let unmet as RequirementsUnmet:
            return unmet.problems.allSatisfy { code(for: $0) == badInput } ? badInput : environment
        case is BadInput: return badInput
        default: return failure
        }
    }
}

/// Errors of their own type caused by what the user gave farm (exit 2): `ManifestError`, a lab name.
public protocol BadInput: Error {}
