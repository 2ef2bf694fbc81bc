import FarmEngine
import Foundation

/// `recipes/toolchains/<name>.yml`: a root file system with the compiler some kernels were built
/// with, made by mmdebstrap from one suite of an upstream.
public struct ToolchainRecipe: Sendable, Hashable {
    public var name: String
    public var path: String
    /// e.g. `debian-12`: preferred for kernels of that distribution when two recipes offer a compiler.
    public var distribution: String
    public var suite: String
    /// The upstream whose mirror (and keyring) the root is made from; the manifest's first when absent.
    public var upstream: String?
    public var components: [String]
    /// The compiler the root provides, as kernels name it: `gcc-12`.
    public var compiler: String
    /// The packages installed on top of apt's minimal set, sorted.
    public var packages: [String]
    public var location: SourceLocation

    static func parse(_ text: String, name: String, path: String) throws -> ToolchainRecipe {
        guard let root = try YAMLValue.parse(text, file: path) else {
            throw ManifestError("the toolchain recipe is empty; it needs 'farm', 'distribution', 'suite', 'compiler' and 'packages'", file: path)
        }
        let top = try root.mapping("the toolchain recipe",
                                   allowed: ["farm", "description", "distribution", "suite", "upstream", "components", "compiler", "packages"])
        try ManifestLoader.checkSchema(top, file: "toolchain recipe")
        _ = try top["description"]?.string("a description")
        let compilerValue = try top.required("compiler")
        let compiler = try compilerValue.string("a compiler name")
        guard ToolchainCatalog.compilerName(compiler) == compiler else {
            throw compilerValue.fail("expected a compiler as kernels name it, like 'gcc-12', found '\(compiler)'")
        }
        let packagesValue = try top.required("packages")
        let packages = try packagesValue.stringList("'packages'")
        for package in packages where package.isEmpty || !package.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.:".contains($0)) }) {
            throw packagesValue.fail("'\(package)' is not a Debian package name")
        }
        guard packages.contains(where: { $0 == compiler || $0.hasPrefix(compiler + "-") || $0.hasPrefix(compiler + ":") }) else {
            throw packagesValue.fail("'packages' must install the compiler '\(compiler)' itself")
        }
        return ToolchainRecipe(name: name, path: path,
                               distribution: try top.required("distribution").string("a distribution like debian-12"),
                               suite: try top.required("suite").string("a suite"),
                               upstream: try top["upstream"]?.string("an upstream name"),
                               components: try top["components"]?.stringList("'components'") ?? ["main"],
                               compiler: compiler, packages: packages.sorted(), location: root.location)
    }
}

/// The toolchain recipes under `recipes/toolchains/`, and which one a kernel needs.
public struct ToolchainCatalog: Sendable {
    public var directory: String
    public var recipes: [String: ToolchainRecipe]

    public static func load(directory: String) throws -> ToolchainCatalog {
        var recipes: [String: ToolchainRecipe] = [:]
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".yml") }.sorted()
        for file in names {
            let path = directory + "/" + file
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw ManifestError("cannot read the toolchain recipe (not UTF-8 text?)", file: path)
            }
            let name = String(file.dropLast(4))
            recipes[name] = try ToolchainRecipe.parse(text, name: name, path: path)
        }
        return ToolchainCatalog(directory: directory, recipes: recipes)
    }

    /// `gcc-12` from a compiler as Debian's headers depend on it: `gcc-12` (6.12 on) or
    /// `linux-compiler-gcc-12-x86` (before); nil for anything else.
    public static func compilerName(_ package: String) -> String? {
        guard let range = package.range(of: #"(^|-)gcc-[0-9]+($|-)"#, options: .regularExpression) else { return nil }
        return package[range].trimmingCharacters(in: CharacterSet(charactersIn: "-")).description
    }

    /// The toolchain a kernel is built with: the one its `toolchain:` names, else the one that
    /// provides the compiler its headers depend on (the kernel's distribution first).
    public func recipe(for kernel: Kernel) throws -> ToolchainRecipe {
        if let name = kernel.toolchain {
            guard let recipe = recipes[name] else {
                throw ManifestError("kernel \(kernel.release) names toolchain '\(name)', but there is no \(directory)/\(name).yml"
                                    + " (there are: \(recipes.keys.sorted().joined(separator: ", ")))", at: kernel.location)
            }
            return recipe
        }
        guard let package = kernel.compiler else {
            let same = recipes.values.filter { $0.distribution == kernel.distribution }.sorted { $0.name < $1.name }
            if kernel.distribution != nil, same.count == 1 { return same[0] }
            throw ManifestError("kernel \(kernel.release) names no compiler; set 'toolchain:' on it to one of: "
                                + recipes.keys.sorted().joined(separator: ", "), at: kernel.location)
        }
        guard let compiler = ToolchainCatalog.compilerName(package) else {
            throw ManifestError("kernel \(kernel.release) needs the compiler '\(package)', which farm cannot map to a toolchain;"
                                + " set 'toolchain:' on the kernel", at: kernel.location)
        }
        let candidates = recipes.values.filter { $0.compiler == compiler }
            .sorted { ($0.distribution == kernel.distribution ? 0 : 1, $0.name) < ($1.distribution == kernel.distribution ? 0 : 1, $1.name) }
        guard let recipe = candidates.first else {
            throw ManifestError("kernel \(kernel.release) needs the compiler \(compiler) (its headers depend on \(package)),"
                                + " and no toolchain recipe in \(directory) provides it; add one with 'compiler: \(compiler)'"
                                + " or set 'toolchain:' on the kernel", at: kernel.location)
        }
        return recipe
    }
}
