import FarmEngine
import Foundation

/// Writes what `farm crawl` owns (`packages:` and `kernels:`) back into `manifest.yml` as text,
/// so comments and every other section stay exactly as the user wrote them.
public enum ManifestWriter {
    public static func render(kernels: [Kernel]) -> String {
        guard !kernels.isEmpty else { return "kernels: []\n" }
        var out = "kernels:\n"
        for kernel in kernels {
            out += "  - release: \(scalar(kernel.release))\n"
            out += "    upstream: \(scalar(kernel.upstream))\n"
            if let suite = kernel.suite { out += "    suite: \(scalar(suite))\n" }
            if let distribution = kernel.distribution { out += "    distribution: \(scalar(distribution))\n" }
            if let version = kernel.version { out += "    version: \(scalar(version))\n" }
            if let toolchain = kernel.toolchain { out += "    toolchain: \(scalar(toolchain))\n" }
            if let compiler = kernel.compiler { out += "    compiler: \(scalar(compiler))\n" }
            if let lastSeen = kernel.lastSeen { out += "    last-seen: \(scalar(lastSeen))\n" }
            if !kernel.packages.isEmpty {
                out += "    packages:\n"
                for package in kernel.packages { out += pin(package, indent: "      - ", rest: "        ") }
            }
            if let image = kernel.image {
                out += "    image:\n" + pin(image, indent: "      ", rest: "      ")
            }
            if let modules = kernel.imageModules {
                out += "    image-modules:\n" + pin(modules, indent: "      ", rest: "      ")
            }
        }
        return out
    }

    public static func render(packages: [PinnedPackage]) -> String {
        guard !packages.isEmpty else { return "packages: {}\n" }
        var out = "packages:\n"
        for pinned in packages {
            out += "  \(scalar(pinned.name)):\n"
            out += "    upstream: \(scalar(pinned.upstream))\n"
            if let suite = pinned.suite { out += "    suite: \(scalar(suite))\n" }
            if let version = pinned.version { out += "    version: \(scalar(version))\n" }
            out += pin(pinned.package, indent: "    ", rest: "    ")
        }
        return out
    }

    private static func pin(_ package: PackageReference, indent: String, rest: String) -> String {
        "\(indent)url: \(scalar(package.url))\n\(rest)sha256: \(package.sha256.hex)\n\(rest)size: \(package.size)\n"
    }

    /// A plain scalar where YAML reads it back as the same string, else a double-quoted one.
    static func scalar(_ value: String) -> String {
        let plain = value.range(of: #"^[A-Za-z0-9][A-Za-z0-9._/+~:@-]*$"#, options: .regularExpression) != nil
            && !value.contains(": ") && !["true", "false", "yes", "no", "on", "off", "null", "y", "n"].contains(value.lowercased())
            && Int(value) == nil && Double(value) == nil
        if plain { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// Replaces the top-level section `key` (its key line and everything indented under it) with
    /// `block`. Comments and blank lines just above the next key stay with that key. A missing
    /// section is inserted before the section `before`, or appended.
    public static func replacing(section key: String, with block: String, in text: String, before: String? = nil) -> String {
        var lines = text.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        let blockLines = block.components(separatedBy: "\n").dropLast(block.hasSuffix("\n") ? 1 : 0)

        func topLevelKey(_ line: String) -> String? {
            guard let first = line.first, first.isLetter || first == "_" else { return nil }
            guard let colon = line.firstIndex(of: ":") else { return nil }
            let name = line[..<colon]
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else { return nil }
            let after = line[line.index(after: colon)...]
            guard after.isEmpty || after.first == " " || after.first == "\t" else { return nil }
            return String(name)
        }

        guard let start = lines.firstIndex(where: { topLevelKey($0) == key }) else {
            if let before, let anchor = lines.firstIndex(where: { topLevelKey($0) == before }) {
                // Above the anchor's own comment lines, so they stay with it.
                var insert = anchor
                while insert > 0, lines[insert - 1].hasPrefix("#") { insert -= 1 }
                lines.insert(contentsOf: Array(blockLines) + [""], at: insert)
            } else {
                if let last = lines.last, !last.isEmpty { lines.append("") }
                lines.append(contentsOf: blockLines)
            }
            return lines.joined(separator: "\n") + "\n"
        }
        var end = start + 1
        while end < lines.count, topLevelKey(lines[end]) == nil { end += 1 }
        // Trailing blank lines and column-0 comments introduce whatever comes next.
        while end > start + 1, lines[end - 1].trimmingCharacters(in: .whitespaces).isEmpty || lines[end - 1].hasPrefix("#") {
            end -= 1
        }
        lines.replaceSubrange(start..<end, with: blockLines)
        return lines.joined(separator: "\n") + "\n"
    }
}
