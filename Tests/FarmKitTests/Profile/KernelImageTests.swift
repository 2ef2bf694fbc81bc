import FarmEngine
import FarmKit
import Foundation
import Testing

/// The kernel's own symbols: a vmlinux out of its image package, its kallsyms tables, System.map.
/// Kernels are made by the real toolchain (as, ld, objcopy) from tables the test encodes as
/// scripts/kallsyms.c writes them; packages by dpkg-deb and rpmbuild; compressed payloads by the
/// compressors arch/x86/boot/compressed/Makefile runs.
@Suite("Kernel images and their symbols")
struct KernelImageTests {
    static let textBase: UInt64 = 0xffff_ffff_8100_0000
    static let rodataBase: UInt64 = 0xffff_ffff_8200_0000
    static let bannerText = "Linux version 6.99.0-farm-test (farm@example.org) (gcc) #1 SMP PREEMPT_DYNAMIC\n"

    // MARK: kallsyms tables

    @Test(arguments: KallsymsFixture.Layout.allCases)
    func kallsymsGiveEverySymbolsAddressInEachKernelsLayout(_ layout: KallsymsFixture.Layout) throws {
        let scratch = try Scratch()
        let symbols = KallsymsFixture.symbols(perCPU: layout.hasPerCPU, longName: layout.hasLongNames)
        let kernel = try KallsymsFixture.build(symbols: symbols, layout: layout, in: scratch)
        let elf = try ELFImage(data: Data(contentsOf: URL(fileURLWithPath: kernel.path)), origin: kernel.path)
        let found = try KernelSymbols.kallsyms(in: elf, origin: kernel.path)

        // Every name at its address; of a name given twice, the global one, else the later (higher) address.
        var expected: [String: UInt64] = [:]
        for symbol in symbols where !(symbol.name == "kern_path" && symbol.type == "d") { expected[symbol.name] = symbol.address }
        for (name, address) in expected {
            #expect(found.addresses[name] == address, "\(name): \(found.addresses[name].map { String($0, radix: 16) } ?? "missing") instead of \(String(address, radix: 16))")
        }
        #expect(found.addresses["helper_dup"] == KernelImageTests.textBase + 0x9000)
        #expect(found.addresses["kern_path"] == KernelImageTests.textBase + 0x9100)
        #expect(found.addresses["_text"] == elf.section(".text")?.address)
        // The tables' own labels, where ld put them (nm read the file before it was stripped).
        #expect(kernel.labels.count >= 6)
        for (label, address) in kernel.labels {
            #expect(found.addresses[label] == address, "\(label)")
        }
        #expect(found.addresses.count == expected.count + kernel.labels.count)
        #expect(try found.banner(in: elf) == Array(KernelImageTests.bannerText.utf8) + [0])
    }

    @Test(arguments: [KallsymsFixture.Damage.countPastTheNames, .offsetsOutOfOrder, .offsetsCutShort, .noTables, .garbage])
    func kallsymsThatDoNotParseAreRefusedNamingTheKernelAndTheTable(_ damage: KallsymsFixture.Damage) throws {
        let scratch = try Scratch()
        let kernel = try KallsymsFixture.build(symbols: KallsymsFixture.symbols(perCPU: true, longName: true), layout: .linux6_12,
                                               damage: damage, in: scratch)
        let elf = try ELFImage(data: Data(contentsOf: URL(fileURLWithPath: kernel.path)), origin: kernel.path)
        let error = #expect(throws: FarmError.self) { try KernelSymbols.kallsyms(in: elf, origin: "linux-image-6.99.0-farm-test.deb: vmlinux") }
        let message = error?.message ?? ""
        #expect(message.hasPrefix("linux-image-6.99.0-farm-test.deb: vmlinux: the kallsyms tables in .rodata do not parse: "), "\(message)")
        let missing = switch damage {
        case .countPastTheNames: "no kallsyms_num_syms"
        case .offsetsOutOfOrder, .offsetsCutShort: "neither kallsyms_offsets"
        case .noTables, .garbage: "no kallsyms_token_table"
        }
        #expect(message.contains(missing), "\(message)")
        #expect(message.contains("System.map"), "says what to use instead: \(message)")
    }

