import FarmEngine
import FarmKit
import Foundation
import Testing

/// Symbol tables built from BTF that `pahole` encodes from what `gcc -g` compiled, checked
/// against what the same compiler lays out, against volatility3's own schema, and on the host's kernel.
@Suite("Volatility symbol tables from BTF")
struct ISFTests {
    static let release = "6.1.0-99-amd64"
    static let banner = Array("Linux version \(release) (farm@example.org) (gcc 12) #1 SMP Debian 6.1.99-1\n\0".utf8)
    static let textBase: UInt64 = 0xffff_ffff_8100_0000
    static let symbols: [String: UInt64] = [
        "_text": textBase, "_etext": 0xffff_ffff_8200_0000, "linux_banner": 0xffff_ffff_8240_0100,
        "init_task": 0xffff_ffff_8300_0000, "some_function": 0xffff_ffff_8100_1000, "fixture_percpu": 0x1a2c0,
        "fixture_percpu_opaque": 0x1a2e0,
    ]
    static let tools = ["gcc", "pahole"].allSatisfy(Fixtures.hasTool)

    /// Types with the shapes that need care: bitfields (of ints and enums, wider than 32 bits),
    /// anonymous unions and structs, nested and multi-dimensional arrays, typedef'd structs,
    /// function pointers, qualifiers, an opaque struct, a flexible array, a per-CPU variable.
    static let header = """
        enum color { RED = 1, GREEN = 2, BLUE = -1 };
        typedef struct { int a; long b; } pair_t;
        typedef int (*callback_t)(int, void *);
        struct opaque;
        struct flags {
            unsigned int ready : 1;
            unsigned int mode : 3;
            signed int level : 5;
            unsigned long long wide : 40;
            enum color tint : 4;
            unsigned char tail;
            _Bool done : 1;
        };
        typedef struct flags flags_t;
        struct node {
            struct node *next;
            union {
                long value;
                struct { short lo, hi; };
            };
            struct { int x; int y; };
            int grid[3][4];
            pair_t pairs[2];
            callback_t callback;
            int (*raw_callback)(const char *, ...);
            struct flags flags;
            flags_t more_flags;
            enum color color;
            char name[16];
            const volatile int qualified;
            struct opaque *hidden;
            enum { ANONYMOUS_FIRST = 7, ANONYMOUS_SECOND = 9 } kind;
            enum wide { WIDE_SMALL = 1, WIDE_LARGE = 0x100000000ULL, WIDE_TOP = 0x8000000000000000ULL } span;
            struct { pair_t inner[2][2]; } deep[3];
            char tail[];
        };
        union either { int i; float f; struct node *n; pair_t p; };

        """

    static let source = """
        #include "fixture.h"
        struct node fixture_node;
        union either fixture_either;
        pair_t fixture_pair;
        enum color fixture_color;
        __attribute__((section(".data..percpu"))) struct flags fixture_percpu;
        struct declared_only;
        __attribute__((section(".data..percpu"))) struct declared_only *fixture_percpu_opaque;
        struct taint_flag { char c_true; char c_false; _Bool module; } fixture_taint;

        """

    /// The fixture's raw BTF, as pahole encodes it from gcc's DWARF.
    static func fixtureBTF(in scratch: Scratch) throws -> String {
        try scratch.write("fixture.h", header)
        try scratch.write("fixture.c", source)
        try Fixtures.run("gcc", ["-g", "-O0", "-c", "fixture.c", "-o", "fixture.o"], directory: scratch.path)
        try Fixtures.run("pahole", ["--btf_encode_detached=fixture.btf", "fixture.o"], directory: scratch.path)
        return scratch.file("fixture.btf")
    }

