import FarmEngine
import Foundation

/// `recipes/<name>.yml`: how to build one module for a kernel.
public struct Recipe: Sendable, Hashable {
    public enum Source: Sendable, Hashable {
        /// A Debian source-carrying package (e.g. a `-dkms` package), pinned by the crawl.
        case package(name: String)
        /// A git repository at a fixed commit.
        case git(url: String, commit: String)
        /// A local directory, keyed by its content.
        case directory(path: String)
    }

    public var name: String
    public var path: String
    public var source: Source
    /// The shell command that builds the module inside the sandbox.
    public var build: String
    /// The file the build leaves in the source tree, e.g. `lime.ko`.
    public var module: String
    /// The published name, with `{release}` replaced by the kernel release.
    public var output: String
    /// Whether debug information is stripped from the module after the build.
    public var strip: Bool
    /// Also ship the signed module compressed (`xz`, `zstd` or `gzip`), as `make modules_install` would.
    public var compress: Compression? = nil

    public enum Compression: String, Sendable, Hashable, CaseIterable {
        case xz, zstd, gzip
        /// The file name's suffix: `.xz`, `.zst`, `.gz`.
        public var suffix: String {
            switch self {
            case .xz: ".xz"
            case .zstd: ".zst"
            case .gzip: ".gz"
            }
        }
    }

    public func outputName(release: String) -> String {
        output.replacingOccurrences(of: "{release}", with: release)
    }
}

/// The recipes a manifest needs, loaded from `recipes/`; a missing one is refused where the manifest names it.
public struct RecipeBook: Sendable {
    public var recipes: [String: Recipe]
    /// Recipe names in the manifest's order.
    public var order: [String]

    public init(recipes: [String: Recipe], order: [String]) {
        self.recipes = recipes
        self.order = order
    }

    public static func load(for manifest: Manifest, directory: String? = nil) throws -> RecipeBook {
        let root = directory ?? (manifest.directory + "/recipes")
        var recipes: [String: Recipe] = [:]
        var order: [String] = []
        for module in manifest.modules where recipes[module.name] == nil {
            recipes[module.name] = try loadRecipe(module, root: root)
            order.append(module.name)
        }
        return RecipeBook(recipes: recipes, order: order)
    }

    static func loadRecipe(_ reference: ModuleReference, root: String) throws -> Recipe {
        let name = reference.name
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }), !name.hasPrefix(".") else {
            throw ManifestError("'\(name)' is not a recipe name (letters, digits, . _ - only)", at: reference.location)
        }
        let path = root + "/" + name + ".yml"
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ManifestError("no recipe '\(name)': expected the file \(path)", at: reference.location)
        }
        return try parse(text, name: name, path: path)
    }

    public static func parse(_ text: String, name: String, path: String) throws -> Recipe {
        guard let root = try YAMLValue.parse(text, file: path) else {
            throw ManifestError("the recipe is empty; it needs 'farm', 'source', 'build', 'module' and 'output'", file: path)
        }
        let top = try root.mapping("the recipe", allowed: ["farm", "description", "source", "build", "module", "output", "strip", "compress"])
        try ManifestLoader.checkSchema(top, file: "recipe")
        _ = try top["description"]?.string("a description")

        let sourceValue = try top.required("source")
        let sourceMap = try sourceValue.mapping("'source'", allowed: ["package", "git", "commit", "dir"])
        let source: Recipe.Source
        switch (sourceMap["package"], sourceMap["git"], sourceMap["dir"]) {
        case let (package?, nil, nil):
            source = .package(name: try package.string("a package name"))
        case let (nil, git?, nil):
            let commitValue = try sourceMap.required("commit")
            let commit = try commitValue.string("a commit id")
            guard commit.count == 40, commit.allSatisfy(\.isHexDigit) else {
                throw commitValue.fail("expected a full 40-digit commit id, found '\(commit)'")
            }
            source = .git(url: try git.string("a git URL"), commit: commit.lowercased())
        case let (nil, nil, dir?):
            source = .directory(path: try dir.string("a directory"))
        default:
            throw sourceValue.fail("expected exactly one of 'package', 'git' (with 'commit') or 'dir' in 'source'")
        }
        if sourceMap["commit"] != nil, case .git = source {} else if let commit = sourceMap["commit"] {
            throw commit.fail("'commit' belongs with 'git'")
        }

        var compress: Recipe.Compression?
        if let value = top["compress"] {
            let text = try value.string("a compression")
            guard let known = Recipe.Compression(rawValue: text) else {
                throw value.fail("expected one of \(Recipe.Compression.allCases.map(\.rawValue).joined(separator: ", ")) for 'compress', found '\(text)'")
            }
            compress = known
        }
        return Recipe(name: name, path: path, source: source,
                      build: try top.required("build").string("a build command"),
                      module: try top.required("module").string("the module file the build makes"),
                      output: try top.required("output").string("the published module name"),
                      strip: try top["strip"]?.bool("'strip'") ?? true,
                      compress: compress)
    }
}