    /// Hand-made bytes: malformed input. A file that is no ELF, and a real one cut short.
    @Test func anELFFileThatIsNotWholeIsRefusedByName() throws {
        let scratch = try Scratch()
        #expect(throws: FarmError.self) { try ELFImage(data: Data("not an elf at all, but long enough to hold a header.....".utf8), origin: "x.deb: vmlinux") }
        let kernel = try KallsymsFixture.build(symbols: KallsymsFixture.symbols(perCPU: true, longName: false), layout: .linux6_1, in: scratch)
        let whole = try Data(contentsOf: URL(fileURLWithPath: kernel.path))
        let error = #expect(throws: FarmError.self) { try ELFImage(data: whole.prefix(whole.count / 2), origin: "cut-vmlinux") }
        #expect(error?.message.hasPrefix("cut-vmlinux: not a readable 64-bit little-endian ELF file: ") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("the end of the file") == true, "\(error?.message ?? "")")
    }

    // MARK: System.map and /proc/kallsyms

    @Test func systemMapAndProcKallsymsGiveTheKernelsSymbolsWithoutModules() throws {
        let text = """
            0000000000000000 A fixed_percpu_data
            ffffffff81000000 T _text
            ffffffff81000000 T startup_64
            ffffffff81001000 t helper_dup
            ffffffff81002000 t helper_dup
            ffffffff81003000 T kern_path
            ffffffff82000000 D linux_banner
            ffffffff82001000 d kern_path
            ffffffffc0a01000 t lime_init\t[lime]

            """
        let symbols = try KernelSymbols.parseMap(text, origin: "System.map-6.99.0")
        #expect(symbols.addresses == ["fixed_percpu_data": 0, "_text": 0xffff_ffff_8100_0000, "startup_64": 0xffff_ffff_8100_0000,
                                      "helper_dup": 0xffff_ffff_8100_2000, "linux_banner": 0xffff_ffff_8200_0000,
                                      "kern_path": 0xffff_ffff_8100_3000])
    }

    @Test(arguments: [
        ("ffffffff81000000 T _text\nffffffff8100 zz\n", "System.map:2: 'ffffffff8100 zz' is not a symbol line"),
        ("0000000000000000 T _text\n0000000000000000 T startup_64\n", "every address is 0"),
        // Debian's stub, as linux-image packages ship it since 5.8.
        ("ffffffffffffffff B The_real_System.map_is_in_the_linux-image-<version>-dbg_package\n", "no _text symbol"),
        ("\n\n", "no symbols in it"),
    ])
    func aMapThatIsNotAKernelsIsRefusedWithItsLine(text: String, problem: String) throws {
        let error = #expect(throws: FarmError.self) { try KernelSymbols.parseMap(text, origin: "System.map") }
        #expect(error?.message.hasPrefix("System.map") == true)
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "")")
        #expect(error?.category == .badInput)
    }

    // MARK: bzImage and packages

    /// The compressors and flags of arch/x86/boot/compressed/Makefile (gzip alone has no size appended).
    static let compressors: [(tool: String, arguments: [String], appendsSize: Bool)] = [
        ("xz", ["--check=crc32", "--x86", "--lzma2=,dict=32MiB", "-c"], true),
        ("zstd", ["-19", "-q", "-c"], true),
        ("gzip", ["-n", "-9", "-c"], false),
        ("bzip2", ["-9", "-c"], true),
        ("lzma", ["-9", "-c"], true),
    ]

    @Test(arguments: compressors.map(\.tool))
    func aBzImagesPayloadDecompressesToTheKernelsELF(compressor: String) throws {
        let scratch = try Scratch()
        let kernel = try KallsymsFixture.build(symbols: KallsymsFixture.symbols(perCPU: true, longName: true), layout: .linux6_12, in: scratch)
        let elf = try Data(contentsOf: URL(fileURLWithPath: kernel.path))
        let image = try BzImage.make(from: kernel.path, compressor: compressor, in: scratch)
        let decompressed = try Vmlinux.decompress(bzImage: image, origin: "vmlinuz-\(compressor)")
        #expect(decompressed == elf)
    }

    @Test func aBzImageThatIsDamagedIsRefusedNamingItsOrigin() throws {
        let scratch = try Scratch()
        let kernel = try KallsymsFixture.build(symbols: KallsymsFixture.symbols(perCPU: true, longName: true), layout: .linux6_12, in: scratch)
        let elf = try Data(contentsOf: URL(fileURLWithPath: kernel.path))
        let image = try BzImage.make(from: kernel.path, compressor: "xz", in: scratch)

        let notBzImage = #expect(throws: FarmError.self) { try Vmlinux.decompress(bzImage: elf, origin: "pkg: /boot/vmlinuz-x") }
        #expect(notBzImage?.message.contains("pkg: /boot/vmlinuz-x: not a usable bzImage: no \"HdrS\"") == true, "\(notBzImage?.message ?? "")")

        // Hand-made bytes: the header's payload length past the end of the file.
        var tooLong = image
        tooLong.replaceSubrange(0x24c..<0x250, with: withUnsafeBytes(of: UInt32(image.count).littleEndian) { Data($0) })
        let outside = #expect(throws: FarmError.self) { try Vmlinux.decompress(bzImage: tooLong, origin: "vmlinuz-long") }
        #expect(outside?.message.contains("vmlinuz-long: not a usable bzImage: its payload") == true, "\(outside?.message ?? "")")

        // Hand-made bytes: the payload cut to half its length, the header saying so.
        var cut = image
        let length = Int(image.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0x24c, as: UInt32.self) })
        cut.replaceSubrange(0x24c..<0x250, with: withUnsafeBytes(of: UInt32(length / 2).littleEndian) { Data($0) })
        let truncated = #expect(throws: FarmError.self) { try Vmlinux.decompress(bzImage: cut, origin: "vmlinuz-cut") }
        #expect(truncated?.message.hasPrefix("vmlinuz-cut: ") == true, "\(truncated?.message ?? "")")
    }

    @Test func aDebsVmlinuzIsExtractedAndAMissingOneIsNamed() throws {
        let scratch = try Scratch()
        let kernel = try KallsymsFixture.build(symbols: KallsymsFixture.symbols(perCPU: true, longName: true), layout: .linux6_12, in: scratch)
        let image = try BzImage.make(from: kernel.path, compressor: "zstd", in: scratch)
        let release = "6.99.0-farm-test-amd64"
        let root = scratch.file("deb")
        _ = try scratch.write("deb/DEBIAN/control", """
            Package: linux-image-\(release)
            Version: 6.99.0-1
            Architecture: amd64
            Maintainer: farm tests <farm@example.org>
            Description: fixture for farm's vmlinux tests

            """)
        try FileManager.default.createDirectory(atPath: root + "/boot", withIntermediateDirectories: true)
        try image.write(to: URL(fileURLWithPath: root + "/boot/vmlinuz-\(release)"))
        _ = try scratch.write("deb/boot/System.map-\(release)", "ffffffffffffffff B The_real_System.map_is_in_the_linux-image-<version>-dbg_package\n")
        let deb = scratch.file("linux-image-\(release)_6.99.0-1_amd64.deb")
        try Fixtures.run("dpkg-deb", ["--root-owner-group", "-Zxz", "--build", root, deb])

        #expect(try Vmlinux.extract(package: deb, release: release) == Data(contentsOf: URL(fileURLWithPath: kernel.path)))
        let error = #expect(throws: FarmError.self) { try Vmlinux.extract(package: deb, release: "6.99.0-other-amd64") }
        #expect(error?.message.hasPrefix("package \(deb): no /boot/vmlinuz-6.99.0-other-amd64 or /lib/modules/6.99.0-other-amd64/vmlinuz in it") == true,
                "\(error?.message ?? "")")

        // A download cut short: the vmlinuz member ends inside data.tar.xz.
        let whole = try Data(contentsOf: URL(fileURLWithPath: deb))
        let cut = scratch.file("cut.deb")
        try whole.prefix(whole.count * 3 / 4).write(to: URL(fileURLWithPath: cut))
        let damaged = #expect(throws: FarmError.self) { try Vmlinux.extract(package: cut, release: release) }
        #expect(damaged?.message.hasPrefix("package \(cut): ") == true, "\(damaged?.message ?? "")")
    }

    @Test(.enabled(if: Fixtures.hasTool("rpmbuild"), "rpmbuild is not installed (Debian package rpm; scripts/install-deps installs it)"))
    func anRpmsVmlinuzUnderLibModulesIsExtracted() throws {
        let scratch = try Scratch()
        let kernel = try KallsymsFixture.build(symbols: KallsymsFixture.symbols(perCPU: true, longName: true), layout: .linux6_12, in: scratch)
        let image = try BzImage.make(from: kernel.path, compressor: "xz", in: scratch)
        let imagePath = scratch.file("vmlinuz")
        try image.write(to: URL(fileURLWithPath: imagePath))
        let release = "5.14.0-99.el9.x86_64"
        let top = scratch.file("rpmbuild")
        let spec = try scratch.write("kernel-core.spec", """
            Name: kernel-core-fixture
            Version: 5.14.0
            Release: 99
            Summary: farm test fixture
            License: GPL-2.0-only
            BuildArch: noarch
            %description
            Fixture for farm's vmlinux tests.
            %install
            install -D -m 0755 \(imagePath) %{buildroot}/lib/modules/\(release)/vmlinuz
            %files
            /lib/modules/\(release)/vmlinuz

            """)
        try Fixtures.run("rpmbuild", ["-bb", "--define", "_topdir \(top)", "--define", "__os_install_post %{nil}", spec])
        let rpm = top + "/RPMS/noarch/kernel-core-fixture-5.14.0-99.noarch.rpm"
        #expect(try Vmlinux.extract(package: rpm, release: release) == Data(contentsOf: URL(fileURLWithPath: kernel.path)))
    }
}

