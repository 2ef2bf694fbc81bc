import Foundation

extension Session {
    /// Builds what a lab boots for `release` (its image package fetched through the fetch task
    /// and the CAS, then the initramfs task) and returns the two files' paths in the store.
    public func labImage(release: String, options: BuildOptions, reporter: any BuildReporter) async throws -> (kernel: String, initramfs: String) {
        guard let kernel = manifest.kernels.first(where: { $0.release == release }) else {
            let examples = manifest.kernels.suffix(3).map(\.release).joined(separator: ", ")
            throw PlanError("no kernel \(release) in \(manifest.path) (e.g. \(examples)); 'farm crawl' lists them")
        }
        guard let image = kernel.image else {
            throw PlanError("\(manifest.path):\(kernel.location.line):\(kernel.location.column): kernel \(release) has no 'image:' package pinned;"
                            + " run 'farm crawl' (an image no mirror serves is left out)")
        }
        let mirrors = MirrorResolver(manifest: manifest, aptRoot: "/")
        var graph = BuildGraph()
        let (urls, reason) = mirrors.urls(for: image, upstream: kernel.upstream, suite: kernel.suite)
        let fetch = FetchAction(package: image, urls: urls, reason: reason)
        let fetched = graph.add(fetch, label: fetch.file)
        let node = graph.add(try InitramfsAction(release: release), label: release, dependencies: [.init(role: "image", node: fetched)])
        let cache = try openCache()
        defer { cache.close() }
        let summary = try await Builder(cache: cache, options: options, reporter: reporter).build(graph, collecting: [node])
        guard let outputs = summary.collected[node], let vmlinuz = outputs["kernel"], let initramfs = outputs["initramfs"] else {
            throw LabError("the lab's kernel and initramfs for \(release) could not be built; 'farm log initramfs:\(release)' says why")
        }
        return (try cache.objects.verifiedPath(of: vmlinuz), try cache.objects.verifiedPath(of: initramfs))
    }
}
