import FarmEngine
import Foundation

/// A kernel family: how a distribution packages its kernels. It decides the discovery rules of a
/// crawl, how versions compare, the bundle's layout and where the compiler is read. Adding a
/// family means a case here and a `KernelDiscovery` beside this file.
public enum Family: String, Sendable, Hashable, CaseIterable {
    case debian
    case ubuntu
    /// CentOS, Alma, Rocky, Oracle, Fedora, Amazon Linux: one `kernel-devel` per kernel.
    case rhel

    /// The family an upstream of `kind` has when the manifest does not say.
    public static func `default`(for kind: Upstream.Kind) -> Family {
        switch kind {
        case .apt: .debian
        case .yum: .rhel
        }
    }

    /// The index kinds whose packages this family's discovery understands.
    public var kinds: Set<Upstream.Kind> {
        switch self {
        case .debian, .ubuntu: [.apt]
        case .rhel: [.yum]
        }
    }

    /// `BUNDLE_DISTRO`, as kernel-packer names the layout (its `repackage_redhat` writes `redhat`).
    public var bundleDistro: String {
        switch self {
        case .debian: "debian"
        case .ubuntu: "ubuntu"
        case .rhel: "redhat"
        }
    }

    /// The keyring an upstream with an explicit mirror URL and no `keyring:` is checked with: where
    /// Debian's `debian-archive-keyring` and `ubuntu-keyring` packages put the archive keys. The
    /// RHEL family's repositories have no such default: their keys come with the upstream.
    public var defaultKeyring: String? {
        switch self {
        case .debian: "/usr/share/keyrings/debian-archive-keyring.gpg"
        case .ubuntu: "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
        case .rhel: nil
        }
    }

    /// The discovery rules of a crawl.
    public var discovery: any KernelDiscovery {
        switch self {
        case .debian: DebianDiscovery()
        case .ubuntu: UbuntuDiscovery()
        case .rhel: RHELDiscovery()
        }
    }

    /// Whether the family built `kernel` with BTF in its vmlinux (`CONFIG_DEBUG_INFO_BTF`), which
    /// its symbol table is made from; else the table takes its types from farm's types module.
    /// Debian turned it on with 5.10, Ubuntu with 5.8 (20.10 and the HWE kernels after it), the
    /// RHEL family with EL 8's 4.18 (and Amazon Linux with 5.10).
    public func shipsBTF(_ kernel: Kernel) -> Bool {
        let (major, minor, _) = kernel.versionNumbers
        let atLeast = { (m: Int, n: Int) in major > m || (major == m && minor >= n) }
        switch self {
        case .debian: return atLeast(5, 10)
        case .ubuntu: return atLeast(5, 8)
        case .rhel:
            // The dist tag names the EL release: 4.18.0-553.el8_10.x86_64.
            if let range = kernel.release.range(of: #"\.el(\d+)"#, options: .regularExpression),
               let el = Int(kernel.release[range].dropFirst(3)) {
                return el >= 8
            }
            return atLeast(5, 10)
        }
    }

    /// Negative, zero or positive as `a` is older than, the same as or newer than `b`, by the
    /// family's package manager (dpkg's ordering or rpm's `rpmvercmp`).
    public func compareVersions(_ a: String, _ b: String) -> Int {
        switch self {
        case .debian, .ubuntu: DebianVersion.compare(a, b)
        case .rhel: RPMVersion.compare(a, b)
        }
    }
}

/// One package as an index lists it (an apt `Packages` stanza or a yum `primary.xml` entry).
public struct IndexPackage: Sendable, Hashable {
    public var name: String
    /// The full version: Debian's `[epoch:]upstream-revision`, rpm's `[epoch:]version-release`.
    public var version: String
    public var architecture: String
    /// The source package (apt) or source rpm (yum) it was built from.
    public var source: String
    /// Dependencies in apt's syntax (`a (>= 1) | b, c`); a yum entry's `requires` written the same way.
    public var depends: String
    /// The path under the upstream's base URL.
    public var filename: String
    public var size: Int64
    public var sha256: Digest
    /// The suite (apt) or repository path (yum) that lists it.
    public var suite: String

    public init(name: String, version: String, architecture: String, source: String, depends: String,
                filename: String, size: Int64, sha256: Digest, suite: String) {
        self.name = name
        self.version = version
        self.architecture = architecture
        self.source = source
        self.depends = depends
        self.filename = filename
        self.size = size
        self.sha256 = sha256
        self.suite = suite
    }

    public var reference: PackageReference { PackageReference(url: filename, sha256: sha256, size: size) }

