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

/// LiME with `compress=1`: writes a two-range LiME image to `plain` and sends it deflated as LiME
/// does (zlib format, window bits 11, memory level 5, level 6), in page-sized writes; `mode`
/// `corrupt` flips a byte in the middle of the compressed bytes, `cut` sends only their first half.
func compressedSender(plain: String, mode: String = "whole") throws -> PythonServer {
    try PythonServer(serving: """
    import os, struct, zlib
    def lime_range(start, data):
        return struct.pack('<IIQQQ', 0x4C694D45, 1, start, start + len(data) - 1, 0) + data
    image = lime_range(0x1000, os.urandom(1 << 20) + bytes(3 << 20)) + lime_range(0x100000, b'Linux version 6.1.0-test ' * 40000 + bytes(1 << 20))
    open(sys.argv[1], 'wb').write(image)
    z = zlib.compressobj(6, zlib.DEFLATED, 11, 5)
    wire = bytearray(z.compress(image) + z.flush())
    if sys.argv[2] == 'corrupt': wire[len(wire) // 2] ^= 0xFF
    if sys.argv[2] == 'cut': wire = wire[:len(wire) // 2]
    c, _ = s.accept()
    for i in range(0, len(wire), 4096): c.sendall(wire[i:i + 4096])
    c.close()
    """, arguments: [plain, mode])
}

@Suite("Capture's stream")
struct MemoryStreamTests {
    /// A compressed stream gives the same file, and the same sha256, as the plain stream would.
    @Test func aCompressedStreamIsInflatedIntoTheSameImage() throws {
        let scratch = try Scratch()
        let server = try compressedSender(plain: scratch.file("plain.lime"))
        let stream = MemoryStream(port: server.port, target: "lab", stall: 10) { _ in }
        let received = try stream.receive(into: scratch.file("image.part"), expected: 6 << 20, compressed: true) { true }
        let plain = try Data(contentsOf: URL(fileURLWithPath: scratch.file("plain.lime")))
        let image = try Data(contentsOf: URL(fileURLWithPath: scratch.file("image.part")))
        #expect(image == plain)
        #expect(received.bytes == UInt64(plain.count) && received.sha256 == SHA256.hash(plain))
        #expect(received.streamed < received.bytes / 3, "\(received.streamed) bytes streamed for \(received.bytes)")
        #expect(try LimeImage.ranges(of: scratch.file("image.part")).map(\.start) == [0x1000, 0x100000])
        #expect(try FileManager.default.attributesOfItem(atPath: scratch.file("image.part"))[.posixPermissions] as? NSNumber == 0o600)
    }

    /// A damaged or cut-short compressed stream fails saying so, and leaves no image: the bytes
    /// past the damage cannot be inflated and the stream's checksum was never checked.
    @Test(arguments: [("corrupt", "is corrupt at compressed byte"), ("cut", "the compressed stream ended before its end")])
    func aDamagedCompressedStreamFailsAndLeavesNoImage(_ mode: String, _ message: String) throws {
        let scratch = try Scratch()
        let server = try compressedSender(plain: scratch.file("plain.lime"), mode: mode)
        let stream = MemoryStream(port: server.port, target: "lab", stall: 10) { _ in }
        #expect {
            _ = try stream.receive(into: scratch.file("image.part"), expected: 6 << 20, compressed: true) { true }
        } throws: { error in
            "\(error)".hasPrefix("lab: ") && "\(error)".contains(message) && "\(error)".contains("no image is kept")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.file("image.part")))
    }

    /// LiME walks the memory map before its first byte: a slow start is not a stall.
    @Test func aFirstByteAfterASlowStartIsReceived() throws {
        let scratch = try Scratch()
        let server = try slowSender(delay: 1.5, bytes: 1 << 20, thenWait: 0)
        let stream = MemoryStream(port: server.port, target: "lab", stall: 5) { _ in }
        let received = try stream.receive(into: scratch.file("image.part"), expected: 1 << 20) { true }
        #expect(received.bytes == 1 << 20 && received.streamed == 1 << 20)
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
