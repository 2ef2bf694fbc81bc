import FarmEngine
import Foundation

/// QEMU's machine protocol (QMP) on the lab's Unix socket, which lives in the lab's 0700
/// directory: how farm asks a VM whether its CPU still runs (`query-status`).
struct QemuMonitor {
    let socketPath: String

    /// The longest path a `sockaddr_un` holds (108 bytes with its terminating zero).
    static let maximumPathLength = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1

    /// `running`, `internal-error`, `shutdown`, `guest-panicked`, ...; nil when QEMU does not answer.
    func status() -> String? {
        guard let reply = try? exchange(#"{"execute":"query-status"}"#),
              let object = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any],
              let result = object["return"] as? [String: Any] else { return nil }
        return result["status"] as? String
    }

    /// Sends one command after the capabilities handshake and returns the reply line (events skipped).
    private func exchange(_ command: String) throws -> String {
        guard socketPath.utf8.count <= QemuMonitor.maximumPathLength else { throw FarmError("QMP socket path too long: \(socketPath)") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FarmError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in socketPath.utf8.enumerated() { buffer[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw FarmError("connect \(socketPath): \(String(cString: strerror(errno)))") }
        var lines = LineReader(fd: fd)
        _ = try lines.next()  // the greeting
        try send(fd, #"{"execute":"qmp_capabilities"}"#)
        _ = try lines.reply()
        try send(fd, command)
        return try lines.reply()
    }

    private func send(_ fd: Int32, _ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw FarmError("QMP write failed") }
    }

    private struct LineReader {
        let fd: Int32
        var buffer: [UInt8] = []

        init(fd: Int32) { self.fd = fd }

        mutating func next() throws -> String {
            while true {
                if let end = buffer.firstIndex(of: 10) {
                    let line = String(decoding: buffer[..<end], as: UTF8.self)
                    buffer.removeSubrange(...end)
                    return line
                }
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = read(fd, &chunk, chunk.count)
                guard count > 0 else { throw FarmError("QMP closed or timed out") }
                buffer += chunk[..<count]
            }
        }

        /// The next line that answers a command (`return` or `error`), skipping asynchronous events.
        mutating func reply() throws -> String {
            while true {
                let line = try next()
                if line.contains(#""return""#) || line.contains(#""error""#) { return line }
            }
        }
    }
}
