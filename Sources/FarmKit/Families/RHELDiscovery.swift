import FarmEngine
import Foundation

/// The RHEL family's kernels. Not written yet: every `kernel-devel` is reported by name as unmatched.
public struct RHELDiscovery: KernelDiscovery {
    public init() {}

    public func isRelevant(_ name: String) -> Bool { name.hasPrefix("kernel") }

    public func discover(_ index: SuiteIndex, pool: [String: [IndexPackage]], manifest: Manifest) -> Discovery {
        var result = Discovery()
        result.unmatched = index.packages.filter { $0.name.hasPrefix("kernel-devel") }.map(\.name)
        return result
    }
}