/// Real Debian kernels, in the suite that reaches Debian's archive one test at a time.
extension DebianArchiveTests {
    /// 6.1 keeps kallsyms_offsets before kallsyms_num_syms and has 6.2's seqs_of_names backported;
    /// 6.12 puts the offsets after the token index and lists the tables among the symbols.
    @Test(arguments: [#"^linux-image-6\.1\.0-[0-9]+-amd64$"#, #"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"#])
    func kallsymsOfARealDebianKernelGiveItsTextBaseBannerAndSymbols(packagePattern: String) throws {
        let scratch = try Scratch()
        let search = try Fixtures.run("apt-cache", ["search", "--names-only", packagePattern])
        let names = search.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        let package = try #require(names.max { $0.compare($1, options: .numeric) == .orderedAscending }, "apt-cache lists no \(packagePattern)")
        let release = String(package.dropFirst("linux-image-".count))
        try Fixtures.run("apt-get", ["download", "-q", package], directory: scratch.path)
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: scratch.path).first { $0.hasPrefix(package + "_") && $0.hasSuffix(".deb") })

        let vmlinux = try Vmlinux.extract(package: scratch.file(file), release: release)
        let elf = try ELFImage(data: vmlinux, origin: file)
        let symbols = try KernelSymbols.kallsyms(in: elf, origin: file)
        #expect(symbols.addresses["_text"] == 0xffff_ffff_8100_0000)
        #expect(symbols.addresses["_text"] == elf.section(".text")?.address)
        #expect(symbols.addresses.count > 50_000, "\(symbols.addresses.count) symbols")
        for name in ["init_task", "linux_banner", "kallsyms_num_syms", "init_mm", "_etext"] {
            #expect(symbols.addresses[name] != nil, "no \(name)")
        }
        let banner = try symbols.banner(in: elf)
        #expect(banner.starts(with: Array("Linux version \(release) ".utf8)), "\(String(decoding: banner, as: UTF8.self))")
        #expect(banner.suffix(2) == [0x0a, 0])
        // TAINT_FLAGS_COUNT is 19 from 6.0 (TAINT_TEST) to 6.14: read from the data, not assumed;
        // an entry is 3 bytes, 16 from 6.12 (its description pointer), as the kernel's BTF says.
        let entry = try BTF(data: elf.contents(of: try #require(elf.section(".BTF"))), origin: "test").structure(named: "taint_flag")?.size
        #expect(entry == (release.hasPrefix("6.12.") ? 16 : 3))
        #expect(symbols.arrayCounts(in: elf, taintFlagSize: entry) == ["taint_flags": 19])
        // Every exported symbol where the kernel's own export table puts it: an independent check.
        let exports = try exportedSymbols(of: elf)
        #expect(exports.count > 5000, "\(exports.count) exports")
        let differing = exports.filter { symbols.addresses[$0.name] != $0.address }
        #expect(differing.isEmpty, "\(differing.count) of \(exports.count) differ, e.g. \(differing.prefix(3))")
        // kallsyms_num_syms holds the number of entries the tables have (duplicates included).
        let count = try #require(elf.bytes(atAddress: symbols.addresses["kallsyms_num_syms"]!, count: 4))
        let entries = count.withUnsafeBytes { Int($0.loadUnaligned(as: UInt32.self).littleEndian) }
        #expect(entries >= symbols.addresses.count - 10 && entries < symbols.addresses.count * 2, "\(entries) entries")
    }
}

extension DebianArchiveTests {
    /// `__ksymtab` and `__ksymtab_gpl`: since 4.19 on x86_64 each entry is three 32-bit offsets
    /// (value, name, namespace), each relative to its own field.
    func exportedSymbols(of elf: ELFImage) throws -> [(name: String, address: UInt64)] {
        var exports: [(name: String, address: UInt64)] = []
        for sectionName in ["__ksymtab", "__ksymtab_gpl"] {
            let section = try #require(elf.section(sectionName))
            let bytes = elf.contents(of: section)
            for entry in stride(from: 0, to: bytes.count - 11, by: 12) {
                func field(_ at: Int) -> UInt64 {
                    let relative = bytes.withUnsafeBytes { Int64($0.loadUnaligned(fromByteOffset: entry + at, as: Int32.self).littleEndian) }
                    return section.address &+ UInt64(entry + at) &+ UInt64(bitPattern: relative)
                }
                let nameStart = try #require(elf.fileOffset(ofAddress: field(4), count: 1))
                let nameEnd = try #require(elf.data[nameStart...].firstIndex(of: 0))
                exports.append((String(decoding: elf.data[nameStart..<nameEnd], as: UTF8.self), field(0)))
            }
        }
        return exports
    }
}

/// A bzImage around a compressed kernel, its setup header written by the test as
/// Documentation/arch/x86/boot.rst lays it out.
enum BzImage {
    static func make(from elf: String, compressor: String, in scratch: Scratch) throws -> Data {
        let (_, arguments, appendsSize) = KernelImageTests.compressors.first { $0.tool == compressor }!
        let compressed = scratch.file("payload.\(compressor)")
        let result = try runProcess("/bin/sh", ["-c", "\"$0\" \"$@\" < '\(elf)' > '\(compressed)'", compressor] + arguments)
        guard result.status == 0 else { throw Fixtures.ToolFailed(description: "\(compressor) failed: \(result.stderr)") }
        var payload = try Data(contentsOf: URL(fileURLWithPath: compressed))
        if appendsSize {
            let size = try FileManager.default.attributesOfItem(atPath: elf)[.size] as! Int
            payload.append(contentsOf: withUnsafeBytes(of: UInt32(size).littleEndian, Array.init))
        }
        let setupSectors = 3
        let payloadOffset = 0x300
        var image = Data(count: (setupSectors + 1) * 512 + payloadOffset)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            image.replaceSubrange(offset..<offset + MemoryLayout<T>.size, with: withUnsafeBytes(of: value.littleEndian, Array.init))
        }
        put(UInt8(setupSectors), at: 0x1f1)
        put(UInt16(0xaa55), at: 0x1fe)
        image.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        put(UInt16(0x020f), at: 0x206)
        put(UInt32(payloadOffset), at: 0x248)
        put(UInt32(payload.count), at: 0x24c)
        image.append(payload)
        // The decompressor's own code and data follow the payload in a real image.
        image.append(Data(repeating: 0xcc, count: 4096))
        return image
    }
}

/// A kernel ELF whose .rodata holds kallsyms tables the test encodes as scripts/kallsyms.c does:
/// the same compression (pairs of codes into unused codes, most profitable first), the same
/// directives, the same order as each kernel version writes them.
enum KallsymsFixture {
    enum Layout: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// Offsets (absolute per-CPU) and base, then num_syms, names, markers, token table and index.
        case linux5_10
        /// 5.10's order with seqs_of_names between the markers and the token table, and two-byte name lengths.
        case linux6_1
        /// num_syms, names, markers, token table and index, offsets, base, seqs_of_names.
        case linux6_12
        /// 6.12's order without CONFIG_KALLSYMS_ABSOLUTE_PERCPU: every offset from the base.
        case linux6_12WithoutPerCPU
        /// kallsyms_addresses (CONFIG_KALLSYMS_BASE_RELATIVE off) before num_syms.
        case absoluteAddresses

