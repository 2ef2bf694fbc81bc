/// A SHA-256 digest, held as 64 lowercase hex characters: the name of a CAS object and of a task.
public struct Digest: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let hex: String

    public init(bytes: [UInt8]) {
        let digits: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        hex = String(decoding: out, as: UTF8.self)
    }

    /// Accepts 64 hex characters in either case; returns nil for anything else.
    public init?(hex: String) {
        let lower = hex.lowercased()
        guard lower.utf8.count == 64, lower.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            return nil
        }
        self.hex = lower
    }

    /// For hex that farm itself wrote (its database): skips the check.
    init(trustedHex hex: String) { self.hex = hex }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let digest = Digest(hex: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a sha256 digest: \(text)")
        }
        self = digest
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }

    public var description: String { hex }
    /// The first 12 hex digits, enough to name a task on a command line.
    public var short: String { String(hex.prefix(12)) }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.hex < rhs.hex }
}