    static func isf(_ btfPath: String) throws -> [String: Any] {
        let data = try ISFBuilder.build(btf: try BTF(path: btfPath), symbols: symbols, banner: banner, release: release, textBase: textBase)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test(.enabled(if: tools, "gcc and pahole are needed to make BTF fixtures (Debian packages gcc, dwarves; scripts/install-deps installs them)"))
    func layoutsAreTheOnesTheCompilerUses() throws {
        let scratch = try Scratch()
        let document = try Self.isf(try Self.fixtureBTF(in: scratch))
        let layout = ISFLayout(document)

        // What the table says, flattened through anonymous members as C reaches them, and the C
        // that prints what the compiler says for the same paths.
        var expected: [String] = []
        var program = "#include <stdio.h>\n#include <string.h>\n#include <stddef.h>\n#include \"fixture.h\"\nint main(void) {\n"
        for (cType, isfName) in [("struct flags", "flags"), ("flags_t", "flags_t"), ("struct node", "node"), ("union either", "either"), ("pair_t", "pair_t")] {
            let type = try #require(layout.userType(isfName), "\(isfName) is missing from user_types")
            expected.append("\(cType) size \(type["size"] as! Int)")
            program += "printf(\"\(cType) size %zu\\n\", sizeof(\(cType)));\n"
            for field in try layout.flatten(isfName) {
                if let bits = field.bits {
                    expected.append("\(cType).\(field.path) bits \(field.offset * 8 + bits.position) \(bits.length)")
                    program += """
                        { \(cType) v; memset(&v, 0, sizeof v); v.\(field.path) = -1;
                          const unsigned char *b = (const unsigned char *)&v; int first = -1, count = 0;
                          for (size_t i = 0; i < sizeof v * 8; i++) if (b[i / 8] >> (i % 8) & 1) { if (first < 0) first = i; count++; }
                          printf("\(cType).\(field.path) bits %d %d\\n", first, count); }

                        """
                } else if field.type["kind"] as? String == "array", field.type["count"] as? Int == 0 {
                    // A flexible array has an offset but no size.
                    expected.append("\(cType).\(field.path) at \(field.offset)")
                    program += "printf(\"\(cType).\(field.path) at %zu\\n\", offsetof(\(cType), \(field.path)));\n"
                } else {
                    expected.append("\(cType).\(field.path) at \(field.offset) size \(try layout.size(of: field.type))")
                    program += "printf(\"\(cType).\(field.path) at %zu size %zu\\n\", offsetof(\(cType), \(field.path)), sizeof(((\(cType) *)0)->\(field.path)));\n"
                }
            }
        }
        let enums = try #require(document["enums"] as? [String: [String: Any]])
        for (_, value) in enums {
            for (name, number) in value["constants"] as! [String: Int] {
                expected.append("\(name) = \(number)")
                program += "printf(\"\(name) = %lld\\n\", (long long)\(name));\n"
            }
        }
        program += "return 0;\n}\n"
        try scratch.write("layout.c", program)
        try Fixtures.run("gcc", ["-w", "-o", "layout", "layout.c"], directory: scratch.path)
        let printed = try Fixtures.run(scratch.file("layout"), [])

        #expect(printed.split(separator: "\n").map(String.init).sorted() == expected.sorted())
        // The shapes volatility3's plugins rely on, beyond what the compiler can say.
        let node = try #require(layout.userType("node")?["fields"] as? [String: [String: Any]])
        #expect(node["unnamed_field_0"]?["anonymous"] as? Bool == true)
        #expect(node["unnamed_field_1"]?["anonymous"] as? Bool == true)
        #expect(node["pairs"]?["type"] as? NSDictionary == ["kind": "array", "count": 2, "subtype": ["kind": "struct", "name": "pair_t"]] as NSDictionary)
        // BTF has one count per array type and pahole multiplies a C array's dimensions into it,
        // so int grid[3][4] reads as 12 ints: the same bytes, indexed flat.
        var grid = try #require(node["grid"]?["type"] as? [String: Any]), elements = 1
        while grid["kind"] as? String == "array" {
            elements *= grid["count"] as! Int
            grid = grid["subtype"] as! [String: Any]
        }
        #expect(elements == 12)
        #expect(grid as NSDictionary == ["kind": "base", "name": "int"] as NSDictionary)
        #expect(node["callback"]?["type"] as? NSDictionary == ["kind": "pointer", "subtype": ["kind": "function"]] as NSDictionary)
        #expect(node["hidden"]?["type"] as? NSDictionary == ["kind": "pointer", "subtype": ["kind": "struct", "name": "opaque"]] as NSDictionary)
        // A typedef of a named struct is a user type of its own name too, and references use it.
        #expect(node["more_flags"]?["type"] as? NSDictionary == ["kind": "struct", "name": "flags_t"] as NSDictionary)
        #expect(node["color"]?["type"] as? NSDictionary == ["kind": "enum", "name": "color"] as NSDictionary)
        let anonymousEnum = try #require((node["kind"]?["type"] as? [String: Any])?["name"] as? String)
        #expect(anonymousEnum.hasPrefix("unnamed_"))
        #expect((document["enums"] as? [String: [String: Any]])?[anonymousEnum]?["constants"] as? NSDictionary == ["ANONYMOUS_FIRST": 7, "ANONYMOUS_SECOND": 9] as NSDictionary)
        let flags = try #require(layout.userType("flags")?["fields"] as? [String: [String: Any]])
        #expect((flags["tint"]?["type"] as? [String: Any])?["type"] as? NSDictionary == ["kind": "enum", "name": "color"] as NSDictionary)
        let baseTypes = try #require(document["base_types"] as? [String: [String: Any]])
        #expect(baseTypes["pointer"] as? NSDictionary == ["kind": "int", "size": 8, "signed": false, "endian": "little"] as NSDictionary)
        #expect(baseTypes["void"]?["kind"] as? String == "void")
        #expect(baseTypes["char"]?["kind"] as? String == "char")
        #expect(baseTypes["_Bool"]?["kind"] as? String == "bool")
        #expect((enums["color"]?["base"] as? String).flatMap { baseTypes[$0]?["signed"] as? Bool } == true)
        // ISF constants are signed 64-bit, so 1 << 63 is stored negative: the base that reads
        // the same number from memory is signed (dwarf2json's rule too).
        #expect((enums["wide"]?["constants"] as? [String: Int])?["WIDE_TOP"] == Int.min)
        #expect((enums["wide"]?["base"] as? String).flatMap { baseTypes[$0] as? NSDictionary } == ["kind": "int", "size": 8, "signed": true, "endian": "little"] as NSDictionary)
    }

    @Test(.enabled(if: tools, "gcc and pahole are needed to make BTF fixtures (Debian packages gcc, dwarves; scripts/install-deps installs them)"))
    func symbolsCarryAddressesTypesAndTheBanner() throws {
        let scratch = try Scratch()
        let document = try Self.isf(try Self.fixtureBTF(in: scratch))
        let symbols = try #require(document["symbols"] as? [String: [String: Any]])
        #expect(Set(symbols.keys) == Set(Self.symbols.keys))
        for (name, address) in Self.symbols {
            #expect((symbols[name]?["address"] as? NSNumber)?.uint64Value == address, "\(name)")
        }
        #expect(symbols["linux_banner"]?["constant_data"] as? String == Data(Self.banner).base64EncodedString())
        // The per-CPU variable's type comes from BTF's .data..percpu section.
        #expect(symbols["fixture_percpu"]?["type"] as? NSDictionary == ["kind": "struct", "name": "flags"] as NSDictionary)
        // A struct only declared, seen only through a symbol, still resolves (to a placeholder).
        #expect(symbols["fixture_percpu_opaque"]?["type"] as? NSDictionary == ["kind": "pointer", "subtype": ["kind": "struct", "name": "declared_only"]] as NSDictionary)
        let placeholder = (document["user_types"] as? [String: [String: Any]])?["declared_only"]
        #expect(placeholder?["size"] as? Int == 0)
        // A symbol neither BTF nor the table knows is void, as dwarf2json types System.map symbols.
        #expect(symbols["some_function"]?["type"] as? NSDictionary == ["kind": "base", "name": "void"] as NSDictionary)
        #expect(symbols["_text"]?["type"] as? NSDictionary == ["kind": "array", "count": 0, "subtype": ["kind": "base", "name": "char"]] as NSDictionary)
        let metadata = try #require(document["metadata"] as? [String: Any])
        #expect(metadata["format"] as? String == "6.2.0")
        #expect((metadata["producer"] as? [String: Any])?["name"] as? String == "farm")
        #expect(metadata["linux"] is [String: Any])
    }

    /// `taint_flags` is an array of a macro's length: typed with the count read from the image,
    /// and left out without one, so volatility3 uses its own table instead of a wrong length.
    @Test(.enabled(if: tools, "gcc and pahole are needed to make BTF fixtures (Debian packages gcc, dwarves; scripts/install-deps installs them)"))
    func anArrayOfAMacrosLengthTakesTheCountReadFromTheImageOrIsLeftOut() throws {
        let scratch = try Scratch()
        let btf = try BTF(path: try Self.fixtureBTF(in: scratch))
        var symbols = Self.symbols
        symbols["taint_flags"] = 0xffff_ffff_8200_fd20
        func taintFlags(_ counts: [String: Int]) throws -> NSDictionary? {
            let data = try ISFBuilder.build(btf: btf, symbols: symbols, banner: Self.banner, release: Self.release, textBase: Self.textBase, arrayCounts: counts)
            let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            return (document["symbols"] as? [String: [String: Any]])?["taint_flags"] as? NSDictionary
        }
        #expect(try taintFlags(["taint_flags": 19])?["type"] as? NSDictionary
                == ["kind": "array", "count": 19, "subtype": ["kind": "struct", "name": "taint_flag"]] as NSDictionary)
        #expect(try taintFlags([:]) == nil)
    }

