import FarmEngine
import Foundation

extension Session {
    /// The graph of one kernel's symbol table alone (its image package's fetch task, then the
    /// profile task, and the types task when it needs one), whether or not the manifest has
    /// `profiles: true`: what `farm profile` builds with `buildOne`.
    public func profileGraph(_ kernel: Kernel) throws -> BuildGraph {
        var graph = BuildGraph()
        _ = try rules.planProfile(kernel, manifest: manifest, into: &graph)
        return graph
    }
}
