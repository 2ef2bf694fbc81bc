import FarmEngine
import Foundation

/// A LiME image (`format=lime`): per range a 32-byte header (magic `0x4C694D45` little-endian,
/// version 1, start and end address inclusive, 8 reserved bytes) followed by the range's bytes.
public enum LimeImage {
    public static let magic: UInt32 = 0x4C69_4D45

    public struct Range: Sendable, Equatable, Codable {
        public var start: UInt64
        /// Inclusive, as in `/proc/iomem`.
        public var end: UInt64
        public var size: UInt64 { end - start + 1 }
    }

    /// The ranges of an image, after checking that headers and sizes add up to the file exactly.
    public static func ranges(of path: String) throws -> [Range] {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw FarmError("\(path): cannot read the image") }
        defer { try? handle.close() }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
        var offset: UInt64 = 0
        var ranges: [Range] = []
        while offset < size {
            try handle.seek(toOffset: offset)
            let header = handle.readData(ofLength: 32)
            guard header.count == 32 else { throw FarmError("\(path): a LiME header at byte \(offset) is cut short") }
            func integer<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T {
                header.subdata(in: at..<(at + MemoryLayout<T>.size)).withUnsafeBytes { T(littleEndian: $0.loadUnaligned(as: T.self)) }
            }
            guard integer(0, UInt32.self) == magic else {
                throw FarmError("\(path): no LiME header magic at byte \(offset); not a LiME image or not complete")
            }
            guard integer(4, UInt32.self) == 1 else { throw FarmError("\(path): LiME header version \(integer(4, UInt32.self)) at byte \(offset), expected 1") }
            let range = Range(start: integer(8, UInt64.self), end: integer(16, UInt64.self))
            guard range.end >= range.start, offset + 32 + range.size <= size else {
                throw FarmError("\(path): the range \(String(range.start, radix: 16))-\(String(range.end, radix: 16)) at byte \(offset) runs past the end of the file")
            }
            ranges.append(range)
            offset += 32 + range.size
        }
        return ranges
    }

    /// `/proc/iomem`'s top-level `System RAM` ranges.
    public static func systemRAM(iomem: String) -> [Range] {
        iomem.split(separator: "\n").compactMap { line in
            guard !line.hasPrefix(" "), line.contains(": System RAM") else { return nil }
            let bounds = line.split(separator: ":")[0].trimmingCharacters(in: .whitespaces).split(separator: "-")
            guard bounds.count == 2, let start = UInt64(bounds[0], radix: 16), let end = UInt64(bounds[1], radix: 16) else { return nil }
            return Range(start: start, end: end)
        }
    }
}
