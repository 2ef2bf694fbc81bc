import FarmEngine
import Foundation

/// A manifest or recipe that farm refuses, with the place it refers to.
public struct ManifestError: Error, CustomStringConvertible, LocalizedError {
    public let location: SourceLocation?
    public let file: String
    public let message: String

    public init(_ message: String, at location: SourceLocation) {
        self.location = location
        self.file = location.file
        self.message = message
    }

    public init(_ message: String, file: String) {
        self.location = nil
        self.file = file
        self.message = message
    }

    public var description: String {
        if let location { return "\(location): error: \(message)" }
        return "\(file): error: \(message)"
    }

    public var errorDescription: String? { description }
}

extension ManifestError: BadInput {}
