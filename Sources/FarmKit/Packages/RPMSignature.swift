import FarmEngine
import Foundation

/// An RPM's own OpenPGP signatures, checked with gpgv and no rpm library: the file is a 96-byte
/// lead, the signature header (padded to 8 bytes), the main header and the compressed payload.
/// The signature header holds header-only signatures (`RSA` 268, `DSA` 267, which also carries
/// EdDSA) over the main header, and header+payload ones (`PGP` 1002, `GPG` 1005). A header-only
/// signature covers the payload through the sha256 the signed header lists (`PAYLOADDIGEST`).
public enum RPMSignature {
    struct Header {
        /// Byte offsets in the file: where the header's magic starts and where its data ends.
        var start: Int
        var end: Int
        var entries: [(tag: Int32, type: UInt32, offset: Int, count: Int)]
        var dataStart: Int
    }

    static let headerOnlyTags: [Int32: String] = [268: "RSA header", 267: "DSA/EdDSA header"]
    static let wholeTags: [Int32: String] = [1002: "PGP header+payload", 1005: "GPG header+payload"]

    /// Checks every OpenPGP signature the package carries against `keyring`; a package with none,
    /// or with one that does not verify, is refused. `name` names the package in messages.
    /// Returns what was checked, for a log.
    @discardableResult
    public static func verify(packageAt path: String, keyring: String, workDirectory: String, name: String) throws -> String {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw FileSystemError.io(operation: "read", path: path, errno: errno == 0 ? EIO : errno)
        }
        func refuse(_ problem: String) -> FarmError {
            FarmError("\(name): \(problem); the package is refused")
        }
        guard data.count > 96, data.prefix(4) == Data([0xED, 0xAB, 0xEE, 0xDB]) else { throw refuse("not an RPM (no lead)") }
        let signatureHeader = try header(in: data, at: 96, name: name)
        let mainStart = (signatureHeader.end + 7) & ~7
        let main = try header(in: data, at: mainStart, name: name)

        try AtomicFile.makeDirectory(workDirectory)
        let base = workDirectory + "/rpm-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer {
            for suffix in [".sig", ".header", ".whole"] { unlink(base + suffix) }
        }
        var checked: [String] = []
        for entry in signatureHeader.entries {
            let kind = headerOnlyTags[entry.tag] ?? wholeTags[entry.tag]
            guard let kind else { continue }
            let start = signatureHeader.dataStart + entry.offset
            guard entry.type == 7, entry.offset >= 0, start + entry.count <= signatureHeader.end else {
                throw refuse("its \(kind) signature entry is malformed")
            }
            try data.subdata(in: start..<(start + entry.count)).write(to: URL(fileURLWithPath: base + ".sig"))
            let signed: String
            if headerOnlyTags[entry.tag] != nil {
                signed = base + ".header"
                if !FileManager.default.fileExists(atPath: signed) {
                    try data.subdata(in: main.start..<main.end).write(to: URL(fileURLWithPath: signed))
                }
            } else {
                signed = base + ".whole"
                if !FileManager.default.fileExists(atPath: signed) {
                    try data.subdata(in: main.start..<data.count).write(to: URL(fileURLWithPath: signed))
                }
            }
            do {
                try DetachedSignature.verify(signature: base + ".sig", data: signed, keyring: keyring, workDirectory: workDirectory,
                                             what: "\(name) (its \(kind) signature)")
            } catch let error as FarmError {
                throw FarmError(error.message.replacingOccurrences(of: "; it is not used.", with: "; the package is refused: it was changed after it was signed, or signed by a key the keyring lacks."),
                                category: error.category)
            }
            checked.append(kind)
        }
        guard !checked.isEmpty else {
            throw refuse("it carries no OpenPGP signature, and its upstream has a keyring (sign it with rpmsign, or remove 'keyring:')")
        }
        if !checked.contains(where: { wholeTags.values.contains($0) }) {
            // Only the header is signed: the payload counts through the digest the header lists.
            let payload = data.subdata(in: main.end..<data.count)
            if let listed = payloadDigest(main, in: data) {
                let actual = SHA256.hash(payload).hex
                guard actual == listed.lowercased() else {
                    throw refuse("its payload's sha256 is \(actual), not the \(listed) its signed header lists: the payload was changed after signing")
                }
                checked.append("payload sha256")
            }
        }
        return checked.joined(separator: ", ")
    }

    /// The sha256 of the compressed payload the main header lists (`PAYLOADDIGEST` 5092 with
    /// `PAYLOADDIGESTALGO` 5093 = 8), nil when it lists none (rpm before 4.14).
    static func payloadDigest(_ header: Header, in data: Data) -> String? {
        guard let algorithm = header.entries.first(where: { $0.tag == 5093 && $0.type == 4 }),
              header.dataStart + algorithm.offset + 4 <= header.end,
              readUInt32(data, header.dataStart + algorithm.offset) == 8,
              let digest = header.entries.first(where: { $0.tag == 5092 && ($0.type == 8 || $0.type == 6) }) else { return nil }
        let start = header.dataStart + digest.offset
        guard start >= header.dataStart, start < header.end else { return nil }
        let bytes = data[start..<header.end].prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func header(in data: Data, at start: Int, name: String) throws -> Header {
        guard start + 16 <= data.count, data[start..<(start + 4)] == Data([0x8E, 0xAD, 0xE8, 0x01]) else {
            throw FarmError("\(name): no RPM header at byte \(start); the package is malformed and refused")
        }
        let count = Int(readUInt32(data, start + 8)), size = Int(readUInt32(data, start + 12))
        let dataStart = start + 16 + 16 * count
        guard count < 1 << 16, size < 1 << 28, dataStart + size <= data.count else {
            throw FarmError("\(name): the RPM header at byte \(start) claims \(count) entries and \(size) bytes, more than the file holds; refused")
        }
        var entries: [(Int32, UInt32, Int, Int)] = []
        for index in 0..<count {
            let at = start + 16 + 16 * index
            entries.append((Int32(bitPattern: readUInt32(data, at)), readUInt32(data, at + 4), Int(Int32(bitPattern: readUInt32(data, at + 8))),
                            Int(readUInt32(data, at + 12))))
        }
        return Header(start: start, end: dataStart + size, entries: entries, dataStart: dataStart)
    }

    static func readUInt32(_ data: Data, _ offset: Int) -> UInt32 {
        let base = data.startIndex + offset
        return UInt32(data[base]) << 24 | UInt32(data[base + 1]) << 16 | UInt32(data[base + 2]) << 8 | UInt32(data[base + 3])
    }
}
