import FarmEngine
import Foundation

/// Receives LiME's image from a TCP port of 127.0.0.1 (the SSH forward of the host's LiME port)
/// into a 0600 file, with progress. One stall rule covers the whole stream: from the connection
/// to the first byte and between any two reads, `stall` seconds of silence fail the capture
/// (LiME's first byte can take a while: it walks the memory map first).
public struct MemoryStream: Sendable {
    public let port: Int
    /// Named in messages: the host being captured.
    public let target: String
    public let stall: Double
    public let progress: @Sendable (String) -> Void

    public init(port: Int, target: String, stall: Double = 60, progress: @escaping @Sendable (String) -> Void) {
        self.port = port
        self.target = target
        self.stall = stall
        self.progress = progress
    }

    /// Reads until LiME closes the connection; returns the bytes written to `path`.
    /// `stillForwarding` says whether the SSH forward still runs (checked while connecting).
    public func receive(into path: String, expected: UInt64, stillForwarding: () -> Bool) throws -> UInt64 {
        let socketFD = try connect(stillForwarding: stillForwarding)
        defer { close(socketFD) }
        let file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw FileSystemError.io(operation: "create", path: path, errno: errno) }
        defer { close(file) }
        fchmod(file, 0o600)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total: UInt64 = 0
        let started = Date()
        var lastData = Date()
        var shown = Date()
        while true {
            if Capture.wasInterrupted { throw FarmError("\(target): interrupted after \(total >> 20) MiB; LiME is unloaded, \(path) is partial") }
            var poller = pollfd(fd: socketFD, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 200)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else {
                let silent = Date().timeIntervalSince(lastData)
                if silent > stall {
                    throw FarmError("\(target): LiME sent nothing for \(Int(silent)) s "
                                       + (total == 0 ? "after the connection was made" : "after \(total) bytes (\(total >> 20) MiB)")
                                       + "; the host may be stuck or the link down; \(path) is partial")
                }
                continue
            }
            let count = buffer.withUnsafeMutableBytes { read(socketFD, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            lastData = Date()
            var offset = 0
            while offset < count {
                let n = buffer.withUnsafeBytes { write(file, $0.baseAddress! + offset, count - offset) }
                guard n > 0 else { throw FileSystemError.io(operation: "write", path: path, errno: errno) }
                offset += n
            }
            total += UInt64(count)
            if Date().timeIntervalSince(shown) >= 1 {
                shown = Date()
                let rate = Double(total) / max(Date().timeIntervalSince(started), 0.001)
                let left = expected > total ? Double(expected - total) / max(rate, 1) : 0
                progress(String(format: "%@: %.0f / %.0f MiB, %.1f MiB/s, ETA %.0f s", target,
                                Double(total) / 1_048_576, Double(expected) / 1_048_576, rate / 1_048_576, left))
            }
        }
        fsync(file)
        return total
    }

    /// Connects to the forwarded port; the forward takes a moment to listen.
    private func connect(stillForwarding: () -> Bool) throws -> Int32 {
        let deadline = Date().addingTimeInterval(30)
        while true {
            guard stillForwarding() else { throw FarmError("\(target): the SSH port forward ended before streaming began") }
            if Capture.wasInterrupted { throw FarmError("\(target): interrupted") }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if connected == 0 { return fd }
            close(fd)
            guard Date() < deadline else { throw FarmError("\(target): could not connect to the forwarded port 127.0.0.1:\(port)") }
            usleep(100_000)
        }
    }
}
