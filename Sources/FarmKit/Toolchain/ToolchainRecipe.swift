import FarmEngine
import Foundation

/// `recipes/toolchains/<name>.yml`: a root file system with the compiler some kernels were built
/// with, made by mmdebstrap from suites of an apt upstream (Debian's, or Ubuntu's for kernels
/// built with an Ubuntu gcc).
public struct ToolchainRecipe: Sendable, Hashable {
    /// mmdebstrap's variants farm uses: `apt` installs `packages` on top of apt's minimal set;
    /// `custom` installs exactly `packages` and their dependencies (an old suite whose Essential
    /// set cannot be installed in a chroot, like Ubuntu xenial's `init`, which pulls systemd).
    public enum Variant: String, Sendable, CaseIterable { case apt, custom }

    public var name: String
    public var path: String
    /// e.g. `debian-12`: preferred for kernels of that distribution when two recipes offer a compiler.
    public var distribution: String
    /// The suites the root is made from, the first one being the release (`[xenial, xenial-updates]`).
    public var suites: [String]
    /// The upstream of the manifest whose mirror (and keyring) the root is made from; when absent,
    /// the kernel's own upstream if it is an apt one, else the manifest's first apt upstream.
    public var upstream: String?
    public var upstreamLocation: SourceLocation?
    public var components: [String]
    /// The compiler the root provides, as kernels name it: `gcc-12`, `gcc-5`, `gcc-4.8`.
    public var compiler: String
    public var variant: Variant
    /// The packages to install, sorted: on top of apt's minimal set (`apt`), or all of them (`custom`).
    public var packages: [String]
    /// Symbolic links made in the root after the packages are installed, by absolute path: for a
    /// compiler no package links to the name a kernel's Makefile calls (`/usr/bin/gcc: gcc-4.8`).
    public var links: [String: String]
    public var location: SourceLocation

    /// The release suite, given to mmdebstrap as its SUITE.
    public var suite: String { suites[0] }

    static let keys = ["farm", "description", "distribution", "suite", "suites", "upstream", "components", "compiler", "variant",
                       "packages", "links"]

