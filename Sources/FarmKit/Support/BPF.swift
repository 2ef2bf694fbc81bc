import CBPF
import FarmEngine
import Foundation

/// A kernel's BPF Type Format (BTF) through libbpf: the only file that imports `CBPF`.
/// Types are numbered from 1 (`0` is void); `type(_:)` decodes one into a `BTFType`.
public final class BTF: @unchecked Sendable {
    // Read-only after init; libbpf's btf is safe to read from several threads.
    private let handle: OpaquePointer
    /// What errors name: the file, or the package and member the bytes came from.
    public let origin: String

    /// An ELF file with a `.BTF` section, or a raw BTF file (`/sys/kernel/btf/vmlinux`, pahole's
    /// `--btf_encode_detached` output).
    public init(path: String) throws {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw FarmError.badInput("cannot read BTF from \(path): the file does not exist or is not readable")
        }
        origin = path
        handle = try BTF.parse(origin: path) { btf__parse(path, nil) }
    }

    /// Raw BTF bytes, e.g. the contents of a vmlinux's `.BTF` section.
    public init(data: Data, origin: String) throws {
        self.origin = origin
        guard data.count <= Int(UInt32.max) else {
            throw FarmError("\(origin): \(data.count) bytes of BTF is more than BTF can describe (4 GiB)")
        }
        handle = try BTF.parse(origin: origin) {
            data.withUnsafeBytes { btf__new($0.baseAddress, UInt32($0.count)) }
        }
    }

    deinit { btf__free(handle) }

    private static let messages: Void = farm_libbpf_capture_messages()

    private static func parse(origin: String, _ call: () -> OpaquePointer?) throws -> OpaquePointer {
        _ = messages
        farm_libbpf_clear_message()
        errno = 0
        if let btf = call() { return btf }
        let code = errno
        var detail = String(cString: farm_libbpf_last_message()).trimmingCharacters(in: .whitespacesAndNewlines)
        if detail.hasPrefix("libbpf: ") { detail.removeFirst("libbpf: ".count) }
        if detail.isEmpty { detail = String(cString: strerror(code)) }
        throw FarmError("\(origin) is not valid BTF (libbpf: \(detail)); give an ELF with a .BTF section or a raw BTF file such as /sys/kernel/btf/vmlinux or pahole's --btf_encode_detached output")
    }

    /// Type ids run from 1 to `count - 1`; 0 is void.
    public var count: Int { Int(btf__type_cnt(handle)) }

    /// The size of a pointer in the BTF's target (libbpf guesses it from `long`'s size; 8 if absent).
    public var pointerSize: Int {
        let size = btf__pointer_size(handle)
        return size == 0 ? 8 : Int(size)
    }

    public var isLittleEndian: Bool { btf__endianness(handle) == BTF_LITTLE_ENDIAN }

    /// The struct named `name` (its definition, not a forward declaration), if the BTF has one.
    public func structure(named name: String) -> BTFComposite? {
        let id = btf__find_by_name_kind(handle, name, UInt32(BTF_KIND_STRUCT))
        guard id > 0, let composite = try? type(UInt32(id)).composite, composite.size > 0 else { return nil }
        return composite
    }

    /// The type numbered `id`, its references checked to name types that exist.
    public func type(_ id: UInt32) throws -> BTFType {
        if id == 0 { return .void }
        guard id < btf__type_cnt(handle), let raw = btf__type_by_id(handle, id) else {
            throw FarmError("\(origin): BTF type \(id) does not exist (the BTF's last type is \(count - 1))")
        }
        let name = try self.name(at: raw.pointee.name_off, of: id)
        let vlen = Int(btf_vlen(raw))
        if btf_is_int(raw) {
            let encoding = Int32(btf_int_encoding(raw))
            return .integer(BTFInteger(name: name, size: Int(farm_btf_type_size(raw)),
                                       signed: encoding & Int32(BTF_INT_SIGNED) != 0,
                                       char: encoding & Int32(BTF_INT_CHAR) != 0,
                                       bool: encoding & Int32(BTF_INT_BOOL) != 0,
                                       bitOffset: Int(btf_int_offset(raw)), bits: Int(btf_int_bits(raw))))
        } else if btf_is_float(raw) {
            return .float(name: name, size: Int(farm_btf_type_size(raw)))
        } else if btf_is_ptr(raw) {
            return .pointer(to: try reference(farm_btf_type_ref(raw), from: id))
        } else if btf_is_array(raw) {
            let array = btf_array(raw)!.pointee
            return .array(element: try reference(array.type, from: id), count: Int(array.nelems))
        } else if btf_is_composite(raw) {
            let members = try (0..<vlen).map { index in
                let member = btf_members(raw)! + index
                return BTFMember(name: try self.name(at: member.pointee.name_off, of: id),
                                 type: try reference(member.pointee.type, from: id),
                                 bitOffset: Int(btf_member_bit_offset(raw, UInt32(index))),
                                 bitfieldSize: Int(btf_member_bitfield_size(raw, UInt32(index))))
            }
            let composite = BTFComposite(name: name, size: Int(farm_btf_type_size(raw)), members: members)
            return btf_is_struct(raw) ? .structure(composite) : .union(composite)
        } else if btf_is_enum(raw) {
            // kflag says the values are signed (pahole 1.24 and later); without it they are unsigned.
            let signed = btf_kflag(raw)
            let values = try (0..<vlen).map { index in
                let value = (btf_enum(raw)! + index).pointee
                return BTFEnumerator(name: try self.name(at: value.name_off, of: id),
                                     value: signed ? Int64(value.val) : Int64(UInt32(bitPattern: value.val)))
            }
            return .enumeration(BTFEnum(name: name, size: Int(farm_btf_type_size(raw)), signed: signed, values: values))
        } else if btf_is_enum64(raw) {
            let signed = btf_kflag(raw)
            let values = try (0..<vlen).map { index in
                let value = btf_enum64(raw)! + index
                let bits = btf_enum64_value(value)
                // An unsigned value above Int64.max keeps its bits; ISF constants are signed 64-bit.
                return BTFEnumerator(name: try self.name(at: value.pointee.name_off, of: id), value: Int64(bitPattern: bits))
            }
            return .enumeration(BTFEnum(name: name, size: Int(farm_btf_type_size(raw)), signed: signed, values: values))
        } else if btf_is_fwd(raw) {
            return .forward(name: name, union: btf_kflag(raw))
        } else if btf_is_typedef(raw) {
            return .typedef(name: name, type: try reference(farm_btf_type_ref(raw), from: id))
        } else if btf_is_mod(raw) {
            return .qualifier(of: try reference(farm_btf_type_ref(raw), from: id))
        } else if btf_is_func(raw) {
            return .function(name: name, prototype: try reference(farm_btf_type_ref(raw), from: id))
        } else if btf_is_func_proto(raw) {
            let parameters = try (0..<vlen).map { try reference((btf_params(raw)! + $0).pointee.type, from: id) }
            return .functionPrototype(returns: try reference(farm_btf_type_ref(raw), from: id), parameters: parameters)
        } else if btf_is_var(raw) {
            return .variable(name: name, type: try reference(farm_btf_type_ref(raw), from: id),
                             global: btf_var(raw)!.pointee.linkage != 0)
        } else if btf_is_datasec(raw) {
            let variables = try (0..<vlen).map { index in
                let info = (btf_var_secinfos(raw)! + index).pointee
                return BTFSectionVariable(variable: try reference(info.type, from: id), offset: Int(info.offset), size: Int(info.size))
            }
            return .dataSection(name: name, size: Int(farm_btf_type_size(raw)), variables: variables)
        } else if btf_is_decl_tag(raw) {
            return .declarationTag(name: name, of: try reference(farm_btf_type_ref(raw), from: id))
        } else {
            throw FarmError("\(origin): BTF type \(id) has kind \(btf_kind(raw)), which farm does not know; a newer libbpf-dev may")
        }
    }

    private func reference(_ target: UInt32, from id: UInt32) throws -> UInt32 {
        guard target < btf__type_cnt(handle) else {
            throw FarmError("\(origin): BTF type \(id) refers to type \(target), which does not exist (the BTF's last type is \(count - 1)); the BTF is corrupt")
        }
        return target
    }

    private func name(at offset: UInt32, of id: UInt32) throws -> String {
        guard let pointer = btf__name_by_offset(handle, offset) else {
            throw FarmError("\(origin): BTF type \(id) names string offset \(offset), outside the string section; the BTF is corrupt")
        }
        return String(cString: pointer)
    }
}

