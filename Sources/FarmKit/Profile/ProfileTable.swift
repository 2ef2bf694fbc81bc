import FarmEngine
import Foundation

extension Session {
    /// Builds `release`'s symbol table (its image package through the fetch task and the CAS, then
    /// the profile task) and returns the table's path in the store and its published file name.
    public func profileTable(release: String, options: BuildOptions, reporter: any BuildReporter) async throws -> (path: String, name: String) {
        let kernel = try self.kernel(release)
        var graph = BuildGraph()
        let node = try rules.planProfile(kernel, manifest: manifest, into: &graph)
        let cache = try openCache()
        defer { cache.close() }
        let summary = try await Builder(cache: cache, options: options, reporter: reporter).build(graph, collecting: [node])
        guard let table = summary.collected[node]?["table"] else {
            throw FarmError("the symbol table of \(kernel.name) could not be built; 'farm log \(FarmTask.profile(kernel: kernel.name))' says why")
        }
        return (try cache.objects.verifiedPath(of: table), ProfileAction.fileName(for: kernel))
    }
}
