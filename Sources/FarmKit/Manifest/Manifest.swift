import FarmEngine
import Foundation

/// `manifest.yml`: the upstreams to crawl, the kernels to cover and the modules to build.
public struct Manifest: Sendable {
    public static let schemaVersion = 1

    public var path: String
    public var upstreams: [Upstream]
    public var modules: [ModuleReference]
    public var kernels: [Kernel]
    /// Packages pinned by name for recipes (`source: {package: lime-forensics-dkms}`), by the crawl.
    public var packages: [PinnedPackage]
    public var signing: Signing?
    public var publish: Publish?
    public var sandbox: String?
    /// `profiles: true`: a Volatility 3 symbol table per kernel with a pinned image, published
    /// beside the modules. Off unless asked: each table costs the kernel's image package.
    public var profiles: Bool = false
    /// `remote-cache: URL`: a cache shared between machines (Bazel's HTTP cache protocol); `--remote-cache` overrides it.
    public var remoteCache: String?

    /// The directory the manifest lives in; relative paths in it are resolved from here.
    public var directory: String { (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent }

    public func upstream(named name: String) -> Upstream? { upstreams.first { $0.name == name } }
}

public struct Upstream: Sendable, Hashable {
    /// The index format: apt's `Release`/`Packages`, or yum's `repomd.xml`/`primary.xml`.
    public enum Kind: String, Sendable, CaseIterable { case apt, yum }

    public var name: String
    public var kind: Kind
    /// How the distribution packages kernels; `Family.default(for: kind)` when the manifest does not say.
    public var family: Family
    /// `apt` (the host's apt sources) or an explicit archive URL.
    public var mirror: String
    public var suites: [String]
    public var components: [String]
    public var architectures: [String]
    /// An OpenPGP keyring to verify the archive with, instead of the one apt's `Signed-By` names.
    /// For yum it also checks `repomd.xml.asc` and every package's own signature.
    public var keyring: String?
    /// yum only: a URL whose body lists base URLs, one a line, used in its order instead of `mirror`.
    public var mirrorlist: String? = nil
    /// yum only: the distribution its kernels come from (`centos-7`), instead of one named after
    /// the release's dist tag (`el7` gives `rhel-7`).
    public var distribution: String? = nil
}

public struct ModuleReference: Sendable, Hashable {
    public var name: String
    public var location: SourceLocation
}

/// A package pinned by its path in the upstream archive, its size and its sha256.
public struct PackageReference: Sendable, Hashable {
    public var url: String
    public var sha256: Digest
    public var size: Int64

    public init(url: String, sha256: Digest, size: Int64) {
        self.url = url
        self.sha256 = sha256
        self.size = size
    }
}

/// A kernel's identity: the upstream it comes from and its release (`uname -r`). Two upstreams
/// may ship one release as different builds (xenial's and trusty-HWE's `4.4.0-45-generic`).
public struct KernelName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var release: String
    public var upstream: String

    public init(release: String, upstream: String) {
        self.release = release
        self.upstream = upstream
    }

    /// `6.1.0-56-amd64@debian`: how task labels, messages and commands name it.
    public var description: String { release + "@" + upstream }

    /// By upstream, then by release in dpkg's order: the order `farm crawl` writes kernels in.
    public static func < (a: KernelName, b: KernelName) -> Bool {
        a.upstream != b.upstream ? a.upstream < b.upstream : DebianVersion.less(a.release, b.release)
    }
}

public struct Kernel: Sendable, Hashable {
    /// The kernel release as `uname -r` prints it.
    public var release: String
    public var upstream: String
    /// The family of its upstream: how its packages make a bundle and how its versions compare.
    public var family: Family
    public var suite: String?
    /// The distribution release it comes from, e.g. `debian-12`.
    public var distribution: String?
    /// The distribution's version of the kernel package (e.g. `6.1.158-1`).
    public var version: String?
    public var toolchain: String?
    /// The compiler package the headers depend on (e.g. `linux-compiler-gcc-12-x86`).
    public var compiler: String?
    public var packages: [PackageReference]
    /// The package holding `/boot/vmlinuz-<release>` (Debian's and Ubuntu's `linux-image-<release>`).
    public var image: PackageReference?
    /// The package holding the image's modules where the image package does not (Ubuntu's
    /// `linux-modules-<release>`); nil for Debian, whose image package holds both.
    public var imageModules: PackageReference?
    /// When a crawl last saw this kernel upstream, if a crawl has since missed it.
    public var lastSeen: String?
    public var location: SourceLocation

    public init(release: String, upstream: String, family: Family, suite: String?, distribution: String?, version: String?, toolchain: String?,
                compiler: String?, packages: [PackageReference], image: PackageReference?, imageModules: PackageReference? = nil,
                lastSeen: String?, location: SourceLocation) {
        self.release = release
        self.upstream = upstream
        self.family = family
        self.suite = suite
        self.distribution = distribution
        self.version = version
        self.toolchain = toolchain
        self.compiler = compiler
        self.packages = packages
        self.image = image
        self.imageModules = imageModules
        self.lastSeen = lastSeen
        self.location = location
    }

    public var name: KernelName { KernelName(release: release, upstream: upstream) }

    /// The Debian architecture of its packages (`amd64` from `..._amd64.deb`, or from an rpm's
    /// `.x86_64.rpm`), nil when only `all` or `noarch`.
    public var debianArchitecture: String? {
        for package in packages + [image, imageModules].compactMap({ $0 }) {
            let file = (package.url as NSString).lastPathComponent
            if file.hasSuffix(".rpm"), let architecture = file.dropLast(4).split(separator: ".").last,
               let debian = ["x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "ppc64le": "ppc64el", "s390x": "s390x"][String(architecture)] {
                return debian
            }
            guard file.hasSuffix(".deb"), let underscore = file.lastIndex(of: "_") else { continue }
            let architecture = String(file[file.index(after: underscore)...].dropLast(4))
            if architecture != "all" { return architecture }
        }
        return nil
    }

    /// What `uname -r` can print and a file name can hold: ASCII letters, digits and `._+-~`
    /// (Unicode digits such as '٣' are letters to Swift's `isNumber`, never to a kernel).
    public static func isRelease(_ text: String) -> Bool {
        !text.isEmpty && !text.hasPrefix(".") && text.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || "._+-~".utf8.contains(byte)
        }
    }

    /// The first three numeric parts of the release: 6.1.0-56-amd64 gives (6, 1, 0).
    public var versionNumbers: (major: Int, minor: Int, patch: Int) {
        let numeric = release.split(whereSeparator: { !($0.isASCII && $0.isNumber) }).prefix(3).map { Int($0) ?? 0 }
        return (numeric.count > 0 ? numeric[0] : 0, numeric.count > 1 ? numeric[1] : 0, numeric.count > 2 ? numeric[2] : 0)
    }
}

/// A package named by a recipe, pinned by the crawl.
public struct PinnedPackage: Sendable, Hashable {
    public var name: String
    public var upstream: String
    public var suite: String?
    public var version: String?
    public var package: PackageReference
}

public struct Signing: Sendable, Hashable {
    public var moduleKey: String?
    public var repoKey: String?
}

public struct Publish: Sendable, Hashable {
    public var dir: String
    /// The repository's public base URL (`url:`), for the absolute URLs of `symbols/banners.json`.
    public var url: String? = nil
}
