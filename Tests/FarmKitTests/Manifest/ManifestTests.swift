import FarmEngine
import FarmKit
import Foundation
import Testing

/// One malformed input: the manifest, recipes beside it, and where and what the complaint must be.
struct MalformedCase: CustomTestStringConvertible, Sendable {
    let name: String
    let manifest: String
    var recipes: [String: String] = [:]
    /// `file:line:column` relative to the scratch directory ("" for the manifest's directory).
    let location: String
    let message: String
    var testDescription: String { name }
}

let upstreamHeader = """
farm: 1
upstreams:
  debian:
    kind: apt
    mirror: apt
    suites: [bookworm]

"""

let validKernel = """
  - release: 6.1.0-1-amd64
    upstream: debian
    packages:
      - url: pool/main/l/linux/linux-headers-6.1.0-1-amd64_6.1.1-1_amd64.deb
        sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
        size: 1234

"""

let recipeText = """
farm: 1
source:
  package: lime-forensics-dkms
build: make -C $BUILD_DIR M=/build modules
module: lime.ko
output: lime-{release}.ko

"""

let malformedCases: [MalformedCase] = [
    MalformedCase(name: "unknown top-level key", manifest: upstreamHeader + "kernel:\n  - release: x\n",
                  location: "manifest.yml:7:1", message: "unknown key 'kernel' in the manifest; expected one of: farm, upstreams"),
    MalformedCase(name: "unknown key in a kernel", manifest: upstreamHeader + "kernels:\n" + validKernel.replacingOccurrences(of: "    upstream: debian\n", with: "    upstream: debian\n    flavor: rt\n"),
                  location: "manifest.yml:10:5", message: "unknown key 'flavor' in a kernel"),
    MalformedCase(name: "wrong type for a size", manifest: upstreamHeader + "kernels:\n" + validKernel.replacingOccurrences(of: "size: 1234", with: "size: big"),
                  location: "manifest.yml:13:15", message: "expected a size in bytes (a whole number), found 'big'"),
    MalformedCase(name: "wrong type for suites", manifest: upstreamHeader.replacingOccurrences(of: "suites: [bookworm]", with: "suites: bookworm"),
                  location: "manifest.yml:6:13", message: "expected 'suites' (a list), found a scalar"),
    MalformedCase(name: "sha256 that is not one", manifest: upstreamHeader + "kernels:\n" + validKernel.replacingOccurrences(of: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", with: "abc"),
                  location: "manifest.yml:12:17", message: "expected a sha256 (64 hex digits)"),
    MalformedCase(name: "duplicate kernel", manifest: upstreamHeader + "kernels:\n" + validKernel + validKernel,
                  location: "manifest.yml:14:5", message: "duplicate kernel '6.1.0-1-amd64' of upstream 'debian' (first listed at line 8); a release may appear once per upstream"),
    MalformedCase(name: "kernel naming an unknown upstream", manifest: upstreamHeader + "kernels:\n" + validKernel.replacingOccurrences(of: "upstream: debian", with: "upstream: ubuntu"),
                  location: "manifest.yml:9:15", message: "no upstream named 'ubuntu'"),
    MalformedCase(name: "recipe that does not exist", manifest: upstreamHeader + "modules: [lime, nosuch]\n",
                  recipes: ["lime": recipeText], location: "manifest.yml:7:17", message: "no recipe 'nosuch': expected the file"),
    MalformedCase(name: "requires, which farm does not do", manifest: upstreamHeader + "modules: [a]\n",
                  recipes: ["a": recipeText + "requires: [b]\n"],
                  location: "recipes/a.yml:7:1", message: "unknown key 'requires' in the recipe"),
    MalformedCase(name: "unknown key in a recipe", manifest: upstreamHeader + "modules: [lime]\n",
                  recipes: ["lime": recipeText + "strip-all: yes\n"], location: "recipes/lime.yml:7:1", message: "unknown key 'strip-all' in the recipe"),
    MalformedCase(name: "schema version from the future", manifest: upstreamHeader.replacingOccurrences(of: "farm: 1", with: "farm: 2"),
                  location: "manifest.yml:1:7", message: "this farm reads schema version 1, the manifest says 2"),
    MalformedCase(name: "YAML syntax error", manifest: upstreamHeader + "kernels:\n  - release: [6.1\n",
                  location: "manifest.yml:9:1", message: "invalid YAML"),
    MalformedCase(name: "duplicate key", manifest: upstreamHeader + "modules: []\nmodules: []\n",
                  location: "manifest.yml:", message: "duplicate key 'modules'"),
    MalformedCase(name: "alias as a mapping key", manifest: upstreamHeader + "x: &a [1, 2]\n*a : 1\n",
                  location: "manifest.yml:8:1", message: "the alias *a is used as a mapping key"),
    MalformedCase(name: "aliases that expand exponentially", manifest: upstreamHeader + aliasBomb,
                  location: "manifest.yml:", message: "aliases expand this file past"),
    MalformedCase(name: "release with non-ASCII digits", manifest: upstreamHeader + "kernels:\n" + validKernel.replacingOccurrences(of: "release: 6.1.0-1-amd64", with: "release: 6.1.0-\u{0661}-amd64"),
                  location: "manifest.yml:8:14", message: "is not a kernel release (ASCII letters"),
    MalformedCase(name: "profiles that is not a boolean", manifest: upstreamHeader + "profiles: sometimes\n",
                  location: "manifest.yml:7:11", message: "'profiles' (true or false)"),
    MalformedCase(name: "a publish url that is not one", manifest: upstreamHeader + "publish: {dir: repo, url: repo.example/x}\n",
                  location: "manifest.yml:7:27", message: "is not an http(s) or file URL"),
    MalformedCase(name: "a remote cache that is not an http(s) URL", manifest: upstreamHeader + "remote-cache: ftp://cache.example/farm\n",
                  location: "manifest.yml:7:15", message: "'ftp://cache.example/farm' is not an http(s) URL"),
    MalformedCase(name: "a remote cache URL with a query", manifest: upstreamHeader + "remote-cache: 'http://cache.example/farm?x=1'\n",
                  location: "manifest.yml:7:15", message: "has a query or fragment"),
]

/// Nine levels of nine aliases each, used as a key: before farm refused it, composing it ran for minutes.
let aliasBomb = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + (1...8).map { level in
    "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 9).joined(separator: ", ") + "]\n"
}.joined() + "? *a8\n: 1\n"

