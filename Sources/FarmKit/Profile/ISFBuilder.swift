import FarmEngine
import Foundation

/// Builds a kernel's Volatility 3 symbol table from its BTF and its symbol addresses, shaped as
/// dwarf2json shapes one from DWARF, since volatility3's plugins were written against that:
/// anonymous members are `unnamed_field_N` (N in hex) marked `anonymous`, anonymous types are
/// `unnamed_<hash of their definition>`, a typedef of a struct or union is also a user type under
/// the typedef's name, bitfields are the byte offset plus a bit position below 8, base types
/// include `void` and `pointer`, and a symbol without a known type is typed `void`.
public enum ISFBuilder {
    /// The Volatility 3 ISF (JSON, deterministic bytes) for one kernel, with self-checks that throw:
    /// `_text` present and equal to `textBase`; banner starts "Linux version <release> "; every type
    /// reference resolves; the document has what schema 6.2.0 requires.
    /// `arrayCounts`: the lengths of arrays whose length is a kernel macro, read from the image
    /// (`KernelSymbols.arrayCounts`); a symbol of such a type without its count is left out.
    public static func build(btf: BTF, symbols: [String: UInt64], banner: [UInt8], release: String, textBase: UInt64,
                             typesSource: String = "BTF", symbolsSource: String = "kallsyms", arrayCounts: [String: Int] = [:]) throws -> Data {
        try document(btf: btf, symbols: symbols, banner: banner, release: release, textBase: textBase,
                     typesSource: typesSource, symbolsSource: symbolsSource, arrayCounts: arrayCounts).json()
    }

    /// The document `build` serializes, checked the same way.
    public static func document(btf: BTF, symbols: [String: UInt64], banner: [UInt8], release: String, textBase: UInt64,
                                typesSource: String = "BTF", symbolsSource: String = "kallsyms", arrayCounts: [String: Int] = [:]) throws -> ISFDocument {
        try checkKernel(symbols: symbols, banner: banner, release: release, textBase: textBase, origin: btf.origin)
        var converter = try BTFConverter(btf: btf)
        var document = ISFDocument(typesSource: typesSource, symbolsSource: symbolsSource)
        try converter.fill(&document)
        try converter.addSymbols(symbols, banner: banner, arrayCounts: arrayCounts, to: &document)
        converter.addOpaqueTypes(to: &document)
        let problems = document.problems()
        guard problems.isEmpty else {
            let shown = problems.prefix(5).joined(separator: "; ")
            throw FarmError("the symbol table built from \(btf.origin) is inconsistent (\(problems.count) problem(s): \(shown)); this is a bug in farm's BTF conversion, please report it with the BTF file")
        }
        return document
    }

    private static func checkKernel(symbols: [String: UInt64], banner: [UInt8], release: String, textBase: UInt64, origin: String) throws {
        guard let text = symbols["_text"] else {
            throw FarmError("the symbols given for \(release) have no _text, so Volatility could not place the kernel; give the kernel's own System.map or kallsyms")
        }
        guard text == textBase else {
            throw FarmError("the symbols given for \(release) put _text at 0x\(String(text, radix: 16)), not at the kernel's text base 0x\(String(textBase, radix: 16)); they belong to another build of the kernel")
        }
        guard symbols["linux_banner"] != nil else {
            throw FarmError("the symbols given for \(release) have no linux_banner, the symbol Volatility matches images by; give the kernel's own System.map or kallsyms")
        }
        let expected = Array("Linux version \(release) ".utf8)
        guard banner.starts(with: expected) else {
            let shown = banner.prefix(80).map { byte in
                switch byte {
                case UInt8(ascii: "\n"): "\\n"
                case 0: "\\0"
                case 0x20..<0x7f: String(UnicodeScalar(byte))
                default: "\\x" + String(byte, radix: 16)
                }
            }.joined()
            throw FarmError("the banner \"\(shown)\" is not kernel \(release)'s (it must start \"Linux version \(release) \"); the banner, the symbols and the BTF (\(origin)) must come from the same kernel")
        }
        guard banner.last == 0, banner.dropLast().last == UInt8(ascii: "\n") else {
            throw FarmError("kernel \(release)'s banner must end with \"\\n\\0\" as linux_banner does in memory: Volatility matches images by those exact bytes")
        }
    }
}

