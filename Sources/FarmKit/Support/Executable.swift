import Foundation

/// Runs a tool farm relies on (gpgv, gpg) and collects what it printed.
public enum Executable {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    public static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"] {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs to the end. Blocking: call from `Blocking.run` inside tasks.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           directory: String? = nil, input: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        if let input {
            guard let handle = FileHandle(forReadingAtPath: input) else { throw FileSystemError.io(operation: "open", path: input, errno: errno) }
            process.standardInput = handle
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        try process.run()
        final class Box: @unchecked Sendable { var data = Data() }
        let errors = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errors.data = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let output = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: output, as: UTF8.self),
                      stderr: String(decoding: errors.data, as: UTF8.self))
    }
}

/// A tool farm runs is not installed (exit 3): says which package provides it.
public struct ToolMissing: Error, CustomStringConvertible, LocalizedError, EnvironmentMissing {
    public let message: String
    public init(tool: String, package: String, purpose: String) {
        message = "\(tool) is not installed; \(purpose) needs it: apt-get install \(package)"
    }
    public var description: String { message }
    public var errorDescription: String? { message }
}
