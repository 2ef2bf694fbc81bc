import FarmEngine
import FarmKit
import Foundation
import Testing

/// What LiME looks like through the SSH forward, slow to start or stalled mid-way: waits, sends
/// some bytes, then waits again before closing.
func slowSender(delay: Double, bytes: Int, thenWait: Double) throws -> PythonServer {
    try PythonServer(serving: """
    c, _ = s.accept(); time.sleep(float(sys.argv[1])); c.sendall(b'L' * int(sys.argv[2])); time.sleep(float(sys.argv[3])); c.close()
    """, arguments: ["\(delay)", "\(bytes)", "\(thenWait)"])
}

@Suite("Capture's stream")
struct MemoryStreamTests {
    /// LiME walks the memory map before its first byte: a slow start is not a stall.
    @Test func aFirstByteAfterASlowStartIsReceived() throws {
        let scratch = try Scratch()
        let server = try slowSender(delay: 1.5, bytes: 1 << 20, thenWait: 0)
        let stream = MemoryStream(port: server.port, target: "lab", stall: 5) { _ in }
        let received = try stream.receive(into: scratch.file("image.part"), expected: 1 << 20) { true }
        #expect(received == 1 << 20)
        #expect(try FileManager.default.attributesOfItem(atPath: scratch.file("image.part"))[.posixPermissions] as? NSNumber == 0o600)
    }

    /// A stream that stops after its first bytes fails after the stall time, naming how far it got.
    @Test func aStreamThatStallsMidwayFailsAfterTheStallTime() throws {
        let scratch = try Scratch()
        let server = try slowSender(delay: 0, bytes: 65536, thenWait: 60)
        let stream = MemoryStream(port: server.port, target: "lab", stall: 1.5) { _ in }
        let started = Date()
        #expect {
            _ = try stream.receive(into: scratch.file("image.part"), expected: 1 << 30) { true }
        } throws: { error in
            "\(error)".contains("LiME sent nothing for") && "\(error)".contains("after 65536 bytes")
        }
        #expect(Date().timeIntervalSince(started) < 10)
    }

    /// A user part that ssh would take for an option is refused before any ssh runs.
    @Test(arguments: ["-oProxyCommand=touch /tmp/x@host", "@host", "root@-host", "root@host:99999"])
    func aTargetSshWouldMisreadIsRefused(_ text: String) {
        #expect(throws: FarmError.self) { try CaptureTarget(parsing: text) }
    }
}