@Suite("Manifest and recipes")
struct ManifestTests {
    @Test func readsAValidManifest() throws {
        let scratch = try Scratch()
        let path = try scratch.write("manifest.yml", upstreamHeader + "modules: [lime]\nkernels:\n" + validKernel + "publish: {dir: repo}\n")
        try scratch.write("recipes/lime.yml", recipeText)
        let manifest = try ManifestLoader.load(path: path)
        #expect(manifest.kernels.map(\.release) == ["6.1.0-1-amd64"])
        #expect(manifest.kernels[0].packages[0].size == 1234)
        #expect(manifest.kernels[0].versionNumbers == (6, 1, 0))
        #expect(manifest.upstreams[0].components == ["main"])
        #expect(manifest.publish?.dir == "repo")
        let recipes = try RecipeBook.load(for: manifest)
        #expect(recipes.recipes["lime"]?.source == .package(name: "lime-forensics-dkms"))
        #expect(recipes.recipes["lime"]?.outputName(release: "6.1.0-1-amd64") == "lime-6.1.0-1-amd64.ko")
    }

    @Test(arguments: malformedCases)
    func refusesMalformedInputWithItsLocation(_ example: MalformedCase) throws {
        let scratch = try Scratch()
        let path = try scratch.write("manifest.yml", example.manifest)
        for (name, text) in example.recipes { try scratch.write("recipes/\(name).yml", text) }
        let error = #expect(throws: ManifestError.self) {
            let manifest = try ManifestLoader.load(path: path)
            _ = try RecipeBook.load(for: manifest)
        }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.hasPrefix(scratch.path + "/" + example.location), "\(text)")
        #expect(text.contains(example.message), "\(text)")
    }

    /// The CLI gives the same located message, exits 2, and the cache is left exactly as it was.
    @Test(arguments: malformedCases)
    func malformedInputExitsTwoAndWritesNothing(_ example: MalformedCase) throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        // A cache that already holds a build, to show that a refused manifest changes none of it.
        let good = try scratch.write("good/manifest.yml", SyntheticManifestText.small)
        let first = try runProcess(Products.driver, ["--manifest", good, "--cache", cache])
        #expect(first.status == 0, "\(first.stderr)")
        let before = treeDigest(cache)

        let path = try scratch.write("manifest.yml", example.manifest)
        for (name, text) in example.recipes { try scratch.write("recipes/\(name).yml", text) }
        let result = try runProcess(Products.farm, ["build", "--manifest", path, "--cache", cache])
        #expect(result.status == 2)
        #expect(result.stderr.contains(scratch.path + "/" + example.location), "\(result.stderr)")
        #expect(result.stderr.contains(example.message), "\(result.stderr)")
        #expect(treeDigest(cache) == before)
    }

    @Test func aMissingManifestSaysWhatToDo() throws {
        let scratch = try Scratch()
        let result = try runProcess(Products.farm, ["build", "--manifest", scratch.file("none.yml")])
        #expect(result.status == 2)
        #expect(result.stderr.contains("none.yml: error: cannot read the manifest; create it or pass --manifest PATH"))
    }

    /// xenial's and trusty's HWE `4.4.0-45-generic` are two kernels: one release, two upstreams.
    @Test func theSameReleaseUnderTwoUpstreamsIsTwoKernels() throws {
        let scratch = try Scratch()
        let twoUpstreams = upstreamHeader + "  trusty:\n    kind: apt\n    family: ubuntu\n    mirror: apt\n    suites: [trusty]\n\n"
        let path = try scratch.write("manifest.yml", twoUpstreams + "kernels:\n" + validKernel + validKernel.replacingOccurrences(of: "upstream: debian", with: "upstream: trusty"))
        let manifest = try ManifestLoader.load(path: path)
        #expect(manifest.kernels.map(\.name.description) == ["6.1.0-1-amd64@debian", "6.1.0-1-amd64@trusty"])
        #expect(manifest.kernels.map(\.family) == [.debian, .ubuntu])
    }

    /// Ubuntu's image is two packages; the second is `image-modules:`, kept through the snapshot and
    /// the writer, and a manifest without it (Debian's) reads as before.
    @Test func imageModulesRoundTripThroughTheWriterAndTheSnapshot() throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let pin = PackageReference(url: "pool/main/l/linux/linux-modules-4.4.0-210-generic_4.4.0-210.242_amd64.deb",
                                   sha256: SHA256.hash("modules"), size: 7)
        var kernel = try ManifestLoader.parse(upstreamHeader + "kernels:\n" + validKernel, path: scratch.file("m.yml")).kernels[0]
        #expect(kernel.imageModules == nil)
        kernel.image = PackageReference(url: "pool/main/l/linux-signed/linux-image-4.4.0-210-generic_4.4.0-210.242_amd64.deb",
                                        sha256: SHA256.hash("image"), size: 5)
        kernel.imageModules = pin
        let path = try scratch.write("manifest.yml", upstreamHeader + ManifestWriter.render(kernels: [kernel]))
        #expect(try scratch.read("manifest.yml").contains("    image-modules:\n      url: pool/main/l/linux/linux-modules-4.4.0-210-generic"))
        #expect(try ManifestLoader.load(path: path, snapshotDirectory: cache).kernels[0].imageModules == pin)
        #expect(try ManifestLoader.load(path: path, snapshotDirectory: cache).kernels[0].imageModules == pin)
    }

    /// `profiles:` and `publish.url` survive the snapshot, which a no-op build reads instead of the YAML.
    @Test func profilesAndThePublicURLAreReadAndKeptInTheSnapshot() throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let path = try scratch.write("manifest.yml", upstreamHeader + "profiles: true\npublish: {dir: repo, url: 'https://example.invalid/farm/'}\n")
        for _ in 0..<2 {
            let manifest = try ManifestLoader.load(path: path, snapshotDirectory: cache)
            #expect(manifest.profiles)
            #expect(manifest.publish?.dir == "repo")
            #expect(manifest.publish?.url == "https://example.invalid/farm")
        }
        let plain = try ManifestLoader.load(path: try scratch.write("other.yml", upstreamHeader), snapshotDirectory: cache)
        #expect(!plain.profiles)
    }

    @Test func theRemoteCacheIsReadAndKeptInTheSnapshot() throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let path = try scratch.write("manifest.yml", upstreamHeader + "remote-cache: http://cache.example:9090/farm\n")
        for _ in 0..<2 {
            #expect(try ManifestLoader.load(path: path, snapshotDirectory: cache).remoteCache == "http://cache.example:9090/farm")
        }
        #expect(try ManifestLoader.load(path: try scratch.write("other.yml", upstreamHeader), snapshotDirectory: cache).remoteCache == nil)
    }

    @Test func snapshotIsUsedOnlyForTheSameBytes() throws {
        let scratch = try Scratch()
        let cache = scratch.file("cache")
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let path = try scratch.write("manifest.yml", upstreamHeader + "kernels:\n" + validKernel)
        let first = try ManifestLoader.load(path: path, snapshotDirectory: cache)
        #expect(FileManager.default.fileExists(atPath: cache + "/manifest.snapshot"))
        let again = try ManifestLoader.load(path: path, snapshotDirectory: cache)
        #expect(again.kernels == first.kernels)
        #expect(again.upstreams == first.upstreams)
        // Edited by hand: the snapshot no longer matches and the new text is read and checked.
        try scratch.write("manifest.yml", upstreamHeader + "kernels:\n" + validKernel.replacingOccurrences(of: "size: 1234", with: "size: 99"))
        #expect(try ManifestLoader.load(path: path, snapshotDirectory: cache).kernels[0].packages[0].size == 99)
        try scratch.write("manifest.yml", upstreamHeader + "kernels:\n" + validKernel.replacingOccurrences(of: "size: 1234", with: "size: x"))
        #expect(throws: ManifestError.self) { try ManifestLoader.load(path: path, snapshotDirectory: cache) }
    }
}

enum SyntheticManifestText {
    /// Two kernels with two packages each: 11 tasks with the synthetic rules.
    static let small = upstreamHeader.replacingOccurrences(of: "debian", with: "synthetic") + "kernels:\n" + """
      - release: 6.1.0-1-amd64
        upstream: synthetic
        packages:
          - {url: pool/a1.deb, sha256: 0000000000000000000000000000000000000000000000000000000000000001, size: 1}
          - {url: pool/b1.deb, sha256: 0000000000000000000000000000000000000000000000000000000000000002, size: 1}
      - release: 6.1.0-2-amd64
        upstream: synthetic
        packages:
          - {url: pool/a2.deb, sha256: 0000000000000000000000000000000000000000000000000000000000000003, size: 1}
          - {url: pool/b2.deb, sha256: 0000000000000000000000000000000000000000000000000000000000000004, size: 1}

    """
}