    @Test(.enabled(if: tools, "gcc and pahole are needed to make BTF fixtures (Debian packages gcc, dwarves; scripts/install-deps installs them)"))
    func theSameBTFGivesTheSameBytes() throws {
        let scratch = try Scratch()
        let path = try Self.fixtureBTF(in: scratch)
        let build = { try ISFBuilder.build(btf: try BTF(path: path), symbols: Self.symbols, banner: Self.banner, release: Self.release, textBase: Self.textBase) }
        let first = try build()
        #expect(try build() == first)
        // Raw bytes (a vmlinux's .BTF section) read as the file does.
        let fromData = try ISFBuilder.build(btf: try BTF(data: try Data(contentsOf: URL(fileURLWithPath: path)), origin: "fixture.btf"),
                                            symbols: Self.symbols, banner: Self.banner, release: Self.release, textBase: Self.textBase)
        #expect(fromData == first)
        // An ELF file with a .BTF section (a vmlinux) reads as the raw file does.
        try Fixtures.run("objcopy", ["--add-section", ".BTF=fixture.btf", "fixture.o", "with-btf.o"], directory: scratch.path)
        let fromELF = try ISFBuilder.build(btf: try BTF(path: scratch.file("with-btf.o")), symbols: Self.symbols,
                                           banner: Self.banner, release: Self.release, textBase: Self.textBase)
        #expect(fromELF == first)
    }

