import FarmEngine

/// One kernel as the synthetic kinds see it: what a test's manifest kernel becomes, and what one
/// line of a plan file (`SyntheticPlan`) holds.
public struct SyntheticKernel: Sendable, Hashable {
    public struct Package: Sendable, Hashable {
        public var url: String
        public var sha256: Digest

        public init(url: String, sha256: Digest) {
            self.url = url
            self.sha256 = sha256
        }
    }

    public var release: String
    public var packages: [Package]
    public var toolchain: String
    /// Its compile fails (with a log), as a kernel whose headers are broken.
    public var fails: Bool

    public init(release: String, packages: [Package], toolchain: String, fails: Bool = false) {
        self.release = release
        self.packages = packages
        self.toolchain = toolchain
        self.fails = fails
    }

    /// `count` kernels with two pinned packages each, spread over `toolchains` toolchains; those
    /// whose index is in `failing` fail, and their headers' URL says `FAIL-` so a manifest of
    /// them (`SyntheticManifest`) marks them too.
    public static func numbered(_ count: Int, toolchains: Int = 3, failing: Set<Int> = []) -> [SyntheticKernel] {
        (0..<count).map { index in
            let release = "6.\(index / 1000).\(index % 1000)-\(index)-amd64"
            let marker = failing.contains(index) ? "FAIL-" : ""
            return SyntheticKernel(
                release: release,
                packages: [.init(url: "pool/main/l/linux/\(marker)linux-headers-\(release)_amd64.deb", sha256: SHA256.hash("headers \(index)")),
                           .init(url: "pool/main/l/linux/linux-kbuild-\(release)_amd64.deb", sha256: SHA256.hash("kbuild \(index)"))],
                toolchain: "toolchain-\(index % toolchains)",
                fails: failing.contains(index))
        }
    }
}