    /// `Depends` as alternatives of (name, relation, version): `a (>= 1) | b, c`.
    public var dependencies: [[(name: String, relation: String?, version: String?)]] {
        depends.split(separator: ",").map { group in
            group.split(separator: "|").map { alternative in
                let text = alternative.trimmingCharacters(in: .whitespaces)
                guard let open = text.firstIndex(of: "("), let close = text.firstIndex(of: ")") else {
                    return (text.split(separator: ":").first.map(String.init) ?? text, nil, nil)
                }
                let name = text[..<open].trimmingCharacters(in: .whitespaces)
                let constraint = text[text.index(after: open)..<close].split(separator: " ", maxSplits: 1)
                return (name, constraint.first.map(String.init), constraint.count > 1 ? String(constraint[1]).trimmingCharacters(in: .whitespaces) : nil)
            }
        }
    }
}

/// One suite (apt) or repository (yum) of an upstream, read and verified, for one architecture.
public struct SuiteIndex: Sendable {
    public var upstream: Upstream
    public var suite: String
    public var architecture: String
    /// What the signed index says of itself (apt's Release: codename, version), for `distribution:`.
    public var codename: String?
    public var version: String?
    public var packages: [IndexPackage]
    /// Entries the index listed but the reader left out, with why (a yum package with only a sha1).
    public var warnings: [String] = []

    public init(upstream: Upstream, suite: String, architecture: String, codename: String?, version: String?, packages: [IndexPackage]) {
        self.upstream = upstream
        self.suite = suite
        self.architecture = architecture
        self.codename = codename
        self.version = version
        self.packages = packages
    }
}

/// An upstream's index format (apt, yum): reads and verifies one suite's index.
public protocol PackageIndexSource: Sendable {
    /// The packages `relevant` keeps of one suite, component and architecture, verified. Blocking.
    func index(of upstream: Upstream, suite: String, component: String, architecture: String, workDirectory: String,
               downloader: Downloader, relevant: @escaping (String) -> Bool) throws -> SuiteIndex
}

/// What a family's rules found in one suite.
public struct Discovery: Sendable {
    public var kernels: [Kernel] = []
    /// Kernels a dependency could not be found for, with the reason; they were left out.
    public var warnings: [String] = []
    /// Header-like packages no rule of the family matched, by name: reported, never silently dropped.
    public var unmatched: [String] = []

    public init() {}
}

/// A family's discovery rules: which index packages it needs, and how packages make kernels.
public protocol KernelDiscovery: Sendable {
    /// Whether the crawl keeps a package of this name while parsing an index (indices are large).
    func isRelevant(_ name: String) -> Bool
    /// The kernels of one suite. `pool` is every relevant package of the upstream (all its suites
    /// and components), by name, for resolving dependencies across suites.
    func discover(_ index: SuiteIndex, pool: [String: [IndexPackage]], manifest: Manifest) -> Discovery
    /// What a kernel is made of, for the message of a suite that held none.
    var lookedFor: String { get }
}

extension KernelDiscovery {
    public var lookedFor: String { "kernel headers packages" }

    /// A headers package that is no kernel but points at one (Debian's `linux-headers-amd64`,
    /// Ubuntu's `linux-headers-generic`): it depends on a kernel's own headers package, not on
    /// shared headers (`-common`, Ubuntu's indep `linux-headers-<abi>`). Not worth a warning:
    /// every suite has a dozen.
    func isMetaPackage(_ dependencies: [(name: String, relation: String?, version: String?)]) -> Bool {
        dependencies.contains { $0.name.hasPrefix("linux-headers-") && !$0.name.contains("-common") && UbuntuDiscovery.indepABI($0.name) == nil }
    }

    /// The package that satisfies a dependency: `=` exactly; `>=` the same version if listed,
    /// else the lowest newer one; no relation the newest. The dependent's suite is preferred.
    func resolve(_ dependency: (name: String, relation: String?, version: String?), pool: [String: [IndexPackage]],
                 suite: String, family: Family) -> IndexPackage? {
        guard let candidates = pool[dependency.name], !candidates.isEmpty else { return nil }
        let ordered = candidates.sorted { a, b in
            let order = family.compareVersions(a.version, b.version)
            return order != 0 ? order < 0 : (a.suite == suite && b.suite != suite)
        }
        switch (dependency.relation, dependency.version) {
        case let ("=", version?):
            return ordered.filter { family.compareVersions($0.version, version) == 0 }.sorted { a, _ in a.suite == suite }.first
        case let (">=", version?):
            return ordered.first { family.compareVersions($0.version, version) >= 0 }
        default:
            return ordered.last
        }
    }
}