    @Test(.enabled(if: tools, "gcc and pahole are needed to make BTF fixtures (Debian packages gcc, dwarves; scripts/install-deps installs them)"))
    func typesOfOneNameFromTwoFilesKeepTheirOwnLayouts() throws {
        // As in 5.10, where a driver's union irte sits beside the IOMMU's struct irte.
        let scratch = try Scratch()
        try scratch.write("a.c", "union clash { int i; char c; };\nstruct a_user { union clash *p; } a_var;\n")
        try scratch.write("b.c", """
            struct clash { long x, y; };
            struct b_user { struct clash c; } b_var;
            struct b_other { struct clash *c; } b_other_var;

            """)
        for file in ["a", "b"] { try Fixtures.run("gcc", ["-g", "-c", "\(file).c", "-o", "\(file).o"], directory: scratch.path) }
        try Fixtures.run("ld", ["-r", "a.o", "b.o", "-o", "ab.o"], directory: scratch.path)
        try Fixtures.run("pahole", ["--btf_encode_detached=ab.btf", "ab.o"], directory: scratch.path)
        let data = try ISFBuilder.build(btf: try BTF(path: scratch.file("ab.btf")), symbols: Self.symbols,
                                        banner: Self.banner, release: Self.release, textBase: Self.textBase)
        let userTypes = try #require((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["user_types"] as? [String: [String: Any]])
        // The one more fields use keeps the name plugins would look up.
        #expect(userTypes["clash"]?["kind"] as? String == "struct")
        #expect(userTypes["clash"]?["size"] as? Int == 16)
        let pointer = try #require((userTypes["a_user"]?["fields"] as? [String: [String: Any]])?["p"]?["type"] as? [String: Any])
        let other = try #require((pointer["subtype"] as? [String: Any])?["name"] as? String)
        #expect(other.hasPrefix("clash_"))
        #expect(userTypes[other]?["kind"] as? String == "union")
        #expect(userTypes[other]?["size"] as? Int == 4)
    }