/// One BTF type, its references as type ids of the same `BTF`.
public enum BTFType: Sendable {
    case void
    case integer(BTFInteger)
    case float(name: String, size: Int)
    case pointer(to: UInt32)
    case array(element: UInt32, count: Int)
    case structure(BTFComposite)
    case union(BTFComposite)
    case enumeration(BTFEnum)
    /// A struct or union declared but not defined here.
    case forward(name: String, union: Bool)
    case typedef(name: String, type: UInt32)
    /// const, volatile, restrict or a type tag: the same layout as the type it qualifies.
    case qualifier(of: UInt32)
    case function(name: String, prototype: UInt32)
    case functionPrototype(returns: UInt32, parameters: [UInt32])
    case variable(name: String, type: UInt32, global: Bool)
    case dataSection(name: String, size: Int, variables: [BTFSectionVariable])
    case declarationTag(name: String, of: UInt32)
}

extension BTFType {
    /// A struct's or union's name, size and members.
    public var composite: BTFComposite? {
        switch self {
        case .structure(let composite), .union(let composite): composite
        default: nil
        }
    }
}

public struct BTFInteger: Sendable {
    public let name: String
    public let size: Int
    public let signed: Bool
    public let char: Bool
    public let bool: Bool
    /// Old BTF (before member bitfield sizes) describes a bitfield as an integer of fewer bits at an offset.
    public let bitOffset: Int
    public let bits: Int
}

public struct BTFComposite: Sendable {
    /// Empty for an anonymous struct or union.
    public let name: String
    public let size: Int
    public let members: [BTFMember]
}

public struct BTFMember: Sendable {
    /// Empty for an anonymous struct or union member.
    public let name: String
    public let type: UInt32
    /// From the start of the struct.
    public let bitOffset: Int
    /// 0 unless the member is a bitfield described with the struct's kind flag.
    public let bitfieldSize: Int
}

public struct BTFEnum: Sendable {
    public let name: String
    public let size: Int
    public let signed: Bool
    public let values: [BTFEnumerator]
}

public struct BTFEnumerator: Sendable {
    public let name: String
    public let value: Int64
}

public struct BTFSectionVariable: Sendable {
    /// A `.variable` type id.
    public let variable: UInt32
    public let offset: Int
    public let size: Int
}
