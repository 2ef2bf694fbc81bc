import Foundation

public enum FileSystemError: Error, CustomStringConvertible, LocalizedError {
    case io(operation: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case let .io(operation, path, code):
            return "\(operation) \(path): \(String(cString: strerror(code)))"
        }
    }

    public var errorDescription: String? { description }
}