/// One pass over a BTF: names every struct, union and enum, then converts them.
private struct BTFConverter {
    let btf: BTF
    let types: [BTFType]
    /// The user type or enum name of each struct, union or enum id.
    private var names: [String?]
    /// Typedef ids that stand for the struct or union they name (their name is a user type).
    private var aliasTypedefs: Set<UInt32> = []
    /// Memoized descriptors by type id.
    private var descriptors: [ISFType?]
    /// Forward declarations never defined here: user types of size 0 so references resolve.
    private var opaque: [String: ISFUserType.Kind] = [:]
    private var definedComposites: [String: ISFUserType.Kind] = [:]
    private var typedefByName: [String: UInt32] = [:]

    init(btf: BTF) throws {
        self.btf = btf
        let count = btf.count
        var types: [BTFType] = []
        types.reserveCapacity(count)
        for id in 0..<count { types.append(try btf.type(UInt32(id))) }
        self.types = types
        names = Array(repeating: nil, count: count)
        descriptors = Array(repeating: nil, count: count)
        try assignNames()
    }

    private mutating func assignNames() throws {
        var definitions: [UInt32: String] = [:]
        var sameName: [String: [UInt32]] = [:]
        for id in types.indices {
            switch types[id] {
            case .structure(let composite), .union(let composite):
                if composite.name.isEmpty {
                    names[id] = "unnamed_" + SHA256.hash(try definition(UInt32(id), &definitions, depth: 0)).hex.prefix(16)
                } else {
                    names[id] = composite.name
                    sameName[composite.name, default: []].append(UInt32(id))
                }
            case .enumeration(let value):
                names[id] = value.name.isEmpty
                    ? "unnamed_" + SHA256.hash(try definition(UInt32(id), &definitions, depth: 0)).hex.prefix(16)
                    : value.name
            case .typedef(let name, _):
                if typedefByName[name] == nil { typedefByName[name] = UInt32(id) }
            default:
                break
            }
        }
        try separate(sameName, &definitions)
        // A typedef's name becomes a user type unless a struct or union already has that name
        // (then references go to the struct's own name, which has the layout they mean).
        var aliasTargets: [String: UInt32] = [:]
        for id in types.indices {
            guard case .typedef(let name, let target) = types[id] else { continue }
            switch types[Int(target)] {
            case .structure, .union:
                if let owner = definedComposites[name] {
                    if names[Int(target)] == name, owner == kind(of: target) { aliasTypedefs.insert(UInt32(id)) }
                } else if let existing = aliasTargets[name] {
                    if existing == target { aliasTypedefs.insert(UInt32(id)) }
                } else {
                    aliasTargets[name] = target
                    aliasTypedefs.insert(UInt32(id))
                }
            default:
                break
            }
        }
    }

    /// Different structs or unions of one name (5.10 has a driver's `union irte` beside the
    /// IOMMU's `struct irte`): the one most fields refer to keeps the name, which plugins look
    /// up; another layout becomes `<name>_<hash of its layout>`, so what refers to it stays true.
    private mutating func separate(_ sameName: [String: [UInt32]], _ definitions: inout [UInt32: String]) throws {
        var references: [UInt32: Int] = [:]
        if sameName.values.contains(where: { $0.count > 1 }) {
            for type in types {
                for member in type.composite?.members ?? [] {
                    if let target = composite(behind: member.type) { references[target, default: 0] += 1 }
                }
            }
        }
        for (name, ids) in sameName {
            // Most referred to; of equals, the first.
            let owner = ids.max { (references[$0, default: 0], $1) < (references[$1, default: 0], $0) }!
            definedComposites[name] = kind(of: owner)
            guard ids.count > 1 else { continue }
            let ownerLayout = try layout(owner, &definitions)
            for id in ids where id != owner {
                let own = try layout(id, &definitions)
                if own != ownerLayout { names[Int(id)] = name + "_" + SHA256.hash(own).hex.prefix(16) }
            }
        }
    }

    /// The struct or union a member's type leads to through pointers, arrays, typedefs and qualifiers.
    private func composite(behind id: UInt32, depth: Int = 0) -> UInt32? {
        guard depth < 64 else { return nil }
        switch types[Int(id)] {
        case .structure, .union: return id
        case .pointer(let target), .array(let target, _), .typedef(_, let target), .qualifier(let target):
            return composite(behind: target, depth: depth + 1)
        default: return nil
        }
    }

    private func kind(of id: UInt32) -> ISFUserType.Kind {
        if case .union = types[Int(id)] { return .union }
        return .struct
    }

