import FarmEngine
import Foundation

/// What a kernel's `.config` says about how it was built.
public struct KernelConfig: Sendable {
    public var values: [String: String]

    public init(values: [String: String]) { self.values = values }

    public static func read(path: String) -> KernelConfig? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("CONFIG_") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            var value = String(line[line.index(after: equals)...])
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            values[String(line[..<equals])] = value
        }
        return KernelConfig(values: values)
    }

    /// `gcc-12` from `CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0"`:
    /// the compiler's major version, from the version number that ends the text.
    public var compiler: String? {
        guard let text = values["CONFIG_CC_VERSION_TEXT"] else { return nil }
        if text.contains("clang") { return "clang" }
        guard text.contains("gcc"),
              let version = text.split(separator: " ").last(where: { $0.first?.isNumber == true && $0.contains(".") }),
              let major = version.split(separator: ".").first else { return nil }
        return "gcc-\(major)"
    }
}