    @Test func problemsNameEveryReferenceThatResolvesToNothing() {
        var document = ISFDocument(typesSource: "test", symbolsSource: "test")
        document.baseTypes["void"] = ISFBaseType(size: 0, signed: false, kind: .void, littleEndian: true)
        document.baseTypes["int"] = ISFBaseType(size: 4, signed: true, kind: .int, littleEndian: true)
        document.userTypes["node"] = ISFUserType(kind: .struct, size: 16, fields: [
            "next": ISFField(type: .pointer(.composite(.struct, "node")), offset: 0, anonymous: false),
            "owner": ISFField(type: .pointer(.composite(.struct, "task_struct")), offset: 8, anonymous: false),
            "state": ISFField(type: .bitfield(position: 0, length: 3, of: .composite(.struct, "node")), offset: 12, anonymous: false),
            "kind": ISFField(type: .enumeration("node_kind"), offset: 12, anonymous: false),
        ])
        document.enums["color"] = ISFEnum(size: 4, base: "unsigned int", constants: ["RED": 1])
        document.symbols["init_task"] = ISFSymbol(address: 1, type: .array(count: 2, of: .base("long")), constantData: nil)
        #expect(document.problems() == [
            "base_types lacks pointer",
            "enums.color: base type unsigned int is not in base_types",
            "symbols.init_task: base type long is not in base_types",
            "user_types.node.kind: enum node_kind is not in enums",
            "user_types.node.owner: struct task_struct is not in user_types",
            "user_types.node.state: a bitfield of struct node, not of a base or enum type",
        ])
    }

    @Test(.enabled(if: tools && FileManager.default.isExecutableFile(atPath: VolatilityPython.path), "volatility3 is not installed at /opt/farm-peers/volatility3 (scripts/install-deps runs scripts/install-volatility3)"))
    func volatilityAcceptsTheTable() throws {
        let scratch = try Scratch()
        let data = try ISFBuilder.build(btf: try BTF(path: try Self.fixtureBTF(in: scratch)), symbols: Self.symbols,
                                        banner: Self.banner, release: Self.release, textBase: Self.textBase)
        try data.write(to: URL(fileURLWithPath: scratch.file("fixture.json")))
        try VolatilityPython.validate(scratch.file("fixture.json"), types: ["node", "flags", "either", "pair_t"])
    }

    @Test(.enabled(if: FileManager.default.isReadableFile(atPath: "/sys/kernel/btf/vmlinux"), "the host kernel exposes no readable /sys/kernel/btf/vmlinux"))
    func theHostKernelsBTFConverts() throws {
        let btf = try BTF(path: "/sys/kernel/btf/vmlinux")
        // A per-CPU variable of a named struct, to see its type arrive through the symbols.
        var percpu: (name: String, type: String)?
        for id in 1..<btf.count {
            guard case .dataSection(".data..percpu", _, let variables) = try btf.type(UInt32(id)) else { continue }
            for entry in variables {
                guard percpu == nil, case .variable(let name, let target, _) = try btf.type(entry.variable),
                      case .structure(let composite) = try btf.type(target), !composite.name.isEmpty else { continue }
                percpu = (name, composite.name)
            }
        }
        let variable = try #require(percpu, "the host's BTF has no per-CPU variable of a named struct")
        let release = try String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let banner = Array(try String(contentsOfFile: "/proc/version", encoding: .utf8).utf8) + [0]
        // The host's own symbol names, as many as a real table has; their addresses where the
        // host shows them (to root with CAP_SYSLOG), made up where it shows zeros. Data symbols
        // appear only with CONFIG_KALLSYMS_ALL: the ones this test needs are made up if missing.
        var symbols: [String: UInt64] = [:]
        // Read to the end: /proc files report size 0, and reading by size stops after a page.
        let kallsyms = (try? FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/kallsyms")).readToEnd())
            .flatMap { String(decoding: $0, as: UTF8.self) } ?? ""
        for (index, line) in kallsyms.split(separator: "\n").enumerated() {
            let words = line.split(separator: " ")
            guard words.count == 3, let address = UInt64(words[0], radix: 16) else { continue }
            if symbols[String(words[2])] == nil { symbols[String(words[2])] = address != 0 ? address : Self.textBase + UInt64(index) * 16 }
        }
        symbols["_text"] = symbols["_text"] ?? Self.textBase
        for (name, address) in ["linux_banner": 0xffff_ffff_8240_0100, "init_task": 0xffff_ffff_8300_0000,
                                "tk_core": 0xffff_ffff_8310_0000, variable.name: 0x1a2c0] as [String: UInt64] where symbols[name] == nil {
            symbols[name] = address
        }
        let textBase = symbols["_text"]!
        let start = ContinuousClock.now
        let data = try ISFBuilder.build(btf: btf, symbols: symbols, banner: banner, release: release, textBase: textBase)
        let elapsed = ContinuousClock.now - start
        print("host BTF (\(btf.count - 1) types, \(symbols.count) symbols) converted in \(elapsed) to \(data.count) bytes of ISF")
        if FileManager.default.isExecutableFile(atPath: VolatilityPython.path) {
            let scratch = try Scratch()
            try data.write(to: URL(fileURLWithPath: scratch.file("host.json")))
            try VolatilityPython.validate(scratch.file("host.json"), types: ["task_struct", "mm_struct", "list_head", variable.type], schema: false)
        }

        let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let userTypes = try #require(document["user_types"] as? [String: [String: Any]])
        let task = try #require(userTypes["task_struct"]?["fields"] as? [String: Any])
        for member in ["pid", "comm", "tasks", "mm"] { #expect(task[member] != nil, "task_struct.\(member)") }
        let symbolTable = try #require(document["symbols"] as? [String: [String: Any]])
        #expect(symbolTable[variable.name]?["type"] as? NSDictionary == ["kind": "struct", "name": variable.type] as NSDictionary)
        #expect(symbolTable["init_task"]?["type"] as? NSDictionary == ["kind": "struct", "name": "task_struct"] as NSDictionary)
        #expect((symbolTable["tk_core"]?["type"] as? [String: Any])?["kind"] as? String == "struct")
    }

    @Test(.enabled(if: tools, "gcc and pahole are needed to make BTF fixtures (Debian packages gcc, dwarves; scripts/install-deps installs them)"))
    func malformedBTFIsRefusedWithNoTable() throws {
        let scratch = try Scratch()
        let good = try Data(contentsOf: URL(fileURLWithPath: try Self.fixtureBTF(in: scratch)))
        // Bytes that are not BTF, BTF cut short, and a type that points past the last type.
        var dangling = Data()
        for half: UInt16 in [0xeb9f] { withUnsafeBytes(of: half.littleEndian) { dangling.append(contentsOf: $0) } }
        dangling.append(contentsOf: [1, 0])                           // version 1, flags 0
        for word: UInt32 in [24, 0, 12, 12, 1,                        // header: types 12 bytes, strings 1 byte
                             0, 2 << 24, 5] {                         // a pointer to type 5, which does not exist
            withUnsafeBytes(of: word.littleEndian) { dangling.append(contentsOf: $0) }
        }
        dangling.append(0)
        let cases: [(String, Data, String)] = [
            ("garbage", Data("this is not BTF at all, just text".utf8), "is not valid BTF (libbpf: Invalid BTF magic"),
            ("truncated", good.prefix(good.count / 2), "is not valid BTF (libbpf: Invalid BTF total size"),
            ("dangling", dangling, "refers to type 5, which does not exist"),
        ]
        for (name, bytes, message) in cases {
            let error = #expect(throws: FarmError.self, "\(name)") {
                let btf = try BTF(data: bytes, origin: "\(name).btf")
                _ = try ISFBuilder.build(btf: btf, symbols: Self.symbols, banner: Self.banner, release: Self.release, textBase: Self.textBase)
            }
            #expect(error?.message.contains(message) == true, "\(name): \(error?.message ?? "")")
            #expect(error?.message.contains("\(name).btf") == true, "\(name): \(error?.message ?? "")")
        }
        // An ELF without BTF (a kernel before 5.10, or a module built without it) says so.
        let noBTF = #expect(throws: FarmError.self) { try BTF(path: scratch.file("fixture.o")) }
        #expect(noBTF?.message.contains("failed to find '.BTF' ELF section") == true, "\(noBTF?.message ?? "")")
        let file = try scratch.write("garbage.btf", "not BTF")
        #expect(throws: FarmError.self) { try BTF(path: file) }
        #expect(throws: FarmError.self) { try BTF(path: scratch.file("missing.btf")) }
    }

    @Test(.enabled(if: tools, "gcc and pahole are needed to make BTF fixtures (Debian packages gcc, dwarves; scripts/install-deps installs them)"))
    func symbolsOfAnotherKernelFailTheSelfChecks() throws {
        let scratch = try Scratch()
        let btf = try BTF(path: try Self.fixtureBTF(in: scratch))
        let otherBanner = Array("Linux version 6.12.9-amd64 (farm@example.org) #1 SMP\n\0".utf8)
        let cases: [([String: UInt64], [UInt8], String)] = [
            (Self.symbols, otherBanner, "is not kernel \(Self.release)'s"),
            (Self.symbols, Array(Self.banner.dropLast()), "must end with"),
            (Self.symbols.merging(["_text": Self.textBase + 0x200000]) { $1 }, Self.banner, "not at the kernel's text base"),
            (Self.symbols.filter { $0.key != "_text" }, Self.banner, "have no _text"),
            (Self.symbols.filter { $0.key != "linux_banner" }, Self.banner, "have no linux_banner"),
        ]
        for (symbols, banner, message) in cases {
            let error = #expect(throws: FarmError.self) {
                try ISFBuilder.build(btf: btf, symbols: symbols, banner: banner, release: Self.release, textBase: Self.textBase)
            }
            #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
        }
    }
}

