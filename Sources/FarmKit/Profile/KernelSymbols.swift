import FarmEngine
import Foundation

/// A kernel's symbol addresses, from its own kallsyms tables or from a System.map.
public struct KernelSymbols: Sendable {
    /// One address per name. A name the kernel has more than once keeps its global entry (an
    /// upper-case type: `kern_path` the exported function, not a file's static variable of that
    /// name); among several static ones (`user_read` of two files), the last, which is the highest
    /// address since kallsyms and System.map are sorted by address: the one dwarf2json keeps,
    /// reading System.map line by line.
    public var addresses: [String: UInt64]

    /// Adds an entry by the rule `addresses` states; `globals` are the names with a global entry so far.
    fileprivate static func add(_ name: String, _ address: UInt64, global: Bool, to addresses: inout [String: UInt64], globals: inout Set<String>) {
        if let previous = addresses.updateValue(address, forKey: name), !global, globals.contains(name) {
            addresses[name] = previous
        }
        if global { globals.insert(name) }
    }

    public init(addresses: [String: UInt64]) {
        self.addresses = addresses
    }

    /// From the kallsyms tables inside a stripped vmlinux (5.10, 6.1, 6.12 layouts; absolute and relative offsets).
    ///
    /// scripts/kallsyms.c writes, each table aligned to 8 bytes in .rodata: `kallsyms_num_syms`,
    /// `kallsyms_names` (per symbol a length, one byte or, from 6.1, two for lengths over 127,
    /// then token codes; the first character is the type), `kallsyms_markers` (32-bit offsets of
    /// every 256th name), in 6.1's stable series and 6.2-6.3 `kallsyms_seqs_of_names`, then
    /// `kallsyms_token_table` (256 NUL-terminated strings) and `kallsyms_token_index`. The
    /// addresses come before `num_syms` up to 6.3 and after `token_index` from 6.4:
    /// `kallsyms_addresses` (64-bit, CONFIG_KALLSYMS_BASE_RELATIVE off) or `kallsyms_offsets`
    /// (32-bit) with `kallsyms_relative_base`; with CONFIG_KALLSYMS_ABSOLUTE_PERCPU a per-CPU
    /// symbol's offset is its address and any other's is `relative_base - 1 - offset`.
    /// The tables are found by their content, so the order between versions does not matter.
    public static func kallsyms(in elf: ELFImage, origin: String) throws -> KernelSymbols {
        guard let rodata = elf.section(".rodata"), rodata.hasFileBytes, rodata.size > 0 else {
            throw FarmError("\(origin): no .rodata section with bytes, where the kallsyms tables are; is it a vmlinux (not a module, not a bzImage)?")
        }
        return try elf.data.withUnsafeBytes { raw in
            let region = Int(rodata.offset)..<Int(rodata.offset + rodata.size)
            let reader = TableReader(raw: raw, region: region, address: rodata.address, origin: origin)
            return KernelSymbols(addresses: try reader.read(elf: elf))
        }
    }

