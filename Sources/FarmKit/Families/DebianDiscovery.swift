import FarmEngine
import Foundation

/// Debian's kernels: the arch headers package `linux-headers-<abi>-<flavour>` depends on the
/// common headers (`-common` or `-common-rt`), a `linux-kbuild-*` package and the compiler
/// (`linux-compiler-gcc-N-<arch>` up to 6.1, `gcc-N` since 6.12); the image is
/// `linux-image-<release>` (or `-unsigned`) of the same version.
public struct DebianDiscovery: KernelDiscovery {
    public init() {}

    public func isRelevant(_ name: String) -> Bool { name.hasPrefix("linux-") || name.hasSuffix("-dkms") }

    public var lookedFor: String { "linux-headers-<abi>-<flavour> of the architecture depending on linux-headers-<abi>-common and a linux-kbuild package" }

    public func discover(_ index: SuiteIndex, pool: [String: [IndexPackage]], manifest: Manifest) -> Discovery {
        var result = Discovery()
        for headers in index.packages where headers.name.hasPrefix("linux-headers-") && headers.architecture == index.architecture {
            let dependencies = headers.dependencies.compactMap(\.first)
            guard let common = dependencies.first(where: { $0.name.hasPrefix("linux-headers-") && $0.name.contains("-common") }) else {
                if !isMetaPackage(dependencies) { result.unmatched.append(headers.name) }
                continue
            }
            let release = String(headers.name.dropFirst("linux-headers-".count))
            guard let kbuildDependency = dependencies.first(where: { $0.name.hasPrefix("linux-kbuild-") }) else {
                result.warnings.append("\(release): \(headers.name) depends on no linux-kbuild package; left out")
                continue
            }
            let compiler = dependencies.first { $0.name.hasPrefix("linux-compiler-gcc-") || $0.name.range(of: #"^gcc-[0-9]+$"#, options: .regularExpression) != nil }
            guard let commonPackage = resolve(common, pool: pool, suite: index.suite, family: .debian),
                  let kbuild = resolve(kbuildDependency, pool: pool, suite: index.suite, family: .debian) else {
                result.warnings.append("\(release): \(common.name) or \(kbuildDependency.name) matching \(headers.name) \(headers.version) is in none of the crawled suites; left out")
                continue
            }
            let image = ["linux-image-\(release)", "linux-image-\(release)-unsigned"].lazy.compactMap {
                resolve((name: $0, relation: "=", version: headers.version), pool: pool, suite: index.suite, family: .debian)
            }.first
            result.kernels.append(Kernel(release: release, upstream: index.upstream.name, family: .debian, suite: index.suite,
                                         distribution: DebianDiscovery.distribution(index),
                                         version: headers.version, toolchain: nil, compiler: compiler?.name,
                                         packages: [headers.reference, commonPackage.reference, kbuild.reference],
                                         image: image?.reference, lastSeen: nil,
                                         location: SourceLocation(file: manifest.path, line: 0, column: 0)))
        }
        return result
    }

    /// `debian-12` from the Release's `Version` (12.12) or, where it has none (backports), from
    /// the codename.
    static func distribution(_ index: SuiteIndex) -> String? {
        if let major = index.version?.split(separator: ".").first, Int(major) != nil { return "debian-\(major)" }
        let codenames = ["buster": 10, "bullseye": 11, "bookworm": 12, "trixie": 13, "forky": 14]
        let base = (index.codename ?? index.suite).split(separator: "-").first.map(String.init) ?? ""
        return codenames[base].map { "debian-\($0)" }
    }
}
