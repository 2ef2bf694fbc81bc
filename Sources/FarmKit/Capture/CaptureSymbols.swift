import FarmEngine
import Foundation

/// The Volatility 3 symbol table written beside an image.
public struct CaptureSymbols: Sendable, Codable, Equatable {
    /// `repository` (the published table, its checksum and signature checked) or `host` (made
    /// here from the host's `/sys/kernel/btf/vmlinux` and `/proc/kallsyms`).
    public var source: String
    /// In the repository (`symbols/linux/<file>`), or `host` for a table made from the host.
    public var location: String
    /// `<output>/symbols/linux/<file>`.
    public var file: String
    public var sha256: String
    /// The `vol` command that analyses the image with it.
    public var command: String
}

/// The sidecar's `symbols`: the table's record, or `null` (with `symbolsMissing` saying why),
/// written out rather than left out, so a reader sees that farm looked.
public enum SymbolTableResult: Sendable, Codable, Equatable {
    case written(CaptureSymbols)
    case none

    public var symbols: CaptureSymbols? {
        if case let .written(symbols) = self { return symbols }
        return nil
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        self = container.decodeNil() ? .none : .written(try container.decode(CaptureSymbols.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case let .written(symbols): try container.encode(symbols)
        case .none: try container.encodeNil()
        }
    }
}

/// What looking for a table gave: a table, a plain absence (the image is still good), or a
/// refusal (the repository's symbols did not check out).
public enum SymbolTableOutcome: Sendable, Equatable {
    case written(CaptureSymbols)
    case missing(String)
    case refused(String)
}

extension Capture {
    /// `<output>/symbols`: volatility3's `-s` directory; tables go under its `linux/`.
    var symbolsDirectory: String { output + "/symbols" }

    /// The table for the kernel whose `/proc/version` is `procVersion`: the repository's, listed in
    /// its symbol-table index, which `repomd.xml`'s signature covers (checked unless
    /// `--gpg-no-verify`; the table's sha256 always, and its own signature), written to
    /// `<output>/symbols/linux/<file>`. A repository without a table for it is `.missing`; one whose
    /// index or table does not check out is `.refused`.
    public func fetchSymbols(procVersion: String, machine: String, image: String) -> SymbolTableOutcome {
        do {
            return try GnuPG.withScratch { scratch in try withRepository { checker, verifier in
                let (index, _) = try checker.index(using: verifier, scratch: scratch)
                guard index.symbols != nil else {
                    return .missing("\(repository.name(RepositoryFormat.repomdPath)) lists no symbol tables")
                }
                let running = procVersion.trimmingCharacters(in: CharacterSet(charactersIn: "\n\0"))
                guard let table = try checker.tables(index).first(where: { $0.bannerText == running && $0.arch == machine }) else {
                    return .missing("\(repository) has no symbol table for this kernel's banner '\(running)' (\(machine))")
                }
                let bytes = try checker.check(table, using: verifier, scratch: scratch)
                // The index's locations passed checkRelative (no '..', not absolute); the file keeps only its name.
                let file = try writeTable(bytes, named: (table.location as NSString).lastPathComponent)
                return .written(CaptureSymbols(source: "repository", location: table.location, file: file, sha256: table.checksum,
                                               command: volCommand(image: image)))
            } }
        } catch {
            return .refused("\(error)")
        }
    }

    /// `<output>/symbols/linux/<name>`, written atomically; its path.
    func writeTable(_ bytes: Data, named name: String) throws -> String {
        try AtomicFile.makeDirectory(symbolsDirectory + "/linux")
        let path = symbolsDirectory + "/linux/" + name
        try AtomicFile.write(bytes, to: path, mode: 0o644)
        return path
    }

    func volCommand(image: String) -> String {
        ["vol", "-s", symbolsDirectory, "-f", image, "linux.pslist"].map(\.shellWord).joined(separator: " ")
    }

    /// A table made here from what the running kernel exposes: its BTF (`/sys/kernel/btf/vmlinux`)
    /// and its symbols (`/proc/kallsyms`, read as root so the addresses are real), moved back by
    /// the KASLR slide so the table holds link-time addresses like any other. nil when the host
    /// has no BTF in sysfs.
    func hostTable(_ target: CaptureTarget, banner: String, release: String) throws -> (path: String, sha256: String)? {
        func asRoot(_ command: String) -> String { "if [ \"$(id -u)\" = 0 ]; then \(command); else sudo -n \(command); fi" }
        let btfBytes = try readBinary(target, asRoot("cat /sys/kernel/btf/vmlinux 2>/dev/null || true"), what: "reading /sys/kernel/btf/vmlinux")
        guard !btfBytes.isEmpty else { return nil }
        let kallsyms = try checked(target, "reading /proc/kallsyms", asRoot("cat /proc/kallsyms"), timeout: 120)
        let origin = "\(target): /proc/kallsyms"
        var symbols = try KernelSymbols.parseMap(kallsyms, origin: origin)
        guard let text = symbols.addresses["_text"], text != 0 else {
            throw FarmError("\(origin): no address for _text (all zero: kptr_restrict hides them from a user that is not root)")
        }
        let slide = text &- Capture.linkedTextBase
        if slide != 0 {
            // Per-CPU symbols are offsets into the per-CPU area, which KASLR does not move.
            symbols.addresses = symbols.addresses.mapValues { $0 >= text ? $0 &- slide : $0 }
        }
        let btf = try BTF(data: btfBytes, origin: "\(target): /sys/kernel/btf/vmlinux")
        let json = try ISFBuilder.build(btf: btf, symbols: symbols.addresses, banner: Array((banner + "\n").utf8) + [0], release: release,
                                        textBase: Capture.linkedTextBase, typesSource: "the host's /sys/kernel/btf/vmlinux",
                                        symbolsSource: "the host's /proc/kallsyms, less the KASLR slide")
        let table = try Archive.compressXZ(json, name: "the symbol table of \(target)", level: ProfileAction.xzLevel)
        let path = try writeTable(table, named: "host_\(release)_\(SHA256.hash(Data(banner.utf8)).hex.prefix(12)).json.xz")
        return (path, SHA256.hash(table).hex)
    }

    /// x86-64's `_text` as linked (`__START_KERNEL_map` + 16 MiB): where `_text` is without KASLR.
    static let linkedTextBase: UInt64 = 0xffff_ffff_8100_0000

    /// A remote command's stdout as bytes (BTF is binary; `checked` returns text).
    func readBinary(_ target: CaptureTarget, _ command: String, what: String) throws -> Data {
        var bytes = Data()
        let termination = try Executable.run(try sshPath(), target.arguments + ["--", target.destination, command], environment: nil) { chunk in
            bytes.append(contentsOf: chunk)
        }
        guard termination.status == 0 else { throw FarmError("\(target): \(what) failed (ssh exit \(termination.status))") }
        return bytes
    }

}

extension String {
    /// As a shell word, quoted only when it needs to be, so the usual line reads as typed.
    var shellWord: String {
        let plain = !isEmpty && unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "_-./:@%+=,".unicodeScalars.contains($0)
        }
        return plain ? self : shellQuoted
    }
}
