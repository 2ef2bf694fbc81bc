import FarmEngine
import Foundation

/// A read-only view of a 64-bit little-endian ELF file (an x86_64 vmlinux): its sections and
/// loadable segments, and bytes by virtual address. Nothing is copied but what a caller asks for.
public struct ELFImage: Sendable {
    public struct Section: Sendable {
        public let name: String
        public let address: UInt64
        public let offset: UInt64
        public let size: UInt64
        /// `SHT_NOBITS` (.bss): it takes memory but has no bytes in the file.
        public let hasFileBytes: Bool
    }

    /// A `PT_LOAD` program header: `fileSize` bytes at `offset` are mapped at `address`.
    public struct Segment: Sendable {
        public let address: UInt64
        public let offset: UInt64
        public let fileSize: UInt64
    }

    /// The whole file, zero-based.
    public let data: Data
    /// What the file is (a path, or a package and its member), for error messages.
    public let origin: String
    public let sections: [Section]
    public let segments: [Segment]

    public init(data: Data, origin: String) throws {
        // Reads below index from zero.
        let data = data.startIndex == 0 ? data : Data(data)
        self.data = data
        self.origin = origin
        func refuse(_ problem: String) -> FarmError {
            FarmError("\(origin): not a readable 64-bit little-endian ELF file: \(problem); is it a decompressed vmlinux?")
        }
        guard data.count >= 64, data.starts(with: [0x7f, 0x45, 0x4c, 0x46]) else {
            throw refuse(data.count < 64 ? "only \(data.count) bytes" : "no ELF magic at the start")
        }
        guard data[4] == 2 else { throw refuse("ELF class \(data[4]), not 64-bit") }
        guard data[5] == 1 else { throw refuse("data encoding \(data[5]), not little-endian") }

        let (sections, segments) = try data.withUnsafeBytes { raw throws -> ([Section], [Segment]) in
            func u16(_ at: Int) -> Int { Int(raw.loadUnaligned(fromByteOffset: at, as: UInt16.self).littleEndian) }
            func u32(_ at: Int) -> UInt32 { raw.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian }
            func u64(_ at: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian }
            /// `count` entries of `size` bytes at `offset`, entirely inside the file.
            func table(_ what: String, offset: UInt64, size: Int, count: Int, minimum: Int) throws -> Int {
                guard count == 0 || size >= minimum else { throw refuse("\(what) entries of \(size) bytes, fewer than \(minimum)") }
                let (end, overflow) = offset.addingReportingOverflow(UInt64(size * count))
                guard !overflow, end <= UInt64(raw.count) else {
                    throw refuse("the \(count) \(what) entries at offset \(offset) pass the end of the file (\(raw.count) bytes)")
                }
                return Int(offset)
            }

            var segments: [Segment] = []
            let programSize = u16(0x36), programCount = u16(0x38)
            let programs = try table("program header", offset: u64(0x20), size: programSize, count: programCount, minimum: 56)
            for index in 0..<programCount {
                let at = programs + index * programSize
                guard u32(at) == 1 else { continue }    // PT_LOAD
                let offset = u64(at + 0x08), fileSize = u64(at + 0x20)
                guard offset <= UInt64(raw.count), fileSize <= UInt64(raw.count) - offset else {
                    throw refuse("loadable segment \(index) (\(fileSize) bytes at offset \(offset)) passes the end of the file (\(raw.count) bytes)")
                }
                segments.append(Segment(address: u64(at + 0x10), offset: offset, fileSize: fileSize))
            }

            let sectionSize = u16(0x3a), sectionCount = u16(0x3c), namesIndex = u16(0x3e)
            let headers = try table("section header", offset: u64(0x28), size: sectionSize, count: sectionCount, minimum: 64)
            guard sectionCount == 0 || namesIndex < sectionCount else {
                throw refuse("the section-name table is section \(namesIndex) of \(sectionCount)")
            }
            let namesHeader = headers + namesIndex * sectionSize
            let namesStart = u64(namesHeader + 0x18), namesSize = u64(namesHeader + 0x20)
            guard sectionCount == 0 || (namesStart <= UInt64(raw.count) && namesSize <= UInt64(raw.count) - namesStart) else {
                throw refuse("the section-name table passes the end of the file")
            }
            var sections: [Section] = []
            for index in 0..<sectionCount {
                let at = headers + index * sectionSize
                let nameOffset = UInt64(u32(at))
                guard nameOffset < namesSize else { throw refuse("section \(index)'s name lies outside the section-name table") }
                let start = Int(namesStart + nameOffset), limit = Int(namesStart + namesSize)
                var end = start
                while end < limit, raw[end] != 0 { end += 1 }
                let name = String(decoding: UnsafeRawBufferPointer(rebasing: raw[start..<end]), as: UTF8.self)
                let type = u32(at + 4), offset = u64(at + 0x18), size = u64(at + 0x20)
                let hasFileBytes = type != 8 && type != 0    // SHT_NOBITS, SHT_NULL
                if hasFileBytes, offset > UInt64(raw.count) || size > UInt64(raw.count) - offset {
                    throw refuse("section \(name) (\(size) bytes at offset \(offset)) passes the end of the file (\(raw.count) bytes)")
                }
                sections.append(Section(name: name, address: u64(at + 0x10), offset: offset, size: size, hasFileBytes: hasFileBytes))
            }
            return (sections, segments)
        }
        self.sections = sections
        self.segments = segments
    }

    public func section(_ name: String) -> Section? {
        sections.first { $0.name == name }
    }

    /// The section's bytes (zero-based); empty for one with no bytes in the file.
    public func contents(of section: Section) -> Data {
        guard section.hasFileBytes else { return Data() }
        return data.subdata(in: Int(section.offset)..<Int(section.offset + section.size))
    }

    /// The file offset of `count` bytes at virtual `address`, when they all lie in one loadable
    /// segment's (or, in a file without program headers, one section's) file bytes.
    public func fileOffset(ofAddress address: UInt64, count: Int) -> Int? {
        let wanted = UInt64(max(count, 0))
        let places = segments.map { ($0.address, $0.offset, $0.fileSize) }
            + sections.filter(\.hasFileBytes).map { ($0.address, $0.offset, $0.size) }
        for (start, offset, size) in places where address >= start && address - start <= size && size - (address - start) >= wanted {
            return Int(offset + (address - start))
        }
        return nil
    }

    public func bytes(atAddress address: UInt64, count: Int) -> Data? {
        guard let offset = fileOffset(ofAddress: address, count: count) else { return nil }
        return data.subdata(in: offset..<offset + count)
    }
}
