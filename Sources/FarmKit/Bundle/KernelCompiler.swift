import FarmEngine
import Foundation

/// The compiler a kernel was built with, as its headers record it: `CONFIG_CC_VERSION_TEXT` in
/// the `.config` (kernels since 4.18), else `LINUX_COMPILER` in `include/generated/compile.h`
/// (4.4 and 3.10 kernels have only that).
public struct KernelCompiler: Sendable, Hashable, CustomStringConvertible {
    public enum Family: String, Sendable { case gcc, clang }

    public var family: Family
    /// The full version, e.g. [5, 4, 0].
    public var version: [Int]

    public init(family: Family, version: [Int]) {
        self.family = family
        self.version = version
    }

    /// The name toolchain recipes and kernels use, the way Debian and Ubuntu name the compiler's
    /// package: `gcc-12`, `gcc-5`, but `gcc-4.8` (before gcc 5 the minor version was part of the
    /// release series); `clang-16`.
    public var name: String {
        let major = version.first ?? 0
        if family == .gcc, major < 5, version.count > 1 { return "gcc-\(major).\(version[1])" }
        return "\(family.rawValue)-\(major)"
    }

    public var description: String { name }

    /// The compiler a version text names: `x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0`
    /// (`CONFIG_CC_VERSION_TEXT`), `gcc version 5.4.0 20160609 (Ubuntu 5.4.0-6ubuntu1~16.04.12) `
    /// (an old `LINUX_COMPILER`), or `gcc (GCC) 8.5.0 ..., GNU ld version 2.30` (a newer one, which
    /// adds the linker after a comma). Nil when the text names no gcc or clang version.
    public init?(versionText: String) {
        // Since 5.8 LINUX_COMPILER is CONFIG_CC_VERSION_TEXT, then ", " and the linker's version.
        let text = versionText.components(separatedBy: ", ").first ?? versionText
        if text.contains("clang") {
            family = .clang
        } else if text.contains("gcc") || text.contains("GCC") {
            family = .gcc
        } else {
            return nil
        }
        let words = text.split(separator: " ")
        // "gcc version 5.4.0 20160609 (...)": the word after "version"; otherwise the version
        // number that ends the text (the words in parentheses carry the distribution's version).
        let word: Substring?
        if let index = words.firstIndex(of: "version"), index + 1 < words.count, words[index + 1].first?.isNumber == true {
            word = words[index + 1]
        } else {
            word = words.last { $0.first?.isNumber == true && $0.contains(".") }
        }
        guard let word else { return nil }
        let numbers = word.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }.split(separator: ".").compactMap { Int($0) }
        guard numbers.count >= 2 else { return nil }
        version = numbers
    }

    /// What was read, and from where: for the crawl's `compiler:` and for messages.
    public struct Reading: Sendable, Hashable {
        public var compiler: KernelCompiler
        /// The file it was read from: a path, or `package.deb:usr/src/.../.config` for a package.
        public var file: String
        /// The text the file holds, e.g. `gcc version 5.4.0 20160609 (Ubuntu 5.4.0-6ubuntu1~16.04.12) `.
        public var text: String
    }

    /// The compiler of the header tree at `headers` (a directory holding `.config` or
    /// `include/generated/compile.h`); nil when neither names one.
    public static func read(headers: String) -> Reading? {
        let config = headers + "/.config", compileH = headers + "/include/generated/compile.h"
        if let text = KernelConfig.read(path: config)?.values["CONFIG_CC_VERSION_TEXT"], let compiler = KernelCompiler(versionText: text) {
            return Reading(compiler: compiler, file: config, text: text)
        }
        if let data = FileManager.default.contents(atPath: compileH), let text = linuxCompiler(inCompileH: String(decoding: data, as: UTF8.self)),
           let compiler = KernelCompiler(versionText: text) {
            return Reading(compiler: compiler, file: compileH, text: text)
        }
        return nil
    }

    /// The compiler of the kernel whose headers a package holds (a Debian or Ubuntu headers .deb,
    /// a RHEL `kernel-devel` .rpm), read from its `.config` and `include/generated/compile.h`
    /// without unpacking the rest; nil when the package holds neither or they name no compiler.
    public static func read(package path: String) throws -> Reading? {
        let files = try PackageExtractor.readFiles(package: path, limit: 16 << 20) { name in
            name.hasSuffix("/.config") || name.hasSuffix("/include/generated/compile.h")
        }
        for (name, data) in files where name.hasSuffix("/.config") {
            let config = KernelConfig.parse(String(decoding: data, as: UTF8.self))
            if let text = config.values["CONFIG_CC_VERSION_TEXT"], let compiler = KernelCompiler(versionText: text) {
                return Reading(compiler: compiler, file: path + ":" + name, text: text)
            }
        }
        for (name, data) in files where name.hasSuffix("/include/generated/compile.h") {
            if let text = linuxCompiler(inCompileH: String(decoding: data, as: UTF8.self)), let compiler = KernelCompiler(versionText: text) {
                return Reading(compiler: compiler, file: path + ":" + name, text: text)
            }
        }
        return nil
    }

    /// The string of `#define LINUX_COMPILER "..."`, as the kernel's `scripts/mkcompile_h` writes it.
    static func linuxCompiler(inCompileH text: String) -> String? {
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
            guard words.count == 3, words[0] == "#define", words[1] == "LINUX_COMPILER" else { continue }
            let value = words[2].trimmingCharacters(in: .whitespaces)
            guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") else { return nil }
            return String(value.dropFirst().dropLast())
        }
        return nil
    }
}
