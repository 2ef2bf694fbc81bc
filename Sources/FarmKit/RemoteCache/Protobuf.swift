import Foundation

/// The protocol buffers wire format, for the few Remote Execution API messages a remote cache
/// entry is made of. proto3 rules: a field holding its default value (0, "", false) is left out,
/// fields are written in field-number order (the writer's caller keeps that order).
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    private enum WireType: UInt64 {
        case varint = 0
        case lengthDelimited = 2
    }

    private mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    private mutating func tag(_ field: Int, _ type: WireType) {
        varint(UInt64(field) << 3 | type.rawValue)
    }

    mutating func string(_ field: Int, _ value: String) {
        guard !value.isEmpty else { return }
        tag(field, .lengthDelimited)
        varint(UInt64(value.utf8.count))
        bytes.append(contentsOf: value.utf8)
    }

    /// int32 and int64: a negative value takes ten bytes (two's complement, as protobuf does).
    mutating func integer(_ field: Int, _ value: Int64) {
        guard value != 0 else { return }
        tag(field, .varint)
        varint(UInt64(bitPattern: value))
    }

    mutating func bool(_ field: Int, _ value: Bool) {
        guard value else { return }
        tag(field, .varint)
        varint(1)
    }

    /// An embedded message, written even when empty (presence is what a message field says).
    mutating func message(_ field: Int, _ build: (inout ProtobufWriter) -> Void) {
        var inner = ProtobufWriter()
        build(&inner)
        tag(field, .lengthDelimited)
        varint(UInt64(inner.bytes.count))
        bytes.append(contentsOf: inner.bytes)
    }
}

/// Reads a message's fields in order; unknown fields are skipped by their wire type.
struct ProtobufReader {
    enum Value {
        case varint(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed
    }

    struct Malformed: Error, CustomStringConvertible {
        let offset: Int
        let reason: String
        var description: String { "malformed protobuf at byte \(offset): \(reason)" }
    }

    private let bytes: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    private mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.endIndex else { throw Malformed(offset: position, reason: "a varint runs past the end") }
            guard shift < 64 else { throw Malformed(offset: position, reason: "a varint longer than ten bytes") }
            let byte = bytes[position]
            position += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    private mutating func skip(_ count: Int) throws {
        guard count >= 0, bytes.endIndex - position >= count else {
            throw Malformed(offset: position, reason: "a field of \(count) bytes runs past the end")
        }
        position += count
    }

    /// The next field, or nil at the end of the message.
    mutating func next() throws -> (field: Int, value: Value)? {
        guard position < bytes.endIndex else { return nil }
        let start = position
        let key = try varint()
        let field = Int(truncatingIfNeeded: key >> 3)
        guard field > 0 else { throw Malformed(offset: start, reason: "field number 0") }
        switch key & 7 {
        case 0:
            return (field, .varint(try varint()))
        case 1:
            try skip(8)
            return (field, .fixed)
        case 2:
            let length = try varint()
            guard length <= UInt64(bytes.endIndex - position) else {
                throw Malformed(offset: position, reason: "a field of \(length) bytes runs past the end")
            }
            let body = bytes[position..<position + Int(length)]
            position += Int(length)
            return (field, .bytes(body))
        case 5:
            try skip(4)
            return (field, .fixed)
        default:
            throw Malformed(offset: start, reason: "wire type \(key & 7) of field \(field)")
        }
    }
}

extension ProtobufReader.Value {
    func string(_ name: String) throws -> String {
        guard case let .bytes(body) = self, let text = String(validating: body, as: UTF8.self) else {
            throw ProtobufReader.Malformed(offset: 0, reason: "\(name) is not a UTF-8 string")
        }
        return text
    }

    func integer(_ name: String) throws -> Int64 {
        guard case let .varint(value) = self else { throw ProtobufReader.Malformed(offset: 0, reason: "\(name) is not an integer") }
        return Int64(bitPattern: value)
    }

    func message(_ name: String) throws -> ProtobufReader {
        guard case let .bytes(body) = self else { throw ProtobufReader.Malformed(offset: 0, reason: "\(name) is not a message") }
        return ProtobufReader(body)
    }
}
