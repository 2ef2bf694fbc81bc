import FarmEngine
import Foundation

/// A Volatility 3 symbol table (Intermediate Symbol Format 6.2.0, volatility3's
/// `schemas/schema-6.2.0.json`): the layouts and addresses of one kernel build.
public struct ISFDocument: Sendable {
    public var producerVersion = FarmVersion.current
    /// `metadata.linux.types` and `.symbols`: where the types and addresses came from (file or package names).
    public var typesSource: String
    public var symbolsSource: String
    public var baseTypes: [String: ISFBaseType] = [:]
    public var userTypes: [String: ISFUserType] = [:]
    public var enums: [String: ISFEnum] = [:]
    public var symbols: [String: ISFSymbol] = [:]

    public init(typesSource: String, symbolsSource: String) {
        self.typesSource = typesSource
        self.symbolsSource = symbolsSource
    }
}

/// How a field, a symbol or an array element is typed (schema's `type_descriptor`).
public indirect enum ISFType: Hashable, Sendable {
    case base(String)
    case pointer(ISFType)
    case array(count: Int, of: ISFType)
    case composite(ISFUserType.Kind, String)
    case enumeration(String)
    case function
    /// Bits `position..<position+length` of the base or enum type read at the field's offset.
    case bitfield(position: Int, length: Int, of: ISFType)

    public static let void = ISFType.base("void")
}

extension ISFType: CustomStringConvertible {
    /// C-like, for messages: `struct node`, `pointer to int`, `array of 4 char`.
    public var description: String {
        switch self {
        case .base(let name): name
        case .pointer(let target): "pointer to \(target)"
        case .array(let count, let element): "array of \(count) \(element)"
        case .composite(let kind, let name): "\(kind.rawValue) \(name)"
        case .enumeration(let name): "enum \(name)"
        case .function: "function"
        case .bitfield(let position, let length, let base): "bits \(position)..<\(position + length) of \(base)"
        }
    }
}

public struct ISFBaseType: Hashable, Sendable {
    public enum Kind: String, Sendable { case void, int, float, char, bool }
    public var size: Int
    public var signed: Bool
    public var kind: Kind
    public var littleEndian: Bool

    public init(size: Int, signed: Bool, kind: Kind, littleEndian: Bool) {
        self.size = size
        self.signed = signed
        self.kind = kind
        self.littleEndian = littleEndian
    }
}

public struct ISFUserType: Hashable, Sendable {
    public enum Kind: String, Sendable { case `struct`, union }
    public var kind: Kind
    public var size: Int
    public var fields: [String: ISFField]

    public init(kind: Kind, size: Int, fields: [String: ISFField]) {
        self.kind = kind
        self.size = size
        self.fields = fields
    }
}

public struct ISFField: Hashable, Sendable {
    public var type: ISFType
    /// Bytes from the start of the struct; a bitfield's is the byte its `position` counts from.
    public var offset: Int
    /// An unnamed struct or union member (`unnamed_field_N`) whose fields Volatility reaches through the parent.
    public var anonymous: Bool

    public init(type: ISFType, offset: Int, anonymous: Bool) {
        self.type = type
        self.offset = offset
        self.anonymous = anonymous
    }
}

public struct ISFEnum: Hashable, Sendable {
    public var size: Int
    /// A `base_types` name of the same size and signedness.
    public var base: String
    public var constants: [String: Int64]

    public init(size: Int, base: String, constants: [String: Int64]) {
        self.size = size
        self.base = base
        self.constants = constants
    }
}

public struct ISFSymbol: Hashable, Sendable {
    public var address: UInt64
    public var type: ISFType?
    /// Bytes Volatility matches in the image (`linux_banner`).
    public var constantData: [UInt8]?

    public init(address: UInt64, type: ISFType?, constantData: [UInt8]?) {
        self.address = address
        self.type = type
        self.constantData = constantData
    }
}

// MARK: Checks

extension ISFDocument {
    /// Type references that name nothing in the document, or are not allowed where they are
    /// (a bitfield of a struct, an enum whose base type is missing), each with where it is.
    public func problems() -> [String] {
        var found: [String] = []
        for required in ["void", "pointer"] where baseTypes[required] == nil {
            found.append("base_types lacks \(required)")
        }
        for (name, type) in userTypes {
            for (field, value) in type.fields {
                check(value.type, at: "user_types.\(name).\(field)", into: &found)
            }
        }
        for (name, value) in enums where baseTypes[value.base] == nil {
            found.append("enums.\(name): base type \(value.base) is not in base_types")
        }
        for (name, symbol) in symbols {
            if let type = symbol.type { check(type, at: "symbols.\(name)", into: &found) }
        }
        return found.sorted()
    }

    private func check(_ type: ISFType, at place: String, into found: inout [String]) {
        switch type {
        case .base(let name):
            if baseTypes[name] == nil { found.append("\(place): base type \(name) is not in base_types") }
        case .pointer(let target), .array(_, let target):
            check(target, at: place, into: &found)
        case .composite(let kind, let name):
            if userTypes[name]?.kind != kind { found.append("\(place): \(kind.rawValue) \(name) is not in user_types") }
        case .enumeration(let name):
            if enums[name] == nil { found.append("\(place): enum \(name) is not in enums") }
        case .function:
            break
        case .bitfield(_, let length, let base):
            switch base {
            case .base, .enumeration: check(base, at: place, into: &found)
            default: found.append("\(place): a bitfield of \(base), not of a base or enum type")
            }
            if length <= 0 { found.append("\(place): a bitfield of \(length) bits") }
        }
    }
}