    static func parse(_ text: String, name: String, path: String) throws -> ToolchainRecipe {
        guard let root = try YAMLValue.parse(text, file: path) else {
            throw ManifestError("the toolchain recipe is empty; it needs 'farm', 'distribution', 'suite', 'compiler' and 'packages'", file: path)
        }
        let top = try root.mapping("the toolchain recipe", allowed: keys)
        try ManifestLoader.checkSchema(top, file: "toolchain recipe")
        _ = try top["description"]?.string("a description")
        let compilerValue = try top.required("compiler")
        let compiler = try compilerValue.string("a compiler name")
        guard ToolchainCatalog.compilerName(compiler) == compiler else {
            throw compilerValue.fail("expected a compiler as kernels name it, like 'gcc-12', 'gcc-5' or 'gcc-4.8', found '\(compiler)'")
        }
        let suites = try parseSuites(top)
        let variant = try top["variant"].map { value in
            let text = try value.string("a variant")
            guard let variant = Variant(rawValue: text) else {
                throw value.fail("unknown variant '\(text)'; expected one of: \(Variant.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return variant
        } ?? .apt
        let packagesValue = try top.required("packages")
        let packages = try packagesValue.stringList("'packages'")
        for package in packages where package.isEmpty || !package.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.:".contains($0)) }) {
            throw packagesValue.fail("'\(package)' is not a Debian package name")
        }
        guard packages.contains(where: { $0 == compiler || $0.hasPrefix(compiler + "-") || $0.hasPrefix(compiler + ":") }) else {
            throw packagesValue.fail("'packages' must install the compiler '\(compiler)' itself")
        }
        // farm lists a root's packages with dpkg-query, and Kbuild needs make; apt's variant has
        // dpkg, a custom root has only what it lists.
        if variant == .custom, let missing = ["dpkg", "make"].first(where: { !packages.contains($0) }) {
            throw packagesValue.fail("a 'variant: custom' root has only the packages it lists, and it must list '\(missing)'")
        }
        let upstreamValue = top["upstream"]
        return ToolchainRecipe(name: name, path: path,
                               distribution: try top.required("distribution").string("a distribution like debian-12"),
                               suites: suites,
                               upstream: try upstreamValue?.string("an upstream name"), upstreamLocation: upstreamValue?.location,
                               components: try top["components"]?.stringList("'components'") ?? ["main"],
                               compiler: compiler, variant: variant, packages: packages.sorted(),
                               links: try top["links"].map(parseLinks) ?? [:], location: root.location)
    }

    /// `suite: bookworm`, or `suites: [xenial, xenial-updates]` (the release first), not both.
    private static func parseSuites(_ top: YAMLMapping) throws -> [String] {
        switch (top["suite"], top["suites"]) {
        case let (suite?, nil):
            return [try suite.string("a suite")]
        case let (nil, suites?):
            let list = try suites.stringList("'suites'")
            guard !list.isEmpty else { throw suites.fail("'suites' lists no suite; name the release first, e.g. [xenial, xenial-updates]") }
            return list
        case let (_?, suites?):
            throw suites.fail("give 'suite' or 'suites', not both")
        case (nil, nil):
            throw top.owner.fail("missing key 'suite' (or 'suites') in the toolchain recipe")
        }
    }

    /// `links: {/usr/bin/gcc: gcc-4.8}`: absolute paths to link targets; both go into a shell
    /// command of mmdebstrap's, so only characters a path needs are allowed.
    private static func parseLinks(_ value: YAMLValue) throws -> [String: String] {
        func plain(_ text: String) -> Bool { !text.isEmpty && text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "+-._/".contains($0)) } }
        var links: [String: String] = [:]
        for (path, key, target) in try value.namedEntries("'links'") {
            guard path.hasPrefix("/"), plain(path), !path.split(separator: "/").contains("..") else {
                throw key.fail("a link's path must be absolute, without '..', of letters, digits and '+-._/'; found '\(path)'")
            }
            let text = try target.string("a link target")
            guard plain(text) else { throw target.fail("a link target is letters, digits and '+-._/'; found '\(text)'") }
            links[path] = text
        }
        return links
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
    /// `linux-compiler-gcc-12-x86` (before); `gcc-4.8` and `gcc-4.9` as Debian and Ubuntu name
    /// compilers before gcc 5 (the crawl of Ubuntu and RHEL kernels writes these names, read by
    /// `KernelCompiler`); nil for anything else.
    public static func compilerName(_ package: String) -> String? {
        guard let range = package.range(of: #"(^|-)gcc-([1-4]\.[0-9]+|[5-9]|[1-9][0-9]+)($|-)"#, options: .regularExpression) else { return nil }
        return package[range].trimmingCharacters(in: CharacterSet(charactersIn: "-")).description
    }

    /// The toolchain a kernel is built with: the one its `toolchain:` names, else the one that
    /// provides the compiler its headers name, the kernel's own distribution first, then any
    /// distribution's (a CentOS 7 kernel's gcc-4.8 may come from an Ubuntu root). Given the
    /// manifest, a recipe whose upstream it lists is preferred.
    public func recipe(for kernel: Kernel, in manifest: Manifest? = nil) throws -> ToolchainRecipe {
        if let name = kernel.toolchain {
            guard let recipe = recipes[name] else {
                throw ManifestError("kernel \(kernel.release) names toolchain '\(name)', but there is no \(directory)/\(name).yml"
                                    + " (there are: \(recipes.keys.sorted().joined(separator: ", ")))", at: kernel.location)
            }
            return recipe
        }
        func unavailable(_ recipe: ToolchainRecipe) -> Int {
            guard let manifest, let upstream = recipe.upstream else { return 0 }
            return manifest.upstream(named: upstream) == nil ? 1 : 0
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
        let candidates = recipes.values.filter { $0.compiler == compiler }.sorted {
            (unavailable($0), $0.distribution == kernel.distribution ? 0 : 1, $0.name) < (unavailable($1), $1.distribution == kernel.distribution ? 0 : 1, $1.name)
        }
        guard let recipe = candidates.first else {
            throw ManifestError("kernel \(kernel.release) needs the compiler \(compiler) (its headers name \(package)),"
                                + " and no toolchain recipe in \(directory) provides it; add one with 'compiler: \(compiler)'"
                                + " or set 'toolchain:' on the kernel", at: kernel.location)
        }
        return recipe
    }

    /// The apt upstream of `manifest` a kernel's toolchain root is made from: the recipe's
    /// `upstream:`, else the kernel's own upstream when it is an apt one, else the manifest's first
    /// apt upstream. A recipe naming an upstream the manifest lacks fails here, for the kernels
    /// that need it only, saying what to add.
    public static func upstream(of recipe: ToolchainRecipe, for kernel: Kernel, in manifest: Manifest) throws -> Upstream {
        if let name = recipe.upstream {
            guard let upstream = manifest.upstream(named: name), upstream.kind == .apt else {
                let problem = manifest.upstream(named: name) == nil ? "which \(manifest.path) does not list" : "which is not an apt upstream"
                let hint = recipe.distribution.hasPrefix("ubuntu")
                    ? " (an Ubuntu archive: 'mirror: apt' on an Ubuntu host, or the archive's URL with"
                        + " 'keyring: /usr/share/keyrings/ubuntu-archive-keyring.gpg' from the ubuntu-keyring package)" : ""
                throw ManifestError("toolchain \(recipe.name), which kernel \(kernel.release) needs, is made from upstream '\(name)', \(problem);"
                                    + " add an apt upstream named '\(name)' under 'upstreams:' in \(manifest.path)\(hint)",
                                    at: recipe.upstreamLocation ?? recipe.location)
            }
            return upstream
        }
        if let own = manifest.upstream(named: kernel.upstream), own.kind == .apt { return own }
        guard let first = manifest.upstreams.first(where: { $0.kind == .apt }) else {
            throw ManifestError("toolchain \(recipe.name), which kernel \(kernel.release) needs, is made by mmdebstrap from an apt upstream,"
                                + " and \(manifest.path) lists none; add one, or name it with 'upstream:' in the recipe", at: recipe.location)
        }
        return first
    }
}
