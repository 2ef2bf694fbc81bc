import FarmEngine
import Foundation

/// Ubuntu's kernels: the flavour headers `linux-headers-<abi>-<flavour>` (the architecture's,
/// with compiled `scripts/`) depend on the indep headers of the ABI, `linux-headers-<abi>` for the
/// main kernel or `linux-<derivative>-headers-<abi>` for a derivative (aws, hwe, azure...); there is
/// no `-common` and no `linux-kbuild`. The image is `linux-image-<release>` (signed) or
/// `linux-image-unsigned-<release>`, with its modules in `linux-modules-<release>` since 4.15. The
/// headers depend on no compiler package: the crawl reads the compiler from the headers.
public struct UbuntuDiscovery: KernelDiscovery {
    public init() {}

    public func isRelevant(_ name: String) -> Bool { name.hasPrefix("linux-") || name.hasSuffix("-dkms") }

    public var lookedFor: String { "linux-headers-<abi>-<flavour> of the architecture depending on linux-headers-<abi> or linux-<derivative>-headers-<abi>" }

    /// `linux-headers-4.4.0-210` or `linux-aws-headers-4.4.0-1128`: the ABI, if `name` is an indep headers package.
    static func indepABI(_ name: String) -> String? {
        guard let match = name.firstMatch(of: #/^linux-(?:[a-z0-9.+]+(?:-[a-z0-9.+]+)*-)?headers-([0-9]+(?:\.[0-9]+)*-[0-9]+(?:\.[0-9]+)*)$/#) else {
            return nil
        }
        return String(match.1)
    }

    public func discover(_ index: SuiteIndex, pool: [String: [IndexPackage]], manifest: Manifest) -> Discovery {
        var result = Discovery()
        for headers in index.packages where headers.name.hasPrefix("linux-headers-") && headers.architecture == index.architecture {
            let release = String(headers.name.dropFirst("linux-headers-".count))
            let dependencies = headers.dependencies.compactMap(\.first)
            guard let indep = dependencies.first(where: { dependency in
                UbuntuDiscovery.indepABI(dependency.name).map { release.hasPrefix($0 + "-") } ?? false
            }) else {
                // linux-headers-generic, linux-headers-generic-hwe-16.04: they name a flavour package.
                if !isMetaPackage(dependencies) { result.unmatched.append(headers.name) }
                continue
            }
            // Without a version, the indep package of the same build is the one of the same version.
            let wanted = indep.relation == nil ? (name: indep.name, relation: "=", version: headers.version) : indep
            guard let indepPackage = resolve(wanted, pool: pool, suite: index.suite, family: .ubuntu)
                    ?? resolve(indep, pool: pool, suite: index.suite, family: .ubuntu) else {
                result.warnings.append("\(release): \(indep.name) matching \(headers.name) \(headers.version) is in none of the crawled suites; left out")
                continue
            }
            let image = ["linux-image-\(release)", "linux-image-unsigned-\(release)"].lazy.compactMap { self.package($0, like: headers, pool: pool, suite: index.suite) }.first
            let modules = package("linux-modules-\(release)", like: headers, pool: pool, suite: index.suite)
            result.kernels.append(Kernel(release: release, upstream: index.upstream.name, family: .ubuntu, suite: index.suite,
                                         distribution: UbuntuDiscovery.distribution(index),
                                         version: headers.version, toolchain: nil, compiler: nil,
                                         packages: [headers.reference, indepPackage.reference],
                                         image: image?.reference, imageModules: image == nil ? nil : modules?.reference, lastSeen: nil,
                                         location: SourceLocation(file: manifest.path, line: 0, column: 0)))
        }
        return result
    }

    /// A package of the kernel's build: the same version as its headers if listed (the signed
    /// image has its own source package but the same version), else the newest.
    private func package(_ name: String, like headers: IndexPackage, pool: [String: [IndexPackage]], suite: String) -> IndexPackage? {
        resolve((name: name, relation: "=", version: headers.version), pool: pool, suite: suite, family: .ubuntu)
            ?? resolve((name: name, relation: nil, version: nil), pool: pool, suite: suite, family: .ubuntu)
    }

    /// `ubuntu-16.04` from the Release's `Version`, or from the codename where it has none.
    static func distribution(_ index: SuiteIndex) -> String? {
        if let version = index.version, let number = version.firstMatch(of: #/^[0-9]+\.[0-9]+/#) {
            return "ubuntu-" + number.output
        }
        let codenames = ["trusty": "14.04", "xenial": "16.04", "bionic": "18.04", "focal": "20.04", "jammy": "22.04", "noble": "24.04"]
        let base = (index.codename ?? index.suite).split(separator: "-").first.map(String.init) ?? ""
        return codenames[base].map { "ubuntu-\($0)" }
    }
}
