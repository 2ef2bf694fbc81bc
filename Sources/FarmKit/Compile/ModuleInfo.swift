import FarmEngine
import Foundation

/// The `.modinfo` section of a kernel module (a 64-bit little-endian ELF relocatable object):
/// `key=value` strings such as `vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions`.
public struct ModuleInfo: Sendable {
    public var fields: [(key: String, value: String)]

    public func value(_ key: String) -> String? { fields.first { $0.key == key }?.value }

    public static func read(path: String) throws -> ModuleInfo {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FarmError(message: "\(path): cannot read the module")
        }
        return try parse(data, file: path)
    }

    public static func parse(_ data: Data, file: String) throws -> ModuleInfo {
        let bytes = [UInt8](data)
        func fail(_ why: String) -> FarmError { FarmError(message: "\(file): not a kernel module: \(why)") }
        func integer(_ offset: Int, _ size: Int) throws -> Int {
            guard offset >= 0, size <= 8, offset + size <= bytes.count else { throw fail("truncated ELF data at offset \(offset)") }
            var value: UInt64 = 0
            for index in (0..<size).reversed() { value = value << 8 | UInt64(bytes[offset + index]) }
            guard value <= UInt64(Int.max) else { throw fail("an ELF offset is out of range") }
            return Int(value)
        }
        guard bytes.count >= 64, bytes[0..<4] == [0x7f, 0x45, 0x4c, 0x46] else { throw fail("no ELF header") }
        guard bytes[4] == 2, bytes[5] == 1 else { throw fail("only 64-bit little-endian ELF is read") }
        let sectionTable = try integer(0x28, 8)
        let entrySize = try integer(0x3a, 2)
        let count = try integer(0x3c, 2)
        let namesIndex = try integer(0x3e, 2)
        guard entrySize >= 64, namesIndex < count else { throw fail("bad section table") }
        func section(_ index: Int) throws -> (name: Int, offset: Int, size: Int) {
            let base = sectionTable + index * entrySize
            let offset = try integer(base + 0x18, 8), size = try integer(base + 0x20, 8)
            guard offset <= bytes.count, size <= bytes.count - offset else { throw fail("section \(index) lies outside the file") }
            return (try integer(base, 4), offset, size)
        }
        let names = try section(namesIndex)
        func name(at offset: Int) -> String {
            var end = names.offset + offset
            while end < names.offset + names.size, bytes[end] != 0 { end += 1 }
            return String(decoding: bytes[min(names.offset + offset, end)..<end], as: UTF8.self)
        }
        for index in 0..<count {
            let entry = try section(index)
            guard name(at: entry.name) == ".modinfo" else { continue }
            let strings = bytes[entry.offset..<(entry.offset + entry.size)].split(separator: 0)
            let fields = strings.compactMap { raw -> (key: String, value: String)? in
                let text = String(decoding: raw, as: UTF8.self)
                guard let equals = text.firstIndex(of: "=") else { return nil }
                return (String(text[..<equals]), String(text[text.index(after: equals)...]))
            }
            return ModuleInfo(fields: fields)
        }
        throw fail("no .modinfo section")
    }
}