/// Reads an ISF the way Volatility does: fields through anonymous members, sizes of descriptors.
struct ISFLayout {
    struct Field {
        var path: String
        var offset: Int
        var type: [String: Any]
        var bits: (position: Int, length: Int)?
    }

    let document: [String: Any]
    init(_ document: [String: Any]) { self.document = document }

    func userType(_ name: String) -> [String: Any]? { (document["user_types"] as? [String: [String: Any]])?[name] }

    /// Every named field as C reaches it (anonymous members' fields on the parent), offsets from the top.
    func flatten(_ name: String, at base: Int = 0) throws -> [Field] {
        let fields = try #require(userType(name)?["fields"] as? [String: [String: Any]], "user type \(name)")
        var result: [Field] = []
        for (fieldName, field) in fields {
            let type = field["type"] as! [String: Any]
            let offset = base + (field["offset"] as! Int)
            if field["anonymous"] as? Bool == true {
                result += try flatten(type["name"] as! String, at: offset)
            } else if type["kind"] as? String == "bitfield" {
                result.append(Field(path: fieldName, offset: offset, type: type,
                                    bits: (type["bit_position"] as! Int, type["bit_length"] as! Int)))
            } else {
                result.append(Field(path: fieldName, offset: offset, type: type))
            }
        }
        return result
    }