        var testDescription: String { rawValue }
        var hasPerCPU: Bool { self != .linux6_12WithoutPerCPU && self != .absoluteAddresses }
        var hasLongNames: Bool { self == .linux6_1 || self == .linux6_12 || self == .linux6_12WithoutPerCPU }
        var hasSequences: Bool { self == .linux6_1 || self == .linux6_12 || self == .linux6_12WithoutPerCPU }
        var addressesFirst: Bool { self == .linux5_10 || self == .linux6_1 || self == .absoluteAddresses }
    }

    enum Damage: String, Sendable, CustomTestStringConvertible {
        /// kallsyms_num_syms says more names than the table has.
        case countPastTheNames
        /// Two offsets swapped, so the addresses are not in order.
        case offsetsOutOfOrder
        /// .rodata ends halfway through kallsyms_offsets.
        case offsetsCutShort
        /// No kallsyms tables at all (CONFIG_KALLSYMS off).
        case noTables
        /// Hand-made bytes: malformed input. Pseudo-random bytes with the digits' run of a token
        /// table planted in them, and no tables.
        case garbage

        var testDescription: String { rawValue }
    }

    struct Symbol {
        var type: Character
        var name: String
        var address: UInt64
        var perCPU = false
    }

    /// A kernel's worth of symbols in address order: per-CPU ones at small addresses, 600
    /// functions (three markers), a name given twice, and one over 127 bytes.
    static func symbols(perCPU: Bool, longName: Bool) -> [Symbol] {
        let text = KernelImageTests.textBase
        var symbols: [Symbol] = []
        if perCPU {
            symbols += [Symbol(type: "A", name: "fixed_percpu_data", address: 0, perCPU: true),
                        Symbol(type: "A", name: "runqueues", address: 0x2_c000, perCPU: true)]
        }
        symbols += [Symbol(type: "T", name: "_text", address: text), Symbol(type: "T", name: "startup_64", address: text),
                    Symbol(type: "t", name: "helper_dup", address: text + 0x100)]
        for index in 0..<600 {
            symbols.append(Symbol(type: index % 3 == 0 ? "t" : "T", name: String(format: "func_%04d_of_the_kernel", index), address: text + 0x200 + UInt64(index) * 0x10))
        }
        symbols.append(Symbol(type: "t", name: "helper_dup", address: text + 0x9000))
        symbols.append(Symbol(type: "T", name: "kern_path", address: text + 0x9100))
        if longName {
            // Pseudo-random, so the compression cannot bring it under 128 bytes.
            var state: UInt32 = 12345
            let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789_")
            let name = String((0..<400).map { _ in
                state = state &* 1_103_515_245 &+ 12345
                return alphabet[Int(state >> 16) % alphabet.count]
            })
            symbols.append(Symbol(type: "T", name: "rust_" + name, address: text + 0xa000))
        }
        symbols += [Symbol(type: "T", name: "_etext", address: text + 0xf000),
                    Symbol(type: "D", name: "linux_banner", address: KernelImageTests.rodataBase),
                    Symbol(type: "D", name: "init_task", address: 0xffff_ffff_82e0_0000),
                    Symbol(type: "d", name: "kern_path", address: 0xffff_ffff_82e0_1000),
                    Symbol(type: "B", name: "__bss_stop", address: 0xffff_ffff_8300_0000)]
        return symbols
    }