    /// System.map or /proc/kallsyms text ("ffffffff81000000 T _text", module symbols "[mod]" ignored).
    public static func parseMap(_ text: String, origin: String) throws -> KernelSymbols {
        var addresses: [String: UInt64] = [:]
        var lineNumber = 0
        var nonZero = false
        var globals = Set<String>()
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.isEmpty { continue }
            guard fields.count == 3 || (fields.count == 4 && fields[3].hasPrefix("[")),
                  fields[1].count == 1, let address = UInt64(fields[0], radix: 16) else {
                throw FarmError.badInput("\(origin):\(lineNumber): '\(line.prefix(120))' is not a symbol line ('<hex address> <type> <name>', as System.map and /proc/kallsyms have)")
            }
            // A module's symbols ("name\t[module]") are not the kernel's.
            if fields.count == 4 { continue }
            add(String(fields[2]), address, global: fields[1].first!.isUppercase, to: &addresses, globals: &globals)
            nonZero = nonZero || address != 0
        }
        guard !addresses.isEmpty else {
            throw FarmError.badInput("\(origin): no symbols in it; give the kernel's System.map or /proc/kallsyms")
        }
        guard nonZero else {
            throw FarmError.badInput("\(origin): every address is 0, so it was read without the right to see them (kptr_restrict); read /proc/kallsyms as root")
        }
        guard addresses["_text"] != nil else {
            // Debian's packages ship an 83-byte stub since 5.8 that names the -dbg package.
            throw FarmError.badInput("\(origin): no _text symbol among its \(addresses.count), so it is not a whole kernel map (Debian's /boot/System.map is a stub); take the symbols from the vmlinux's kallsyms tables instead")
        }
        return KernelSymbols(addresses: addresses)
    }

    /// The bytes of `linux_banner` through its terminating NUL ("Linux version ...\n\0").
    public func banner(in elf: ELFImage) throws -> [UInt8] {
        guard let address = addresses["linux_banner"] else {
            throw FarmError("\(elf.origin): no linux_banner among the kernel's \(addresses.count) symbols, so its banner cannot be read")
        }
        // The banner is "Linux version <release> (<builder>) (<compiler>) <version>\n": a few hundred bytes.
        let limit = 1024
        guard let start = elf.fileOffset(ofAddress: address, count: 1) else {
            throw FarmError("\(elf.origin): linux_banner's address 0x\(String(address, radix: 16)) lies in no part of the file; the symbols are not this kernel's")
        }
        let bytes = elf.data.withUnsafeBytes { raw -> [UInt8]? in
            let end = min(raw.count, start + limit)
            guard let nul = raw[start..<end].firstIndex(of: 0) else { return nil }
            return Array(raw[start...nul])
        }
        guard let bytes, bytes.starts(with: Array("Linux version ".utf8)) else {
            throw FarmError("\(elf.origin): the bytes at linux_banner (0x\(String(address, radix: 16))) are not a NUL-terminated \"Linux version ...\" string; the symbols are not this kernel's")
        }
        return bytes
    }

    /// The lengths of the arrays whose length is a kernel macro, read from the image's data, by
    /// symbol: `taint_flags` (`struct taint_flag { char c_true, c_false; bool module; ... }`, of
    /// `taintFlagSize` bytes as the kernel's BTF says: 3, or 16 from 6.12 with its `desc`;
    /// TAINT_FLAGS_COUNT of them: 16 in 4.10, 19 in 6.1) is counted while its entries are an
    /// upper-case letter, a letter or space, and 0 or 1. A symbol it cannot read is not listed.
    public func arrayCounts(in elf: ELFImage, taintFlagSize: Int?) -> [String: Int] {
        guard let stride = taintFlagSize, stride >= 3, let address = addresses["taint_flags"],
              let start = elf.fileOffset(ofAddress: address, count: stride) else { return [:] }
        let count = elf.data.withUnsafeBytes { raw -> Int in
            var count = 0
            var offset = start
            func letter(_ byte: UInt8) -> Bool { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) }
            while offset + stride <= raw.count, count < 64, letter(raw[offset]),
                  letter(raw[offset + 1]) || raw[offset + 1] == UInt8(ascii: " ") || raw[offset + 1] == UInt8(ascii: "-"), raw[offset + 2] <= 1 {
                count += 1
                offset += stride
            }
            return count
        }
        return count > 0 ? ["taint_flags": count] : [:]
    }
}

/// Finds and decodes the kallsyms tables in one section's bytes. Offsets are the file's.
private struct TableReader {
    let raw: UnsafeRawBufferPointer
    let region: Range<Int>
    /// The section's virtual address: the tables are aligned in memory, not in the file.
    let address: UInt64
    let origin: String

    /// What `kallsyms_names`, `_markers` and `_num_syms` gave.
    struct Names {
        var count: Int
        var start: Int
        var end: Int
        var markers: Int
        var markersEnd: Int
    }

    /// Where `kallsyms_offsets` and `kallsyms_relative_base`, or `kallsyms_addresses`, are.
    struct AddressTable {
        var addresses: [UInt64]
        var labels: [(String, Int)]
    }

