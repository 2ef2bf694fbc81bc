import FarmEngine
import Foundation

/// Reads and checks `manifest.yml`. Every refusal names file:line:column and what was expected.
public enum ManifestLoader {
    /// Loads a manifest. With a `snapshotDirectory` (an existing cache directory), a checked
    /// manifest is read from there while the file's bytes stay the same, and written there after a
    /// parse. `check` runs either way (recipes, say); the snapshot is written only once it passes,
    /// so input that is refused writes nothing.
    /// `writingSnapshot: false` (a dry run) reads a snapshot but never writes one.
    public static func load(path: String, snapshotDirectory: String? = nil, writingSnapshot: Bool = true,
                            check: (Manifest) throws -> Void = { _ in }) throws -> Manifest {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ManifestError("cannot read the manifest; create it or pass --manifest PATH", file: path)
        }
        let source = SHA256.hash(data)
        if let directory = snapshotDirectory, let snapshot = FileManager.default.contents(atPath: ManifestSnapshot.path(in: directory)),
           let manifest = ManifestSnapshot.decode(snapshot, path: path, source: source) {
            try check(manifest)
            return manifest
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ManifestError("the manifest is not UTF-8 text", file: path)
        }
        let manifest = try parse(text, path: path)
        try check(manifest)
        if writingSnapshot, let directory = snapshotDirectory, FileManager.default.fileExists(atPath: directory) {
            // Only a speed-up: a snapshot that cannot be written is simply not there next time.
            try? AtomicFile.write(ManifestSnapshot.encode(manifest, source: source), to: ManifestSnapshot.path(in: directory), sync: false)
        }
        return manifest
    }

    public static func parse(_ text: String, path: String) throws -> Manifest {
        guard let root = try YAMLValue.parse(text, file: path) else {
            throw ManifestError("the manifest is empty; it needs at least 'farm: \(Manifest.schemaVersion)'", file: path)
        }
        let top = try root.mapping("the manifest", allowed: ["farm", "upstreams", "modules", "packages", "kernels", "signing", "publish", "sandbox", "profiles", "remote-cache"])
        try checkSchema(top, file: "manifest")

        var upstreams: [Upstream] = []
        if let value = top["upstreams"] {
            for (name, _, entry) in try value.namedEntries("'upstreams'") {
                upstreams.append(try upstream(name: name, entry))
            }
        }

        var modules: [ModuleReference] = []
        if let value = top["modules"] {
            var seen: [String: SourceLocation] = [:]
            for item in try value.list("'modules'") {
                let name = try item.string("a recipe name")
                if let first = seen[name] { throw item.fail("module '\(name)' is listed twice (first at line \(first.line))") }
                seen[name] = item.location
                modules.append(ModuleReference(name: name, location: item.location))
            }
        }

        var kernels: [Kernel] = []
        if let value = top["kernels"] {
            // A kernel is its upstream's release: xenial's and trusty's HWE 4.4.0-45-generic differ.
            var seen: [KernelName: SourceLocation] = [:]
            seen.reserveCapacity(1024)
            let upstreamsByName = Dictionary(upstreams.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for item in try value.list("'kernels'") {
                let kernel = try self.kernel(item, upstreams: upstreamsByName)
                let name = kernel.name
                if let first = seen[name] {
                    throw ManifestError("duplicate kernel '\(kernel.release)' of upstream '\(kernel.upstream)' (first listed at line \(first.line));"
                                        + " a release may appear once per upstream", at: kernel.location)
                }
                seen[name] = kernel.location
                kernels.append(kernel)
            }
        }

        var packages: [PinnedPackage] = []
        if let value = top["packages"] {
            let upstreamNames = Set(upstreams.map(\.name))
            for (name, _, entry) in try value.namedEntries("'packages'") {
                let map = try entry.mapping("package '\(name)'", allowed: ["upstream", "suite", "version", "url", "sha256", "size"])
                let upstreamValue = try map.required("upstream")
                let upstream = try upstreamValue.string("an upstream name")
                guard upstreamNames.contains(upstream) else {
                    throw upstreamValue.fail("no upstream named '\(upstream)'; the manifest's 'upstreams' names: \(upstreamNames.sorted().joined(separator: ", "))")
                }
                packages.append(PinnedPackage(name: name, upstream: upstream, suite: try map["suite"]?.string("a suite"),
                                              version: try map["version"]?.string("a package version"),
                                              package: try pin(map)))
            }
        }

        var signing: Signing?
        if let value = top["signing"] {
            let map = try value.mapping("'signing'", allowed: ["module-key", "repo-key"])
            signing = Signing(moduleKey: try map["module-key"]?.string("a key directory"),
                              repoKey: try map["repo-key"]?.string("a key directory"))
        }
        var publish: Publish?
        if let value = top["publish"] {
            let map = try value.mapping("'publish'", allowed: ["dir", "url"])
            publish = Publish(dir: try map.required("dir").string("the repository directory"))
            if let url = map["url"] {
                let text = try url.string("the repository's base URL")
                guard let parsed = URL(string: text), ["http", "https", "file"].contains(parsed.scheme ?? ""), parsed.host != nil || parsed.scheme == "file" else {
                    throw url.fail("'\(text)' is not an http(s) or file URL; 'url:' is where readers fetch this repository from")
                }
                publish?.url = text.hasSuffix("/") ? String(text.dropLast()) : text
            }
        }
        var sandbox: String?
        if let value = top["sandbox"] {
            let name = try value.string("a sandbox backend")
            guard ["bwrap", "chroot", "host"].contains(name) else {
                throw value.fail("unknown sandbox '\(name)'; expected bwrap, chroot or host")
            }
            sandbox = name
        }
        var manifest = Manifest(path: path, upstreams: upstreams, modules: modules, kernels: kernels, packages: packages,
                                signing: signing, publish: publish, sandbox: sandbox)
        if let value = top["profiles"] { manifest.profiles = try value.bool("'profiles' (true or false)") }
        if let value = top["remote-cache"] {
            let text = try value.string("the remote cache's URL")
            if let problem = RemoteCacheSetting.problem(with: text) { throw value.fail(problem) }
            manifest.remoteCache = text
        }
        return manifest
    }

    static func checkSchema(_ top: YAMLMapping, file: String) throws {
        let version = try top.required("farm")
        let number = try version.integer("the schema version")
        guard number == Manifest.schemaVersion else {
            throw version.fail("this farm reads schema version \(Manifest.schemaVersion), the \(file) says \(number); upgrade farm or fix 'farm:'")
        }
    }

    private static func upstream(name: String, _ value: YAMLValue) throws -> Upstream {
        let map = try value.mapping("upstream '\(name)'", allowed: ["kind", "family", "mirror", "mirrorlist", "suites", "components", "architectures", "keyring", "distribution"])
        let kindValue = try map.required("kind")
        let kindName = try kindValue.string("an upstream kind")
        guard let kind = Upstream.Kind(rawValue: kindName) else {
            throw kindValue.fail("unknown upstream kind '\(kindName)'; expected one of: \(Upstream.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var family = Family.default(for: kind)
        if let familyValue = map["family"] {
            let familyName = try familyValue.string("a kernel family")
            guard let named = Family(rawValue: familyName) else {
                throw familyValue.fail("unknown family '\(familyName)'; expected one of: \(Family.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard named.kinds.contains(kind) else {
                throw familyValue.fail("the \(familyName) family's kernels are not in \(kind.rawValue) indices; use 'kind: \(named.kinds.map(\.rawValue).sorted().joined(separator: " or "))'")
            }
            family = named
        }
        if kind == .yum { return try yumUpstream(name: name, family: family, map) }
        if let value = map["mirrorlist"] { throw value.fail("'mirrorlist' is for yum upstreams; an apt upstream names its archive in 'mirror'") }
        if let value = map["distribution"] { throw value.fail("'distribution' is for yum upstreams; an apt suite's comes from its Release") }
        let mirrorValue = try map.required("mirror")
        let mirror = try mirrorValue.string("'apt' or an archive URL")
        guard mirror == "apt" || mirror.hasPrefix("http://") || mirror.hasPrefix("https://") || mirror.hasPrefix("file://") else {
            throw mirrorValue.fail("expected 'apt' (the host's apt sources) or an http(s):// or file:// URL, found '\(mirror)'")
        }
        let suites = try map.required("suites").stringList("'suites'")
        return Upstream(name: name, kind: kind, family: family, mirror: mirror, suites: suites,
                        components: try map["components"]?.stringList("'components'") ?? ["main"],
                        architectures: try map["architectures"]?.stringList("'architectures'") ?? ["amd64"],
                        keyring: try map["keyring"]?.string("a keyring path"))
    }

    /// A yum upstream: `mirror:` (a base URL) or `mirrorlist:` (a URL listing base URLs), and
    /// `suites:` the repository paths under it (`[os/x86_64, updates/x86_64]`, `.` for the base itself).
    private static func yumUpstream(name: String, family: Family, _ map: YAMLMapping) throws -> Upstream {
        func url(_ key: String) throws -> String? {
            guard let value = map[key] else { return nil }
            let text = try value.string("an http(s):// or file:// URL")
            guard text.hasPrefix("http://") || text.hasPrefix("https://") || text.hasPrefix("file://") else {
                throw value.fail("expected an http(s):// or file:// URL, found '\(text)'" + (text == "apt" ? "; 'mirror: apt' reads the host's apt sources, which list no yum repository" : ""))
            }
            return text
        }
        let mirror = try url("mirror"), mirrorlist = try url("mirrorlist")
        if mirror != nil, let value = map["mirrorlist"] {
            throw value.fail("give 'mirror' or 'mirrorlist', not both: the mirror would never be used")
        }
        guard mirror != nil || mirrorlist != nil else {
            throw map.owner.fail("upstream '\(name)' (kind yum) needs 'mirror: URL' (the repositories' base URL) or 'mirrorlist: URL' (a list of base URLs)")
        }
        if let value = map["components"] {
            throw value.fail("a yum repository has no components; name each repository path under 'suites' instead")
        }
        let suitesValue = try map.required("suites")
        let suites = try suitesValue.stringList("'suites'")
        guard !suites.isEmpty else { throw suitesValue.fail("'suites' lists no repository path; use '[.]' for the base URL itself") }
        for suite in suites where suite.hasPrefix("/") || suite.contains("://") || suite.split(separator: "/").contains("..") || suite.isEmpty {
            throw suitesValue.fail("'\(suite)' is not a repository path under the mirror; expected a relative path such as 'os/x86_64' or '.'")
        }
        var distribution: String?
        if let value = map["distribution"] {
            let text = try value.string("a distribution release")
            guard text.range(of: #"^[a-z][a-z0-9]*-[0-9][0-9.]*$"#, options: .regularExpression) != nil else {
                throw value.fail("expected a distribution release like 'centos-7' or 'amzn-2', found '\(text)'")
            }
            distribution = text
        }
        return Upstream(name: name, kind: .yum, family: family, mirror: mirror ?? "", suites: suites, components: ["main"],
                        architectures: try map["architectures"]?.stringList("'architectures'") ?? ["x86_64"],
                        keyring: try map["keyring"]?.string("a keyring path"), mirrorlist: mirrorlist, distribution: distribution)
    }

    private static let kernelKeys = ["release", "upstream", "suite", "distribution", "version", "toolchain", "compiler", "packages", "image", "image-modules", "last-seen"]

    private static func kernel(_ value: YAMLValue, upstreams: [String: Upstream]) throws -> Kernel {
        let map = try value.mapping("a kernel", allowed: kernelKeys)
        let release = try map.required("release").string("a kernel release")
        guard Kernel.isRelease(release) else {
            throw map.entries["release"]!.value.fail("'\(release)' is not a kernel release (ASCII letters, digits and . _ + - ~ only, not starting with '.')")
        }
        let upstreamValue = try map.required("upstream")
        let upstream = try upstreamValue.string("an upstream name")
        guard let family = upstreams[upstream]?.family else {
            throw upstreamValue.fail("no upstream named '\(upstream)'; the manifest's 'upstreams' names: \(upstreams.keys.sorted().joined(separator: ", "))")
        }
        let packages = try map["packages"].map { try $0.list("'packages'").map(package) } ?? []
        return Kernel(release: release, upstream: upstream, family: family,
                      suite: try map["suite"]?.string("a suite"),
                      distribution: try map["distribution"]?.string("a distribution release"),
                      version: try map["version"]?.string("a package version"),
                      toolchain: try map["toolchain"]?.string("a toolchain recipe name"),
                      compiler: try map["compiler"]?.string("a compiler package"),
                      packages: packages,
                      image: try map["image"].map(package),
                      imageModules: try map["image-modules"].map(package),
                      lastSeen: try map["last-seen"]?.string("a time"),
                      location: value.location)
    }

    private static func package(_ value: YAMLValue) throws -> PackageReference {
        try pin(try value.mapping("a package", allowed: ["url", "sha256", "size"]))
    }

    private static func pin(_ map: YAMLMapping) throws -> PackageReference {
        let url = try map.required("url").string("a package URL")
        let shaValue = try map.required("sha256")
        guard let sha = Digest(hex: try shaValue.string("a sha256")) else {
            throw shaValue.fail("expected a sha256 (64 hex digits)")
        }
        let sizeValue = try map.required("size")
        let size = try sizeValue.integer("a size in bytes")
        guard size >= 0 else { throw sizeValue.fail("expected a size in bytes, found \(size)") }
        return PackageReference(url: url, sha256: sha, size: Int64(size))
    }
}
