import Foundation

/// A small TCP server on 127.0.0.1, written in Python by the test: `script` binds a socket
/// `s` to port 0 and prints the port on its first line (the prologue does both); the rest of the
/// script serves. Stopped with SIGKILL (the test runner's children do not see SIGTERM).
final class PythonServer {
    let process = Process()
    let port: Int

    init(serving script: String, arguments: [String] = []) throws {
        let prologue = """
        import socket, sys, time
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8)
        print(s.getsockname()[1], flush=True)

        """
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", prologue + script] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = pipe.fileHandleForReading.availableData
            guard !chunk.isEmpty else { break }
            line.append(chunk)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw TestFailure("the test server printed no port")
        }
        self.port = port
    }

    deinit { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
}