    func u16(_ at: Int) -> Int { Int(raw.loadUnaligned(fromByteOffset: at, as: UInt16.self).littleEndian) }
    func u32(_ at: Int) -> UInt32 { raw.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian }
    func u64(_ at: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: at, as: UInt64.self).littleEndian }

    /// The first file offset at or after `offset` whose address is 8-byte aligned (scripts/kallsyms.c's ALGN).
    func aligned(_ offset: Int) -> Int {
        let misalignment = Int((address &+ UInt64(bitPattern: Int64(offset - region.lowerBound))) & 7)
        return misalignment == 0 ? offset : offset + 8 - misalignment
    }

    func fits(_ offset: Int, _ count: Int) -> Bool {
        offset >= region.lowerBound && count >= 0 && offset <= region.upperBound - count
    }

    func failure(_ problem: String) -> FarmError {
        FarmError("\(origin): the kallsyms tables in .rodata do not parse: \(problem); a kernel built without CONFIG_KALLSYMS, or with a table layout farm does not read, needs its System.map (from its -dbg package) instead")
    }

    func read(elf: ELFImage) throws -> [String: UInt64] {
        let (tokenTable, tokenIndex) = try findTokenTable()
        let names = try findNames(before: tokenTable)
        let table = try findAddresses(names: names, tokenIndexEnd: tokenIndex + 512)
        var symbols = try decode(names, tokenTable: tokenTable, tokenIndex: tokenIndex, addresses: table.addresses)
        // Up to 6.1 kallsyms leaves its own tables out (scripts/kallsyms.c's ignored symbols);
        // where each one starts is where it was found.
        var labels = [("kallsyms_num_syms", names.start - 8), ("kallsyms_names", names.start), ("kallsyms_markers", names.markers),
                      ("kallsyms_token_table", tokenTable), ("kallsyms_token_index", tokenIndex)] + table.labels
        // 6.2's seqs_of_names (three bytes a symbol) between the markers and the token table, as
        // 6.1's stable series has it; from 6.4 it follows the addresses.
        if aligned(names.markersEnd) + 3 * names.count <= tokenTable {
            labels.append(("kallsyms_seqs_of_names", aligned(names.markersEnd)))
        }
        for (label, offset) in labels {
            let found = address &+ UInt64(offset - region.lowerBound)
            // From 6.2 the tables list themselves: a check that they were read where they are.
            if let listed = symbols[label], listed != found {
                throw failure("the symbols put \(label) at 0x\(String(listed, radix: 16)), but it was read at 0x\(String(found, radix: 16))")
            }
            symbols[label] = found
        }
        guard let text = symbols["_text"] else {
            throw failure("no _text among the \(symbols.count) symbols decoded")
        }
        guard elf.fileOffset(ofAddress: text, count: 1) != nil else {
            throw failure("_text decodes to 0x\(String(text, radix: 16)), which lies in none of the file's sections; the address table was misread")
        }
        return symbols
    }

    /// Every name expanded through the token table, with its address. Expansions are copied
    /// from the token table in place into one buffer; only the final names become Strings.
    func decode(_ names: Names, tokenTable: Int, tokenIndex: Int, addresses: [UInt64]) throws -> [String: UInt64] {
        var tokenStart = [Int](repeating: 0, count: 256), tokenLength = [Int](repeating: 0, count: 256)
        for code in 0..<256 {
            tokenStart[code] = tokenTable + u16(tokenIndex + 2 * code)
            // findTokenTable saw every token's NUL before the index.
            tokenLength[code] = (raw[tokenStart[code]..<tokenIndex].firstIndex(of: 0) ?? tokenStart[code]) - tokenStart[code]
        }
        var symbols: [String: UInt64] = [:]
        symbols.reserveCapacity(names.count)
        var globals = Set<String>()
        // KSYM_NAME_LEN is 512; a longer expansion means the tables were misread.
        let capacity = 4096
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
        defer { buffer.deallocate() }
        let base = raw.baseAddress!
        var position = names.start
        for index in 0..<names.count {
            let (length, header) = nameLength(at: position)
            var written = 0
            for at in (position + header)..<(position + header + length) {
                let code = Int(raw[at])
                let count = tokenLength[code]
                guard written + count <= capacity else {
                    throw failure("symbol \(index) of \(names.count) expands past \(capacity) bytes")
                }
                buffer.baseAddress!.advanced(by: written).copyMemory(from: base + tokenStart[code], byteCount: count)
                written += count
            }
            position += header + length
            let type = written > 0 ? buffer[0] | 0x20 : 0
            guard written > 1, type >= 0x61, type <= 0x7a else {
                let text = String(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<written]), as: UTF8.self)
                throw failure("symbol \(index) of \(names.count) decodes to '\(text)', which has no type letter and name")
            }
            KernelSymbols.add(String(decoding: UnsafeRawBufferPointer(rebasing: buffer[1..<written]), as: UTF8.self), addresses[index],
                              global: buffer[0] < 0x61, to: &symbols, globals: &globals)
        }
        return symbols
    }

    /// `kallsyms_names`' length prefix at `offset`: ULEB128 of one or two bytes (before 6.1, one).
    func nameLength(at offset: Int) -> (length: Int, header: Int) {
        let first = Int(raw[offset])
        guard first & 0x80 != 0 else { return (first, 1) }
        return ((first & 0x7f) | (Int(raw[offset + 1]) << 7), 2)
    }

    /// The token table and index. Every character a symbol uses keeps its own code as a
    /// one-character token, so digits "0".."9" sit at codes 0x30-0x39 in a row: the table is
    /// found from there and checked against its index, which follows it.
    func findTokenTable() throws -> (table: Int, index: Int) {
        let digits: [UInt8] = (0x30...0x39).flatMap { [UInt8($0), 0] }
        var from = region.lowerBound
        while let found = search(digits, from: from) {
            from = found + 1
            // Walk the tokens from "0" (code 0x30) to the last (code 255).
            var end = found
            var complete = true
            for _ in 0x30..<256 {
                guard let nul = raw[end..<region.upperBound].firstIndex(of: 0) else { complete = false; break }
                end = nul + 1
            }
            let index = aligned(end)
            guard complete, fits(index, 512), u16(index) == 0 else { continue }
            let table = found - u16(index + 2 * 0x30)
            guard table >= region.lowerBound, table < found else { continue }
            // Each index entry is where the previous token's NUL ends.
            var consistent = true
            for code in 0..<255 {
                let start = table + u16(index + 2 * code), next = table + u16(index + 2 * code + 2)
                guard start < next, next <= end, raw[next - 1] == 0, !raw[start..<(next - 1)].contains(0) else { consistent = false; break }
            }
            if consistent { return (table, index) }
        }
        throw failure("no kallsyms_token_table (no run of one-character tokens \"0\" to \"9\" followed by a matching kallsyms_token_index)")
    }

    func search(_ needle: [UInt8], from: Int) -> Int? {
        guard from < region.upperBound, let base = raw.baseAddress else { return nil }
        // Glibc's memmem is not visible to Swift; memchr for the first byte, memcmp for the rest.
        return needle.withUnsafeBytes { pattern in
            var at = from
            while at <= region.upperBound - pattern.count {
                guard let hit = memchr(base + at, Int32(pattern[0]), region.upperBound - pattern.count + 1 - at) else { return nil }
                at = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(base + at, pattern.baseAddress!, pattern.count) == 0 { return at }
                at += 1
            }
            return nil
        }
    }

    /// `kallsyms_num_syms`, then `kallsyms_names`, then `kallsyms_markers`, somewhere before the
    /// token table: the nearest 8-aligned count whose names decode to markers that agree.
    func findNames(before tokenTable: Int) throws -> Names {
        var candidate = aligned(tokenTable - 8)
        if candidate > tokenTable - 8 { candidate -= 8 }
        while candidate >= region.lowerBound {
            defer { candidate -= 8 }
            let count = Int(u32(candidate))
            // The count is a .long followed by alignment padding; each name takes at least two bytes.
            guard count > 0, u32(candidate + 4) == 0, count <= (tokenTable - candidate) / 2 else { continue }
            if let names = decodeLengths(count: count, start: candidate + 8, limit: tokenTable) { return names }
        }
        throw failure("no kallsyms_num_syms before the token table at offset \(tokenTable) whose kallsyms_names agree with a kallsyms_markers table")
    }

    /// Walks `count` names from `start`, checking every 256th against the markers that follow.
    func decodeLengths(count: Int, start: Int, limit: Int) -> Names? {
        var markers: [Int] = []
        markers.reserveCapacity((count + 255) / 256)
        var position = start
        for index in 0..<count {
            if index & 0xff == 0 { markers.append(position - start) }
            guard position + 2 <= limit else { return nil }
            let (length, header) = nameLength(at: position)
            guard length > 0 else { return nil }
            position += header + length
            guard position <= limit else { return nil }
        }
        let markersStart = aligned(position)
        // 32-bit markers since Linux 4.20; unsigned long before.
        for width in [4, 8] where fits(markersStart, markers.count * width) && markersStart + markers.count * width <= limit {
            var agree = true
            for (index, marker) in markers.enumerated() {
                let value = width == 4 ? UInt64(u32(markersStart + index * 4)) : u64(markersStart + index * 8)
                if value != UInt64(marker) { agree = false; break }
            }
            if agree { return Names(count: count, start: start, end: position, markers: markersStart, markersEnd: markersStart + markers.count * width) }
        }
        return nil
    }

    /// The symbols' addresses in table order, from whichever layout gives sorted addresses.
    func findAddresses(names: Names, tokenIndexEnd: Int) throws -> AddressTable {
        let count = names.count
        let countAt = names.start - 8
        let afterIndex = aligned(tokenIndexEnd)
        let offsetsBytes = (count * 4 + 7) & ~7
        // Up to 6.3 the offsets and base come before num_syms; from 6.4 after the token index.
        let relative = [(countAt - 8 - offsetsBytes, countAt - 8), (afterIndex, aligned(afterIndex + count * 4))]
        for (offsets, base) in relative where fits(offsets, count * 4) && fits(base, 8) {
            if let addresses = relativeAddresses(offsets: offsets, count: count, base: u64(base)) {
                var labels = [("kallsyms_offsets", offsets), ("kallsyms_relative_base", base)]
                if offsets == afterIndex { labels.append(("kallsyms_seqs_of_names", aligned(base + 8))) }
                return AddressTable(addresses: addresses, labels: labels)
            }
        }
        for table in [countAt - count * 8, afterIndex] where fits(table, count * 8) {
            let addresses = (0..<count).map { u64(table + 8 * $0) }
            if zip(addresses, addresses.dropFirst()).allSatisfy({ $0 <= $1 }) {
                var labels = [("kallsyms_addresses", table)]
                if table == afterIndex { labels.append(("kallsyms_seqs_of_names", aligned(table + count * 8))) }
                return AddressTable(addresses: addresses, labels: labels)
            }
        }
        throw failure("\(count) names decode, but neither kallsyms_offsets with kallsyms_relative_base nor kallsyms_addresses beside them gives addresses in order")
    }

    /// `kallsyms_offsets` against `base`, when they decode in scripts/kallsyms.c's way: sorted,
    /// and the first relative symbol at the base itself (record_relative_base).
    func relativeAddresses(offsets: Int, count: Int, base: UInt64) -> [UInt64]? {
        var addresses = [UInt64](repeating: 0, count: count)
        var absolutePerCPU = false
        for index in 0..<count where Int32(bitPattern: u32(offsets + 4 * index)) < 0 {
            absolutePerCPU = true
            break
        }
        var firstRelative: UInt64?
        var previous: UInt64 = 0
        for index in 0..<count {
            let offset = u32(offsets + 4 * index)
            let value: UInt64
            if !absolutePerCPU {
                value = base &+ UInt64(offset)
                if firstRelative == nil { firstRelative = value }
            } else if Int32(bitPattern: offset) >= 0 {
                value = UInt64(offset)
            } else {
                value = base &- 1 &- UInt64(bitPattern: Int64(Int32(bitPattern: offset)))
                if firstRelative == nil { firstRelative = value }
            }
            guard value >= previous || index == 0 else { return nil }
            previous = value
            addresses[index] = value
        }
        guard firstRelative == base else { return nil }
        return addresses
    }
}