    /// A canonical text of a type, the same for the same anonymous layout in every kernel, hashed
    /// into its name. Named types appear by name, so it stays short.
    private func definition(_ id: UInt32, _ memo: inout [UInt32: String], depth: Int) throws -> String {
        if let known = memo[id] { return known }
        guard depth < 64 else { throw cycle(at: id) }
        let text: String
        switch types[Int(id)] {
        case .void: text = "void"
        case .integer(let value): text = value.name + (value.bits == value.size * 8 && value.bitOffset == 0 ? "" : ":\(value.bitOffset):\(value.bits)")
        case .float(let name, _): text = name
        case .pointer(let target): text = "*" + (try definition(target, &memo, depth: depth + 1))
        case .array(let element, let count): text = "[\(count)]" + (try definition(element, &memo, depth: depth + 1))
        case .structure(let composite), .union(let composite):
            text = composite.name.isEmpty ? try layout(id, &memo, depth: depth) : "\(kind(of: id).rawValue) \(composite.name)"
        case .enumeration(let value):
            text = value.name.isEmpty
                ? "enum \(value.size) {" + value.values.map { "\($0.name)=\($0.value)" }.joined(separator: ",") + "}"
                : "enum " + value.name
        case .forward(let name, let union): text = (union ? "union " : "struct ") + name
        case .typedef(let name, _): text = name
        case .qualifier(let target): text = try definition(target, &memo, depth: depth + 1)
        case .functionPrototype(let returns, let parameters):
            text = "fn(" + (try parameters.map { try definition($0, &memo, depth: depth + 1) }).joined(separator: ",") + ")"
                + (try definition(returns, &memo, depth: depth + 1))
        case .function, .variable, .dataSection, .declarationTag:
            throw notAType(id)
        }
        memo[id] = text
        return text
    }

    /// A struct's or union's members spelled out; the types they name appear by name.
    private func layout(_ id: UInt32, _ memo: inout [UInt32: String], depth: Int = 0) throws -> String {
        guard let composite = types[Int(id)].composite else { throw notAType(id) }
        return try layout(of: composite, kind: kind(of: id), &memo, depth: depth)
    }

    private func layout(of composite: BTFComposite, kind: ISFUserType.Kind, _ memo: inout [UInt32: String], depth: Int) throws -> String {
        let members = try composite.members.map {
            "\($0.name) \(try definition($0.type, &memo, depth: depth + 1)) @\($0.bitOffset):\($0.bitfieldSize)"
        }
        return "\(kind.rawValue) \(composite.size) {" + members.joined(separator: "; ") + "}"
    }

    // MARK: Descriptors

    /// How a reference to type `id` reads in the ISF.
    mutating func descriptor(_ id: UInt32, depth: Int = 0) throws -> ISFType {
        if let known = descriptors[Int(id)] { return known }
        guard depth < 64 else { throw cycle(at: id) }
        let result: ISFType
        switch types[Int(id)] {
        case .void: result = .void
        case .integer(let value): result = .base(value.name)
        case .float(let name, _): result = .base(name)
        case .pointer(let target): result = .pointer(try descriptor(target, depth: depth + 1))
        case .array(let element, let count): result = .array(count: count, of: try descriptor(element, depth: depth + 1))
        case .structure, .union: result = .composite(kind(of: id), names[Int(id)]!)
        case .enumeration: result = .enumeration(names[Int(id)]!)
        case .forward(let name, let union):
            if name.isEmpty {
                result = .void
            } else if let defined = definedComposites[name] {
                result = .composite(defined, name)
            } else {
                let kind: ISFUserType.Kind = union ? .union : .struct
                if opaque[name] == nil { opaque[name] = kind }
                result = .composite(opaque[name]!, name)
            }
        case .typedef(let name, let target):
            result = aliasTypedefs.contains(id) ? .composite(kind(of: target), name) : try descriptor(target, depth: depth + 1)
        case .qualifier(let target): result = try descriptor(target, depth: depth + 1)
        case .function, .functionPrototype: result = .function
        case .variable, .dataSection, .declarationTag:
            throw notAType(id)
        }
        descriptors[Int(id)] = result
        return result
    }