    /// Assembles, links at the kernel's addresses and strips; `labels` are the kallsyms tables'
    /// addresses as nm read them before the strip.
    static func build(symbols: [Symbol], layout: Layout, damage: Damage? = nil, in scratch: Scratch) throws -> (path: String, labels: [String: UInt64]) {
        let source = try scratch.write("kernel/vmlinux.S", assembly(symbols: symbols, layout: layout, damage: damage))
        let object = scratch.file("kernel/vmlinux.o"), linked = scratch.file("kernel/vmlinux")
        try Fixtures.run("gcc", ["-c", source, "-o", object])
        try Fixtures.run("ld", ["-static", "-nostdlib", "-e", "_text", "-Ttext=0x\(String(KernelImageTests.textBase, radix: 16))",
                                "--section-start=.rodata=0x\(String(KernelImageTests.rodataBase, radix: 16))", "-o", linked, object])
        var labels: [String: UInt64] = [:]
        for line in try Fixtures.run("nm", [linked]).split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 3, fields[2].hasPrefix("kallsyms_"), let address = UInt64(fields[0], radix: 16) { labels[String(fields[2])] = address }
        }
        try Fixtures.run("objcopy", ["--strip-all", linked])
        return (linked, labels)
    }

    static func assembly(symbols: [Symbol], layout: Layout, damage: Damage?) -> String {
        var out = """
            .section .text, "ax"
            .globl _text
            _text:
            \t.fill 0x10000, 1, 0xcc
            \t.section .rodata, "a"
            linux_banner:
            \t.ascii "\(KernelImageTests.bannerText.replacingOccurrences(of: "\n", with: "\\n"))"
            \t.byte 0

            """
        if damage == .noTables { return out }
        if damage == .garbage {
            var state: UInt32 = 2024
            for _ in 0..<4096 {
                let bytes = (0..<16).map { _ in
                    state = state &* 1_103_515_245 &+ 12345
                    return String(state >> 16 & 0xff)
                }
                out += "\t.byte \(bytes.joined(separator: ", "))\n"
            }
            out += "\t.asciz \"0\", \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\"\n\t.fill 4096, 1, 0x41\n"
            return out
        }
        func label(_ name: String) { out += ".globl \(name)\n\t.balign 8\n\(name):\n" }

        let (codes, tokens) = compress(symbols.map { Array("\($0.type)\($0.name)".utf8) })
        let base = symbols.first { !$0.perCPU }!.address
        func addresses() {
            if layout == .absoluteAddresses {
                label("kallsyms_addresses")
                for symbol in symbols { out += "\t.quad 0x\(String(symbol.address, radix: 16))\n" }
                return
            }
            label("kallsyms_offsets")
            var offsets = symbols.map { symbol -> UInt32 in
                if !layout.hasPerCPU { return UInt32(symbol.address - base) }
                if symbol.perCPU { return UInt32(symbol.address) }
                return UInt32(bitPattern: Int32(Int64(bitPattern: base &- symbol.address &- 1)))
            }
            if damage == .offsetsOutOfOrder { offsets.swapAt(10, 400) }
            if damage == .offsetsCutShort { offsets.removeLast(offsets.count / 2) }
            for offset in offsets { out += "\t.long 0x\(String(offset, radix: 16))\n" }
            if damage == .offsetsCutShort { return }
            label("kallsyms_relative_base")
            out += "\t.quad 0x\(String(base, radix: 16))\n"
        }
        if layout.addressesFirst { addresses() }
        label("kallsyms_num_syms")
        out += "\t.long \(symbols.count + (damage == .countPastTheNames ? 300 : 0))\n"
        label("kallsyms_names")
        var markers: [Int] = []
        var offset = 0
        for (index, name) in codes.enumerated() {
            if index % 256 == 0 { markers.append(offset) }
            let length = name.count <= 0x7f ? [name.count] : [(name.count & 0x7f) | 0x80, name.count >> 7]
            precondition(layout.hasLongNames || length.count == 1, "a long name in a layout without two-byte lengths")
            out += "\t.byte " + (length + name.map(Int.init)).map { "0x\(String($0, radix: 16))" }.joined(separator: ", ") + "\n"
            offset += length.count + name.count
        }
        label("kallsyms_markers")
        for marker in markers { out += "\t.long \(marker)\n" }
        func sequences() {
            label("kallsyms_seqs_of_names")
            let order = symbols.indices.sorted { (symbols[$0].name, symbols[$0].address, $0) < (symbols[$1].name, symbols[$1].address, $1) }
            for sequence in order { out += "\t.byte 0x\(String(sequence >> 16 & 0xff, radix: 16)), 0x\(String(sequence >> 8 & 0xff, radix: 16)), 0x\(String(sequence & 0xff, radix: 16))\n" }
        }
        if layout == .linux6_1 { sequences() }
        label("kallsyms_token_table")
        var index: [Int] = []
        offset = 0
        for token in tokens {
            index.append(offset)
            out += "\t.asciz \"\(String(decoding: token, as: UTF8.self))\"\n"
            offset += token.count + 1
        }
        label("kallsyms_token_index")
        for entry in index { out += "\t.short \(entry)\n" }
        if !layout.addressesFirst { addresses() }
        if layout.hasSequences && layout != .linux6_1 && damage != .offsetsCutShort { sequences() }
        return out
    }

    /// scripts/kallsyms.c's table compression: every character used stands for itself; each
    /// unused code, from 255 down, takes the most frequent pair of codes. Returns each symbol's
    /// codes and each code's expansion.
    static func compress(_ symbols: [[UInt8]]) -> (codes: [[UInt8]], tokens: [[UInt8]]) {
        var symbols = symbols
        var table = [[UInt8]](repeating: [], count: 256)
        for symbol in symbols { for byte in symbol { table[Int(byte)] = [byte] } }
        var counts = [Int](repeating: 0, count: 0x10000)
        var touched: [Int] = []
        for code in (0..<256).reversed() where table[code].isEmpty {
            for pair in touched { counts[pair] = 0 }
            touched.removeAll(keepingCapacity: true)
            // The C code's scan keeps the first pair (lowest a + b << 8) of the highest count.
            var best = 0
            for symbol in symbols where symbol.count > 1 {
                for at in 0..<(symbol.count - 1) {
                    let pair = Int(symbol[at]) + Int(symbol[at + 1]) << 8
                    if counts[pair] == 0 { touched.append(pair) }
                    counts[pair] += 1
                    if counts[pair] > counts[best] || (counts[pair] == counts[best] && pair < best) { best = pair }
                }
            }
            guard counts[best] > 0 else { break }
            let pair = (UInt8(best & 0xff), UInt8(best >> 8))
            table[code] = [pair.0, pair.1]
            for index in symbols.indices {
                var replaced: [UInt8] = []
                var at = 0
                let symbol = symbols[index]
                while at < symbol.count {
                    if at + 1 < symbol.count, symbol[at] == pair.0, symbol[at + 1] == pair.1 {
                        replaced.append(UInt8(code))
                        at += 2
                    } else {
                        replaced.append(symbol[at])
                        at += 1
                    }
                }
                symbols[index] = replaced
            }
        }
        func expand(_ code: Int) -> [UInt8] {
            let entry = table[code]
            if entry.count == 1 && Int(entry[0]) == code || entry.isEmpty { return entry }
            return entry.flatMap { expand(Int($0)) }
        }
        return (symbols, (0..<256).map(expand))
    }
}
