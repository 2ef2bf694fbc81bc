import FarmEngine
import Foundation

/// A lab's name, checked once: it becomes a directory under `<cache>/labs/` that `farm lab down`
/// removes, so it can only ever name one entry of that directory (no `/`, not `.` or `..`).
public struct LabName: Sendable, Hashable, CustomStringConvertible {
    public let value: String

    /// Long enough for any kernel release (the default name), short enough for the QMP socket path.
    static let maximumLength = 64

    public init(_ value: String) throws {
        guard !value.isEmpty, value.count <= LabName.maximumLength, !value.hasPrefix("."), !value.hasPrefix("-"),
              value.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._+-".unicodeScalars.contains($0)) })
        else { throw LabNameError(name: value) }
        self.value = value
    }

    public var description: String { value }
}

/// A name that is not a lab name (exit 2).
public struct LabNameError: BadInput, CustomStringConvertible, LocalizedError {
    public let name: String
    public var description: String {
        "'\(name)' is not a lab name: use 1 to \(LabName.maximumLength) of the letters a-z A-Z, digits and . _ + -,"
            + " not starting with '.' or '-' (e.g. 'farm lab up RELEASE --name ir1')"
    }
    public var errorDescription: String? { description }
}
