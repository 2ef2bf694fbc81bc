import FarmEngine
import Foundation

extension Session {
    /// Builds what a lab boots for `release` (its image package fetched through the fetch task
    /// and the CAS, then the initramfs task) and returns the two files' paths in the store.
    public func labImage(release: String, options: BuildOptions, reporter: any BuildReporter) async throws -> (kernel: String, initramfs: String) {
        let kernel = try self.kernel(release)
        var graph = BuildGraph()
        let node = try rules.planLab(kernel, manifest: manifest, into: &graph)
        let cache = try openCache()
        defer { cache.close() }
        let summary = try await Builder(cache: cache, options: options, reporter: reporter).build(graph, collecting: [node])
        guard let outputs = summary.collected[node], let vmlinuz = outputs["kernel"], let initramfs = outputs["initramfs"] else {
            throw FarmError("the lab's kernel and initramfs for \(release) could not be built; 'farm log \(FarmTask.initramfs(kernel: kernel.name))' says why")
        }
        return (try cache.objects.verifiedPath(of: vmlinuz), try cache.objects.verifiedPath(of: initramfs))
    }
}
