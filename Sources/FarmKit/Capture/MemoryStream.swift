import FarmEngine
import Foundation

/// Receives LiME's image from a TCP port of 127.0.0.1 (the SSH forward of the host's LiME port)
/// into a 0600 file, with progress. One stall rule covers the whole stream: from the connection
/// to the first byte and between any two reads, `stall` seconds of silence fail the capture
/// (LiME's first byte can take a while: it walks the memory map first). The file is hashed as it
/// is written, so the image is never read back.
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

    /// What one stream gave.
    public struct Received: Sendable {
        /// Bytes written to the file (the plain image).
        public var bytes: UInt64
        /// Bytes that came over the connection (fewer than `bytes` when compressed).
        public var streamed: UInt64
        /// The sha256 of the file's bytes, hashed as they were written.
        public var sha256: Digest
    }

    /// Reads until LiME closes the connection; returns what was written to `path`. `compressed`:
    /// the stream is LiME's `compress=1` zlib stream, inflated here, so the file holds the same
    /// bytes as an uncompressed capture; a corrupt or cut-short compressed stream removes the
    /// file. `stillForwarding` says whether the SSH forward still runs (checked while connecting).
    public func receive(into path: String, expected: UInt64, compressed: Bool = false, stillForwarding: () -> Bool) throws -> Received {
        let socketFD = try connect(stillForwarding: stillForwarding)
        defer { close(socketFD) }
        let file = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard file >= 0 else { throw FileSystemError.io(operation: "create", path: path, errno: errno) }
        defer { close(file) }
        fchmod(file, 0o600)
        let inflater = compressed ? try Inflater() : nil
        do {
            return try stream(from: socketFD, to: file, path: path, expected: expected, inflater: inflater)
        } catch {
            // Past a corrupt byte nothing can be inflated, and a cut-short stream has lost its
            // checksum: the bytes kept would be unverifiable.
            if let inflater, !inflater.ended { unlink(path) }
            throw error
        }
    }

    private func stream(from socketFD: Int32, to file: Int32, path: String, expected: UInt64, inflater: Inflater?) throws -> Received {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: inflater == nil ? 0 : 1 << 20, alignment: 16)
        defer { plain.deallocate() }
        var hasher = SHA256()
        var total: UInt64 = 0
        var streamed: UInt64 = 0
        let started = Date()
        var lastData = Date()
        var shown = Date()
        func store(_ bytes: UnsafeRawBufferPointer, _ hasher: inout SHA256) throws {
            var offset = 0
            while offset < bytes.count {
                let n = write(file, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0, errno == EINTR { continue }
                guard n > 0 else { throw FileSystemError.io(operation: "write", path: path, errno: errno) }
                offset += n
            }
            hasher.update(bytes)
            total += UInt64(bytes.count)
        }
        let kept = inflater == nil ? "\(path) is partial" : "no image is kept"
        while true {
            if Capture.wasInterrupted { throw FarmError("\(target): interrupted after \(total >> 20) MiB; LiME is unloaded, \(kept)") }
            var poller = pollfd(fd: socketFD, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 200)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else {
                let silent = Date().timeIntervalSince(lastData)
                if silent > stall {
                    throw FarmError("\(target): LiME sent nothing for \(Int(silent)) s "
                                       + (streamed == 0 ? "after the connection was made" : "after \(streamed) bytes (\(streamed >> 20) MiB)")
                                       + "; the host may be stuck or the link down; \(kept)")
                }
                continue
            }
            let count = read(socketFD, buffer.baseAddress, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            lastData = Date()
            streamed += UInt64(count)
            let received = UnsafeRawBufferPointer(rebasing: buffer[..<count])
            if let inflater {
                inflater.feed(received)
                do {
                    while true {
                        let n = try inflater.inflate(into: plain)
                        try store(UnsafeRawBufferPointer(rebasing: plain[..<n]), &hasher)
                        if n < plain.count, inflater.needsInput || inflater.ended { break }
                    }
                } catch let error as FarmError {
                    throw FarmError("\(target): \(error.message) (\(total) plain bytes written); \(kept)")
                }
            } else {
                try store(received, &hasher)
            }
            if Date().timeIntervalSince(shown) >= 1 {
                shown = Date()
                let rate = Double(total) / max(Date().timeIntervalSince(started), 0.001)
                let left = expected > total ? Double(expected - total) / max(rate, 1) : 0
                let wire = inflater == nil ? "" : String(format: " (%.0f MiB compressed)", Double(streamed) / 1_048_576)
                progress(String(format: "%@: %.0f / %.0f MiB%@, %.1f MiB/s, ETA %.0f s", target,
                                Double(total) / 1_048_576, Double(expected) / 1_048_576, wire, rate / 1_048_576, left))
            }
        }
        if let inflater, !inflater.ended {
            throw FarmError("\(target): the compressed stream ended before its end, after \(streamed) compressed bytes"
                               + " (\(total) plain): the connection was cut or LiME failed; \(kept); try again, or with --compress off")
        }
        fsync(file)
        return Received(bytes: total, streamed: streamed, sha256: hasher.finalize())
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
