import FarmEngine
import Foundation

/// What a kernel's `.config` says about how it was built.
public struct KernelConfig: Sendable {
    public var values: [String: String]

    public init(values: [String: String]) { self.values = values }

    public static func read(path: String) -> KernelConfig? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return parse(text)
    }

    public static func parse(_ text: String) -> KernelConfig {
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("CONFIG_") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            var value = String(line[line.index(after: equals)...])
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            values[String(line[..<equals])] = value
        }
        return KernelConfig(values: values)
    }

    /// The compiler `CONFIG_CC_VERSION_TEXT` names (`"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0"`
    /// is gcc-12); nil before 4.18, which did not record it (`KernelCompiler.read` then reads compile.h).
    public var compiler: KernelCompiler? { values["CONFIG_CC_VERSION_TEXT"].flatMap(KernelCompiler.init(versionText:)) }
}