// MARK: JSON

extension ISFDocument {
    /// Compact JSON, keys sorted, so the same document is always the same bytes.
    public func json() -> Data {
        var out = JSONOutput()
        out.object {
            $0.member("base_types") { out in
                out.object(baseTypes) { out, base in
                    out.object {
                        $0.member("endian") { $0.string(base.littleEndian ? "little" : "big") }
                        $0.member("kind") { $0.string(base.kind.rawValue) }
                        $0.member("signed") { $0.bool(base.signed) }
                        $0.member("size") { $0.integer(base.size) }
                    }
                }
            }
            $0.member("enums") { out in
                out.object(enums) { out, value in
                    out.object {
                        $0.member("base") { $0.string(value.base) }
                        $0.member("constants") { out in out.object(value.constants) { $0.integer($1) } }
                        $0.member("size") { $0.integer(value.size) }
                    }
                }
            }
            $0.member("metadata") { out in
                out.object {
                    $0.member("format") { $0.string("6.2.0") }
                    $0.member("linux") { out in
                        out.object {
                            $0.member("symbols") { $0.array([symbolsSource]) { out, name in out.object { $0.member("name") { $0.string(name) } } } }
                            $0.member("types") { $0.array([typesSource]) { out, name in out.object { $0.member("name") { $0.string(name) } } } }
                        }
                    }
                    $0.member("producer") { out in
                        out.object {
                            $0.member("name") { $0.string("farm") }
                            $0.member("version") { $0.string(producerVersion) }
                        }
                    }
                }
            }
            $0.member("symbols") { out in
                out.object(symbols) { out, symbol in
                    out.object {
                        $0.member("address") { $0.unsigned(symbol.address) }
                        if let data = symbol.constantData {
                            $0.member("constant_data") { $0.string(Data(data).base64EncodedString()) }
                        }
                        if let type = symbol.type { $0.member("type") { $0.type(type) } }
                    }
                }
            }
            $0.member("user_types") { out in
                out.object(userTypes) { out, type in
                    out.object {
                        $0.member("fields") { out in
                            out.object(type.fields) { out, field in
                                out.object {
                                    if field.anonymous { $0.member("anonymous") { $0.bool(true) } }
                                    $0.member("offset") { $0.integer(field.offset) }
                                    $0.member("type") { $0.type(field.type) }
                                }
                            }
                        }
                        $0.member("kind") { $0.string(type.kind.rawValue) }
                        $0.member("size") { $0.integer(type.size) }
                    }
                }
            }
        }
        out.bytes.append(UInt8(ascii: "\n"))
        return Data(out.bytes)
    }
}

/// Appends JSON to a byte buffer; members are written in the order given, so callers give them sorted.
private struct JSONOutput {
    var bytes: [UInt8] = []
    private var needsComma = false

    init() { bytes.reserveCapacity(1 << 24) }

    mutating func object(_ body: (inout JSONOutput) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
        body(&self)
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    /// An object of `dictionary`'s entries in key order.
    mutating func object<Value>(_ dictionary: [String: Value], _ value: (inout JSONOutput, Value) -> Void) {
        object { out in
            for key in dictionary.keys.sorted() {
                out.member(key) { value(&$0, dictionary[key]!) }
            }
        }
    }

    mutating func array<Element>(_ elements: [Element], _ element: (inout JSONOutput, Element) -> Void) {
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        for item in elements {
            comma()
            element(&self, item)
            needsComma = true
        }
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    mutating func member(_ key: String, _ value: (inout JSONOutput) -> Void) {
        comma()
        string(key)
        bytes.append(UInt8(ascii: ":"))
        value(&self)
        needsComma = true
    }

    mutating func type(_ type: ISFType) {
        switch type {
        case .base(let name):
            object {
                $0.member("kind") { $0.string("base") }
                $0.member("name") { $0.string(name) }
            }
        case .pointer(let target):
            object {
                $0.member("kind") { $0.string("pointer") }
                $0.member("subtype") { $0.type(target) }
            }
        case .array(let count, let element):
            object {
                $0.member("count") { $0.integer(count) }
                $0.member("kind") { $0.string("array") }
                $0.member("subtype") { $0.type(element) }
            }
        case .composite(let kind, let name):
            object {
                $0.member("kind") { $0.string(kind.rawValue) }
                $0.member("name") { $0.string(name) }
            }
        case .enumeration(let name):
            object {
                $0.member("kind") { $0.string("enum") }
                $0.member("name") { $0.string(name) }
            }
        case .function:
            object { $0.member("kind") { $0.string("function") } }
        case .bitfield(let position, let length, let base):
            object {
                $0.member("bit_length") { $0.integer(length) }
                $0.member("bit_position") { $0.integer(position) }
                $0.member("kind") { $0.string("bitfield") }
                $0.member("type") { $0.type(base) }
            }
        }
    }

    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        guard text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
            bytes.append(contentsOf: text.utf8)
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0..<0x20: bytes.append(contentsOf: Array(String(format: "\\u%04x", byte).utf8))
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func integer<T: BinaryInteger>(_ value: T) { bytes.append(contentsOf: Array(String(value).utf8)) }
    mutating func unsigned(_ value: UInt64) { integer(value) }
    mutating func bool(_ value: Bool) { bytes.append(contentsOf: Array((value ? "true" : "false").utf8)) }

    private mutating func comma() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }
}
