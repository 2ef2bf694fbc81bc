import FarmEngine
import Foundation

extension Crawler {
    /// What a yum kernel's index entry cannot say: its kernel-devel is fetched (pinned by sha256),
    /// its own OpenPGP signature checked when the upstream has a keyring, and its release (the
    /// tree's name under /usr/src/kernels) and compiler read from the tree it holds. A kernel
    /// whose package fails is left out with a warning naming it. A kernel the manifest already
    /// lists with the same pin keeps its release and compiler without a download.
    func inspectYumKernels(_ found: [KernelName: Kernel]) async -> (kernels: [KernelName: Kernel], warnings: [String]) {
        var kernels = found
        var warnings: [String] = []
        var pending: [Kernel] = []
        for kernel in found.values where manifest.upstream(named: kernel.upstream)?.kind == .yum {
            if let old = manifest.kernels.first(where: { $0.upstream == kernel.upstream && $0.packages.first == kernel.packages.first }),
               old.compiler != nil {
                kernels[kernel.name] = nil
                var known = kernel
                (known.release, known.compiler) = (old.release, old.compiler)
                kernels[known.name] = known
            } else {
                pending.append(kernel)
            }
        }
        guard !pending.isEmpty else { return (kernels, warnings) }
        let directory = workDirectory + "/kernel-devel"
        let (manifest, downloader, objects) = (self.manifest, self.downloader, self.objects)
        let keyrings = Dictionary(uniqueKeysWithValues: manifest.upstreams.map { ($0.name, $0.keyring.map { resolvePath($0) }) })
        await withTaskGroup(of: (KernelName, Swift.Result<(release: String?, compiler: String?), Error>).self) { group in
            var queue = pending.sorted { $0.release < $1.release }[...]
            func next() {
                guard let kernel = queue.popFirst(), let upstream = manifest.upstream(named: kernel.upstream),
                      let package = kernel.packages.first else { return }
                group.addTask {
                    do {
                        let tree = try await Blocking.run {
                            try AtomicFile.makeDirectory(directory)
                            let source = YumRepository(mirror: upstream.mirror, mirrorlist: upstream.mirrorlist, keyring: nil)
                            let urls = try source.baseURLs(workDirectory: directory, downloader: downloader).map { base in
                                package.url.contains("://") ? package.url : base + "/" + package.url
                            }
                            let name = (package.url as NSString).lastPathComponent
                            // Into the store, as the apt crawl's headers go: the build's fetch task then downloads nothing.
                            let path = try Crawler.obtain(package, urls: urls, objects: objects, workDirectory: directory, downloader: downloader) { path in
                                if let keyring = keyrings[upstream.name] ?? nil {
                                    try RPMSignature.verify(packageAt: path, keyring: keyring, workDirectory: directory, name: name)
                                }
                            }
                            defer { if objects == nil { unlink(path) } }
                            return try RHELDiscovery.kernelTree(ofPackageAt: path, release: kernel.release)
                        }
                        return (kernel.name, .success(tree))
                    } catch {
                        return (kernel.name, .failure(error))
                    }
                }
            }
            for _ in 0..<4 { next() }
            for await (key, result) in group {
                let release = key.release
                switch result {
                case let .success(tree):
                    guard let name = tree.release, Kernel.isRelease(name) else {
                        warnings.append("\(release): its kernel-devel holds no tree under /usr/src/kernels; left out")
                        kernels.removeValue(forKey: key)
                        break
                    }
                    // The tree's name is what `uname -r` prints, whatever the package's version says.
                    guard var kernel = kernels.removeValue(forKey: key) else { break }
                    kernel.release = name
                    kernel.compiler = tree.compiler
                    kernels[kernel.name] = kernel
                    if tree.compiler == nil {
                        warnings.append("\(name): its kernel-devel's tree has neither CONFIG_CC_VERSION_TEXT in .config nor LINUX_COMPILER in"
                                        + " include/generated/compile.h; recorded without a compiler (set 'toolchain:' on it)")
                    }
                case let .failure(error):
                    warnings.append("\(release): \(error); left out")
                    kernels.removeValue(forKey: key)
                }
                next()
            }
        }
        return (kernels, warnings)
    }
}
