import FarmEngine
import Foundation

/// Ubuntu's kernels. Not written yet: every headers package is reported by name as unmatched,
/// so a crawl of an Ubuntu upstream says what it did not take instead of finding nothing silently.
public struct UbuntuDiscovery: KernelDiscovery {
    public init() {}

    public func isRelevant(_ name: String) -> Bool { name.hasPrefix("linux-") || name.hasSuffix("-dkms") }

    public func discover(_ index: SuiteIndex, pool: [String: [IndexPackage]], manifest: Manifest) -> Discovery {
        var result = Discovery()
        result.unmatched = index.packages.filter { $0.name.hasPrefix("linux-headers-") && $0.architecture == index.architecture }.map(\.name)
        return result
    }
}