    /// The integer or enum a bitfield is carved from, through typedefs and qualifiers.
    private mutating func bitfieldBase(_ id: UInt32, in owner: Int, depth: Int = 0) throws -> ISFType {
        guard depth < 64 else { throw cycle(at: id) }
        switch types[Int(id)] {
        case .integer(let value): return .base(value.name)
        case .enumeration: return try descriptor(id)
        case .typedef(_, let target), .qualifier(let target): return try bitfieldBase(target, in: owner, depth: depth + 1)
        default:
            throw FarmError("\(btf.origin): type \(owner) has a bitfield of type \(id), which is not an integer or enum; the BTF is corrupt")
        }
    }

    /// An integer that is itself a bitfield (BTF before member bitfield sizes), through typedefs and qualifiers.
    private func legacyBitfield(_ id: UInt32, depth: Int = 0) -> BTFInteger? {
        guard depth < 64 else { return nil }
        switch types[Int(id)] {
        case .integer(let value): return value.bits != value.size * 8 || value.bitOffset != 0 ? value : nil
        case .typedef(_, let target), .qualifier(let target): return legacyBitfield(target, depth: depth + 1)
        default: return nil
        }
    }

    // MARK: The document

    mutating func fill(_ document: inout ISFDocument) throws {
        addBaseTypes(to: &document)
        try addUserTypes(to: &document)
        addEnums(to: &document)
    }

    private func addBaseTypes(to document: inout ISFDocument) {
        let littleEndian = btf.isLittleEndian
        document.baseTypes["void"] = ISFBaseType(size: 0, signed: false, kind: .void, littleEndian: littleEndian)
        document.baseTypes["pointer"] = ISFBaseType(size: btf.pointerSize, signed: false, kind: .int, littleEndian: littleEndian)
        for type in types {
            switch type {
            case .integer(let value) where !value.name.isEmpty && document.baseTypes[value.name] == nil:
                // pahole marks no integer as BTF_INT_CHAR: the C names say which are characters.
                let kind: ISFBaseType.Kind = value.bool ? .bool
                    : value.char || ["char", "signed char", "unsigned char"].contains(value.name) ? .char : .int
                document.baseTypes[value.name] = ISFBaseType(size: value.size, signed: value.signed, kind: kind, littleEndian: littleEndian)
            case .float(let name, let size) where !name.isEmpty && document.baseTypes[name] == nil:
                document.baseTypes[name] = ISFBaseType(size: size, signed: true, kind: .float, littleEndian: littleEndian)
            default:
                break
            }
        }
    }

    /// Structs and unions, the first of each name (two different ones may share a name), then
    /// the typedefs that stand for them.
    private mutating func addUserTypes(to document: inout ISFDocument) throws {
        for id in types.indices {
            let composite: BTFComposite
            switch types[id] {
            case .structure(let value), .union(let value): composite = value
            default: continue
            }
            guard document.userTypes[names[id]!] == nil else { continue }
            document.userTypes[names[id]!] = try userType(UInt32(id), composite)
        }
        for id in aliasTypedefs.sorted() {
            guard case .typedef(let name, let target) = types[Int(id)], document.userTypes[name] == nil else { continue }
            document.userTypes[name] = document.userTypes[names[Int(target)]!]
        }
    }

    private func addEnums(to document: inout ISFDocument) {
        // dwarf2json's rule: the first int base type, by name, of the enum's size and signedness.
        let integers = document.baseTypes.filter { $0.value.kind == .int && $0.key != "pointer" }.keys.sorted()
        for id in types.indices {
            guard case .enumeration(let value) = types[id], document.enums[names[id]!] == nil else { continue }
            // Constants are signed 64-bit, so an unsigned 1 << 63 is stored negative: only a
            // signed base reads the same number from memory (dwarf2json's rule: any negative).
            let signed = value.signed || value.values.contains { $0.value < 0 }
            let base = integers.first { document.baseTypes[$0]!.size == value.size && document.baseTypes[$0]!.signed == signed }
                ?? integers.first { document.baseTypes[$0]!.size == value.size }
                ?? "void"
            var constants: [String: Int64] = [:]
            for enumerator in value.values where constants[enumerator.name] == nil { constants[enumerator.name] = enumerator.value }
            document.enums[names[id]!] = ISFEnum(size: value.size, base: base, constants: constants)
        }
    }

    /// Placeholders for the forward declarations that fields and symbols referred to.
    func addOpaqueTypes(to document: inout ISFDocument) {
        for (name, kind) in opaque where document.userTypes[name] == nil {
            document.userTypes[name] = ISFUserType(kind: kind, size: 0, fields: [:])
        }
    }

