import FarmEngine
import Foundation

/// The RHEL family's kernels (CentOS, Alma, Rocky, Oracle, Fedora, Amazon Linux): one
/// `kernel-devel` per kernel holds the prepared tree `/usr/src/kernels/<release>/`, where the
/// release is `<version>-<release>.<arch>` (3.10.0-1160.el7.x86_64). Oracle's UEK packages the
/// same way as `kernel-uek-devel`. The image is `kernel` (el7, Amazon Linux) or, from el8 on,
/// `kernel-core` of the same version: it holds vmlinuz and the modules a boot needs
/// (`kernel-modules` only adds drivers a lab does not use). kernel-devel depends on no
/// compiler: the crawl reads it from the package's `.config` or `compile.h`.
public struct RHELDiscovery: KernelDiscovery {
    public init() {}

    public var lookedFor: String { "kernel-devel packages" }

    public func isRelevant(_ name: String) -> Bool { name.hasPrefix("kernel") }

    /// The headers packages farm reads, with the image packages of their flavour in preference order.
    static let flavours: [(devel: String, images: [String])] = [
        ("kernel-devel", ["kernel-core", "kernel"]),
        ("kernel-uek-devel", ["kernel-uek-core", "kernel-uek"]),
    ]

    public func discover(_ index: SuiteIndex, pool: [String: [IndexPackage]], manifest: Manifest) -> Discovery {
        var result = Discovery()
        let matched = Set(RHELDiscovery.flavours.map(\.devel))
        for package in index.packages where package.architecture == index.architecture {
            guard let flavour = RHELDiscovery.flavours.first(where: { $0.devel == package.name }) else {
                // A debug, rt or 64k kernel's tree is named differently (…x86_64+debug); say so rather than guess.
                if package.name.hasSuffix("-devel"), !matched.contains(package.name), package.name != "kernel-tools-libs-devel" {
                    result.unmatched.append("\(package.name)-\(package.version).\(package.architecture)")
                }
                continue
            }
            let release = RHELDiscovery.release(of: package)
            guard Kernel.isRelease(release) else {
                result.warnings.append("\(package.name) \(package.version): '\(release)' is not a kernel release; left out")
                continue
            }
            let image = flavour.images.lazy.compactMap { name in
                pool[name]?.filter { $0.architecture == package.architecture && RPMVersion.compare($0.version, package.version) == 0 }
                    .sorted { a, _ in a.suite == index.suite }.first
            }.first
            result.kernels.append(Kernel(release: release, upstream: index.upstream.name, family: .rhel, suite: index.suite,
                                         distribution: index.upstream.distribution ?? RHELDiscovery.distribution(release: release),
                                         version: package.version, toolchain: nil, compiler: nil,
                                         packages: [package.reference], image: image?.reference, lastSeen: nil,
                                         location: SourceLocation(file: manifest.path, line: 0, column: 0)))
        }
        return result
    }

    /// `uname -r` of a kernel-devel: its version and release without the epoch, and its arch.
    static func release(of package: IndexPackage) -> String {
        let version = package.version.split(separator: ":", maxSplits: 1).last.map(String.init) ?? package.version
        return "\(version).\(package.architecture)"
    }

    /// The distribution a release's dist tag names: `el7` is `rhel-7` (any rebuild of RHEL 7;
    /// an upstream's `distribution:` says `centos-7`), `el8_10` `rhel-8`, `amzn2` `amzn-2`,
    /// `amzn2023` `amzn-2023`, `fc40` `fedora-40`, `el8uek` `rhel-8`.
    static func distribution(release: String) -> String? {
        for part in release.split(separator: ".").reversed() {
            for (tag, name) in [("el", "rhel"), ("amzn", "amzn"), ("fc", "fedora")] where part.hasPrefix(tag) {
                let number = part.dropFirst(tag.count).prefix { $0.isASCII && $0.isNumber }
                if !number.isEmpty { return "\(name)-\(number)" }
            }
        }
        return nil
    }
}

extension RHELDiscovery {
    /// The tree a kernel-devel package holds under `/usr/src/kernels` and the compiler it was
    /// built with, as toolchains name it (`gcc-4.8`, `gcc-12`): from `.config`'s
    /// `CONFIG_CC_VERSION_TEXT`, else from `include/generated/compile.h`'s `LINUX_COMPILER` (3.10
    /// and 4.x kernels have no CONFIG_CC_VERSION_TEXT). The tree's name is the release, as
    /// kernel-packer takes it; `release` (from the package's version) is preferred when the
    /// package holds several trees. Reads the payload without installing anything.
    // The crawl's one place that reads a compiler; the lead unifies it with the shared reader.
    static func kernelTree(ofPackageAt path: String, release: String) throws -> (release: String?, compiler: String?) {
        let reader = try Archive.Reader(path: path)
        var configs: [String: String] = [:], compileHs: [String: String] = [:], trees: [String] = []
        while let entry = try reader.next() {
            var name = Substring(entry.path)
            while name.hasPrefix("./") || name.hasPrefix("/") { name = name.drop { $0 == "." || $0 == "/" } }
            guard name.hasPrefix("usr/src/kernels/") else { continue }
            let parts = name.dropFirst("usr/src/kernels/".count).split(separator: "/", maxSplits: 1).map(String.init)
            guard let tree = parts.first, !tree.isEmpty else { continue }
            if !trees.contains(tree) { trees.append(tree) }
            guard entry.type == .regular, parts.count == 2 else { continue }
            if parts[1] == ".config" {
                configs[tree] = String(decoding: try reader.readData(limit: 8 << 20), as: UTF8.self)
            } else if parts[1] == "include/generated/compile.h" {
                compileHs[tree] = String(decoding: try reader.readData(limit: 1 << 20), as: UTF8.self)
            }
        }
        let tree = trees.contains(release) ? release : trees.sorted().first
        guard let tree else { return (nil, nil) }
        return (tree, compiler(config: configs[tree], compileH: compileHs[tree]))
    }

    /// The compiler a kernel tree's `.config` or, failing that, its `compile.h` names (`gcc-4.8`, `gcc-12`).
    static func compiler(config: String?, compileH: String?) -> String? {
        if let text = config.flatMap({ KernelConfig.parse($0).values["CONFIG_CC_VERSION_TEXT"] }),
           let compiler = KernelCompiler(versionText: text) {
            return compiler.name
        }
        return compileH.flatMap(KernelCompiler.linuxCompiler(inCompileH:)).flatMap(KernelCompiler.init(versionText:))?.name
    }
}