    func size(of type: [String: Any]) throws -> Int {
        let baseTypes = document["base_types"] as! [String: [String: Any]]
        switch type["kind"] as? String {
        case "base": return try #require(baseTypes[type["name"] as! String]?["size"] as? Int)
        case "pointer": return try #require(baseTypes["pointer"]?["size"] as? Int)
        case "array": return (type["count"] as! Int) * (try size(of: type["subtype"] as! [String: Any]))
        case "struct", "union": return try #require(userType(type["name"] as! String)?["size"] as? Int)
        case "enum": return try #require(((document["enums"] as? [String: [String: Any]])?[type["name"] as! String])?["size"] as? Int)
        default: throw Fixtures.ToolFailed(description: "no size for \(type)")
        }
    }
}

/// volatility3's own Python (scripts/install-volatility3), to judge tables by its schema and loader.
enum VolatilityPython {
    static let path = "/opt/farm-peers/volatility3/bin/python"

    /// Loads the table through volatility3's symbol table class, resolving each of `types` and every
    /// symbol's type; with `schema`, first validates it against volatility3's schema-6.2.0.json
    /// (jsonschema takes minutes on a whole kernel's table, volatility3 caches its verdict per file).
    static func validate(_ isf: String, types: [String], schema: Bool = true) throws {
        let script = """
            import json, os, pathlib, sys, jsonschema, volatility3
            from volatility3.framework import contexts
            from volatility3.framework.symbols import intermed
            document = json.load(open(sys.argv[1]))
            if sys.argv[2] == "schema":
                jsonschema.validate(document, json.load(open(os.path.join(os.path.dirname(volatility3.__file__), "schemas", "schema-6.2.0.json"))))
            context = contexts.Context()
            context.symbol_space.append(intermed.IntermediateSymbolTable(context, "isf", "farm", pathlib.Path(sys.argv[1]).as_uri(), validate=False))
            for name in sys.argv[3:]:
                context.symbol_space.get_type("farm!" + name).vol.size
            for name in document["symbols"]:
                context.symbol_space.get_symbol("farm!" + name).type
            for name in document["enums"]:
                context.symbol_space.get_enumeration("farm!" + name)
            print("ok")
            """
        let result = try runProcess(path, ["-c", script, isf, schema ? "schema" : "no-schema"] + types)
        guard result.status == 0, result.stdout.hasSuffix("ok\n") else {
            throw Fixtures.ToolFailed(description: "volatility3 refused \(isf): \(result.stderr.suffix(2000))")
        }
    }
}
