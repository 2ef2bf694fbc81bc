import FarmEngine
import Foundation

/// Task kind `profile`: one kernel's Volatility 3 symbol table, with no debug package. Input
/// `image` (the kernel's image package, through its fetch task). The vmlinux inside its bzImage
/// carries the types (its `.BTF` section) and the addresses (its kallsyms tables); a kernel built
/// without BTF gets its types from input `types` instead (a types task's BTF, made from a module
/// with debug info). Outputs `table` (the ISF, `.json.xz`) and `banner` (`linux_banner` with its
/// trailing "\n\0": what volatility3 matches a table to an image by, and what the repository's
/// index lists).
public struct ProfileAction: TaskAction {
    public let release: String
    /// Whether the plan gives it a `types` input (a kernel whose image has no `.BTF`).
    public let typesFromModule: Bool

    /// xz level of the published table: 6 (xz's default) took 3x as long as 3 for 5% smaller tables.
    static let xzLevel = 3

    public init(release: String, typesFromModule: Bool = false) {
        self.release = release
        self.typesFromModule = typesFromModule
    }

    public var kind: String { "profile" }

    public var sharedRemotely: Bool { true }
    /// 3: `taint_flags` typed, its length read from the image with the entry size BTF gives.
    public var version: Int { 3 }
    public var parameters: [(name: String, value: String)] {
        // The ISF format and the BTF conversion are this task's implementation: a change to either bumps `version`.
        [("release", release), ("types", typesFromModule ? "module" : "btf"), ("xz", "\(ProfileAction.xzLevel)")]
    }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run { try profile(context) }
    }

    private func profile(_ context: TaskContext) throws -> [String: Digest] {
        let package = try context.inputPath("image", "package")
        let origin = "the image package of \(release)"
        let elf = try ELFImage(data: try Vmlinux.extract(package: package, release: release), origin: origin)
        let symbols: KernelSymbols
        var symbolsSource = "the vmlinux's kallsyms tables"
        do {
            symbols = try KernelSymbols.kallsyms(in: elf, origin: origin)
        } catch let unreadable {
            // Older packages ship the real System.map beside the image: the same addresses.
            guard let map = try Vmlinux.systemMap(package: package, release: release) else { throw unreadable }
            do {
                symbols = try KernelSymbols.parseMap(map, origin: "\(origin): /boot/System.map-\(release)")
            } catch {
                throw FarmError("\(unreadable); and its System.map does not serve either: \(error)")
            }
            symbolsSource = "the image package's System.map"
            context.log.append("kallsyms unreadable (\(unreadable)); symbols from /boot/System.map-\(release)\n")
        }
        let banner = try symbols.banner(in: elf)
        let btf: BTF
        if typesFromModule {
            btf = try BTF(path: try context.inputPath("types", "btf"))
        } else if let section = elf.section(".BTF") {
            btf = try BTF(data: elf.contents(of: section), origin: "\(origin): .BTF")
        } else {
            throw FarmError.badInput("\(origin): its vmlinux has no .BTF section (a kernel built without CONFIG_DEBUG_INFO_BTF);"
                                     + " farm takes such a kernel's types from a module built with debug info, which this plan did not ask for")
        }
        guard let text = elf.section(".text") else { throw FarmError.badInput("\(origin): its vmlinux has no .text section") }
        let json = try ISFBuilder.build(btf: btf, symbols: symbols.addresses, banner: banner, release: release, textBase: text.address,
                                        typesSource: typesFromModule ? "DWARF of farm's types module, through pahole" : "the vmlinux's .BTF",
                                        symbolsSource: symbolsSource,
                                        arrayCounts: symbols.arrayCounts(in: elf, taintFlagSize: btf.structure(named: "taint_flag")?.size))
        context.log.append("\(symbols.addresses.count) symbols, \(json.count) bytes of ISF\n")
        let table = try Archive.compressXZ(json, name: "the symbol table of \(release)", level: ProfileAction.xzLevel)
        return ["table": try context.store(table), "banner": try context.store(Data(banner))]
    }

    /// The published file's name: `<family>_<release>_<package version>_<arch>.json.xz`.
    public static func fileName(for kernel: Kernel) -> String {
        "\(kernel.family.rawValue)_\(kernel.release)_\(kernel.version ?? "unknown")_\(kernel.debianArchitecture ?? "amd64").json.xz"
    }
}