    private mutating func userType(_ id: UInt32, _ composite: BTFComposite) throws -> ISFUserType {
        var fields: [String: ISFField] = [:]
        var unnamed = 0
        for member in composite.members {
            var name = member.name
            if name.isEmpty {
                name = "unnamed_field_" + String(unnamed, radix: 16)
                unnamed += 1
            }
            guard fields[name] == nil else { continue }
            let field: ISFField
            if member.bitfieldSize > 0 {
                field = ISFField(type: .bitfield(position: member.bitOffset % 8, length: member.bitfieldSize,
                                                 of: try bitfieldBase(member.type, in: Int(id))),
                                 offset: member.bitOffset / 8, anonymous: false)
            } else if let integer = legacyBitfield(member.type) {
                let bit = member.bitOffset + integer.bitOffset
                field = ISFField(type: .bitfield(position: bit % 8, length: integer.bits, of: .base(integer.name)),
                                 offset: bit / 8, anonymous: false)
            } else {
                field = ISFField(type: try descriptor(member.type), offset: member.bitOffset / 8, anonymous: member.name.isEmpty)
            }
            fields[name] = field
        }
        return ISFUserType(kind: kind(of: id), size: composite.size, fields: fields)
    }

    mutating func addSymbols(_ symbols: [String: UInt64], banner: [UInt8], arrayCounts: [String: Int] = [:], to document: inout ISFDocument) throws {
        // Variables BTF describes (per-CPU ones; every global with pahole's global_var feature).
        // A name two variables of different types share (two statics) gets no type from BTF.
        var variableTypes: [String: ISFType?] = [:]
        for type in types {
            guard case .dataSection(_, _, let variables) = type else { continue }
            for entry in variables {
                guard case .variable(let name, let target, _) = types[Int(entry.variable)], symbols[name] != nil else { continue }
                let described = try descriptor(target)
                if let previous = variableTypes[name], previous != described {
                    variableTypes[name] = .some(nil)
                } else {
                    variableTypes[name] = described
                }
            }
        }
        for (name, address) in symbols {
            var type = variableTypes[name] ?? nil
            if type == nil, let candidates = KernelSymbolTypes.table[name] {
                for candidate in candidates {
                    if case let .arrayCountedInImage(element) = candidate {
                        guard let count = arrayCounts[name] else { continue }
                        if let resolved = try resolve(element, in: document) { type = .array(count: count, of: resolved); break }
                    } else if let resolved = try resolve(candidate, in: document) {
                        type = resolved
                        break
                    }
                }
                if type == nil, candidates.contains(where: { if case .arrayCountedInImage = $0 { true } else { false } }) { continue }
            }
            document.symbols[name] = ISFSymbol(address: address, type: type ?? .void, constantData: nil)
        }
        // dwarf2json types it `const char linux_banner[]` from DWARF: the banner's own length here.
        document.symbols["linux_banner"]?.type = .array(count: banner.count, of: document.baseTypes["char"] == nil ? .void : .base("char"))
        document.symbols["linux_banner"]?.constantData = banner
    }

    /// A table entry's type, if this kernel has every type it names.
    private mutating func resolve(_ spec: KernelSymbolTypes.Spec, in document: ISFDocument) throws -> ISFType? {
        switch spec {
        case .structure(let name):
            return document.userTypes[name]?.kind == .struct ? .composite(.struct, name) : nil
        case .base(let name):
            return document.baseTypes[name] != nil ? .base(name) : nil
        case .typedef(let name):
            guard let id = typedefByName[name] else { return nil }
            return try descriptor(id)
        case .pointer(let target):
            return try resolve(target, in: document).map { .pointer($0) }
        case .array(let count, let element):
            return try resolve(element, in: document).map { .array(count: count, of: $0) }
        case .arrayCountedInImage:
            return nil
        case .anonymousStruct(let member):
            let id = types.indices.first { index in
                guard case .structure(let composite) = types[index], composite.name.isEmpty else { return false }
                return composite.members.contains { $0.name == member }
            }
            return id.map { .composite(.struct, names[$0]!) }
        }
    }

    private func cycle(at id: UInt32) -> FarmError {
        FarmError("\(btf.origin): type \(id) refers to itself through a chain of 64 or more types; the BTF is corrupt")
    }

    private func notAType(_ id: UInt32) -> FarmError {
        FarmError("\(btf.origin): type \(id) is a variable, section or tag but is used as the type of something; the BTF is corrupt")
    }
}
