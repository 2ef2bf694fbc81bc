import FarmEngine
import Foundation

/// `farm crawl`: reads each apt upstream's verified indices and finds every kernel that has
/// headers, with the packages that build modules for it pinned by sha256.
public struct Crawler: Sendable {
    public let manifest: Manifest
    public let recipes: RecipeBook
    /// The root whose `etc/apt` holds the host's sources (`/`; a directory in tests).
    public let aptRoot: String
    public let workDirectory: String
    public let downloader: Downloader
    /// The cache's CAS: a package the crawl downloads (to read a kernel's compiler) is kept there,
    /// so the build's fetch task finds it. Nil: downloads stay in the work directory.
    public let objects: ContentStore?
    /// What the last crawls learnt (indices by Release digest, pins found served); nil: ask everything.
    public let memory: CrawlMemory?

    public init(manifest: Manifest, recipes: RecipeBook, aptRoot: String = "/", workDirectory: String,
                downloader: Downloader = Downloader(), objects: ContentStore? = nil, memory: CrawlMemory? = nil) {
        self.memory = memory
        self.manifest = manifest
        self.recipes = recipes
        self.aptRoot = aptRoot
        self.workDirectory = workDirectory
        self.downloader = downloader
        self.objects = objects
    }

    public struct Result: Sendable {
        public var kernels: [Kernel]
        public var packages: [PinnedPackage]
        /// Suites that could not be read, or were read and held no kernel, as `upstream/suite: why`;
        /// their kernels were kept.
        public var failures: [String]
        /// Kernels a dependency could not be found for, with the reason; they were left out.
        public var warnings: [String]
        /// Header-like packages no rule of their upstream's family matched, as `upstream/suite: name`.
        public var unmatched: [String]
        public var added: [KernelName]
        /// Pruned (`--prune`): gone from a suite that was read.
        public var removed: [KernelName]
        /// Gone from their suite, or their suite failed; kept and marked `last-seen`.
        public var missing: [KernelName]
        /// Listed upstream, but a header package of theirs no mirror serves; left out.
        public var unserved: [KernelName]
    }

    public func crawl(prune: Bool, now: Date = Date(), log: @escaping @Sendable (String) -> Void = { _ in }) async throws -> Result {
        let sources = try? AptSources.load(root: aptRoot)
        var jobs: [(upstream: Upstream, suite: String, component: String, architecture: String, archive: any PackageIndexSource)] = []
        var failures: [String] = []
        for upstream in manifest.upstreams {
            for suite in upstream.suites {
                do {
                    let archive = try self.indexSource(for: upstream, suite: suite, sources: sources)
                    for component in upstream.components {
                        for architecture in upstream.architectures {
                            jobs.append((upstream, suite, component, architecture, archive))
                        }
                    }
                } catch {
                    failures.append("\(upstream.name)/\(suite): \(error)")
                }
            }
        }

        try AtomicFile.makeDirectory(workDirectory)
        var indices: [SuiteIndex] = []
        try await withThrowingTaskGroup(of: (Int, Swift.Result<SuiteIndex, Error>).self) { group in
            for (number, job) in jobs.enumerated() {
                group.addTask { [workDirectory, downloader] in
                    do {
                        let index = try await Blocking.run {
                            let directory = workDirectory + "/\(number)"
                            try AtomicFile.makeDirectory(directory)
                            let discovery = job.upstream.family.discovery
                            return try job.archive.index(of: job.upstream, suite: job.suite, component: job.component,
                                                         architecture: job.architecture, workDirectory: directory,
                                                         downloader: downloader, relevant: { discovery.isRelevant($0) })
                        }
                        return (number, .success(index))
                    } catch {
                        return (number, .failure(error))
                    }
                }
            }
            var collected: [(Int, SuiteIndex)] = []
            for try await (number, result) in group {
                let job = jobs[number]
                switch result {
                case let .success(index):
                    log("read \(job.upstream.name)/\(job.suite) \(job.component)/\(job.architecture): \(index.packages.count) kernel-related packages\n")
                    collected.append((number, index))
                case let .failure(error):
                    failures.append("\(job.upstream.name)/\(job.suite): \(error)")
                }
            }
            indices = collected.sorted { $0.0 < $1.0 }.map(\.1)
        }

        var failedSuites = Set(failures.map { String($0.prefix(while: { $0 != ":" })) })
        var warnings: [String] = []
        var unmatched: [String] = []
        var found: [KernelName: Kernel] = [:]
        var pinned: [PinnedPackage] = []
        for upstream in manifest.upstreams {
            let mine = indices.filter { $0.upstream.name == upstream.name }
            let pool = Dictionary(grouping: mine.flatMap(\.packages), by: \.name)
            var kernelsBySuite: [String: Int] = [:]
            for index in mine {
                let discovery = upstream.family.discovery.discover(index, pool: pool, manifest: manifest)
                warnings += index.warnings + discovery.warnings
                unmatched += discovery.unmatched.map { "\(upstream.name)/\(index.suite): \($0)" }
                kernelsBySuite[index.suite, default: 0] += discovery.kernels.count
                for kernel in discovery.kernels {
                    if let existing = found[kernel.name], !prefer(kernel, over: existing, suites: upstream.suites) { continue }
                    found[kernel.name] = kernel
                }
            }
            // A suite that reads but holds no kernel is a wrong suite, component or family, never
            // "nothing new": it fails the crawl, and what the manifest lists of it stays.
            for suite in upstream.suites where kernelsBySuite[suite] == 0 && !failedSuites.contains("\(upstream.name)/\(suite)") {
                let unmatchedCount = unmatched.filter { $0.hasPrefix("\(upstream.name)/\(suite): ") }.count
                let skipped = unmatchedCount == 0 ? "" : "; \(unmatchedCount) headers package(s) matched no rule (listed as unmatched)"
                let place = upstream.kind == .apt ? "in \(upstream.components.joined(separator: ", ")) " : ""
                let check = upstream.kind == .apt ? "the suite, the components" : "'mirror', 'suites'"
                failures.append("\(upstream.name)/\(suite): read, but no kernel found \(place)(\(upstream.architectures.joined(separator: ", "))):"
                                + " looked for \(upstream.family.discovery.lookedFor) (family \(upstream.family.rawValue))\(skipped);"
                                + " check \(check) and 'family:' in the manifest")
                failedSuites.insert("\(upstream.name)/\(suite)")
            }
            for name in recipePackages() {
                guard let candidates = pool[name], let best = candidates.max(by: { upstream.family.compareVersions($0.version, $1.version) < 0 }) else { continue }
                pinned.append(PinnedPackage(name: name, upstream: upstream.name, suite: best.suite, version: best.version, package: best.reference))
            }
        }

        let inspected = await inspectYumKernels(found)
        found = inspected.kernels
        warnings += inspected.warnings

        // A pin is only worth having if a mirror serves the file: indices can list packages
        // the mirror no longer has. Kernels with such a package are left out, with a warning.
        let resolver = MirrorResolver(manifest: manifest, aptRoot: aptRoot)
        var candidates: [String: [String]] = [:]
        var pins: [String: PackageReference] = [:]
        // A pin found served within the last day is not asked again, nor one not served within the hour.
        let known = memory?.mirrors() ?? CrawlMemory.Mirrors()
        var knownUnserved = Set<String>()
        for kernel in found.values {
            for package in kernel.packages + [kernel.image, kernel.imageModules].compactMap({ $0 }) {
                switch known.known(package, now: now) {
                case true?: continue
                case false?: knownUnserved.insert(package.url); continue
                case nil: break
                }
                let urls = resolver.urls(for: package, upstream: kernel.upstream, suite: kernel.suite).urls
                // A yum mirrorlist is read when fetching; its kernel-devel was fetched by the crawl already.
                if urls.isEmpty, manifest.upstream(named: kernel.upstream)?.mirrorlist != nil { continue }
                candidates[package.url] = urls
                pins[package.url] = package
            }
        }
        let asked = await Crawler.unserved(candidates)
        memory?.remember(served: pins.filter { !asked.contains($0.key) }.map(\.value),
                         unserved: pins.filter { asked.contains($0.key) }.map(\.value), now: now)
        let unservedFiles = asked.union(knownUnserved)
        var unserved: [KernelName] = []
        for (identity, kernel) in found {
            let missingFiles = kernel.packages.map(\.url).filter(unservedFiles.contains)
            let image = [kernel.image, kernel.imageModules].compactMap { $0 }.first { unservedFiles.contains($0.url) }
            if !missingFiles.isEmpty {
                warnings.append("\(identity.release): listed by \(kernel.upstream)/\(kernel.suite ?? "?") but no mirror serves \(missingFiles.map { ($0 as NSString).lastPathComponent }.joined(separator: ", ")); left out")
                found.removeValue(forKey: identity)
                unserved.append(identity)
            } else if let image {
                // Modules build without the image; only the lab needs it.
                warnings.append("\(identity.release): no mirror serves \((image.url as NSString).lastPathComponent); recorded without an image")
                found[identity]?.image = nil
                found[identity]?.imageModules = nil
            }
        }

        // Merge with what the manifest lists: found kernels replace their old entries (keeping a
        // hand-set toolchain, and the compiler read from the same headers), kernels not found stay
        // unless pruned from a suite that was read.
        let fresh = Set(found.keys)
        var kernels: [Kernel] = []
        var added: [KernelName] = [], removed: [KernelName] = [], missing: [KernelName] = []
        let crawled = Set(manifest.upstreams.map(\.name))
        let stamp = ISO8601DateFormatter().string(from: now)
        for old in manifest.kernels {
            if var new = found.removeValue(forKey: old.name) {
                new.toolchain = old.toolchain ?? new.toolchain
                if new.compiler == nil, old.packages.first == new.packages.first { new.compiler = old.compiler }
                kernels.append(new)
            } else if crawled.contains(old.upstream) {
                let suiteRead = !failedSuites.contains("\(old.upstream)/\(old.suite ?? "")")
                if prune, suiteRead {
                    removed.append(old.name)
                } else {
                    var kept = old
                    kept.lastSeen = old.lastSeen ?? stamp
                    missing.append(old.name)
                    kernels.append(kept)
                }
            } else {
                kernels.append(old)
            }
        }
        for kernel in found.values {
            added.append(kernel.name)
            kernels.append(kernel)
        }
        kernels = await readCompilers(of: kernels, only: fresh, resolver: resolver, warnings: &warnings, log: log)
        kernels.sort { $0.name < $1.name }
        // Pins for recipe packages from suites that failed stay as they were.
        for old in manifest.packages where !pinned.contains(where: { $0.name == old.name }) { pinned.append(old) }
        pinned.sort { $0.name < $1.name }
        return Result(kernels: kernels, packages: pinned, failures: failures.sorted(), warnings: warnings, unmatched: unmatched.sorted(),
                      added: added.sorted(), removed: removed, missing: missing, unserved: unserved.sorted())
    }

    /// Kernels whose index names no compiler (Ubuntu's headers depend on none) get it from their
    /// headers package, downloaded for that (four at a time) and kept in the CAS for the build.
    /// Only kernels of this crawl (`only`) are read; a manifest's kernel with the same headers pin
    /// kept its compiler in the merge. A package that cannot be read leaves the compiler unset, with a warning.
    func readCompilers(of kernels: [Kernel], only: Set<KernelName>, resolver: MirrorResolver, warnings: inout [String],
                       log: @escaping @Sendable (String) -> Void) async -> [Kernel] {
        let wanted = kernels.indices.filter { kernels[$0].compiler == nil && only.contains(kernels[$0].name) && !kernels[$0].packages.isEmpty }
        var result = kernels
        await withTaskGroup(of: (Int, Swift.Result<String?, Error>).self) { group in
            var pending = wanted[...]
            func next() {
                guard let number = pending.popFirst() else { return }
                let kernel = kernels[number]
                let headers = kernel.packages[0]
                let urls = resolver.urls(for: headers, upstream: kernel.upstream, suite: kernel.suite).urls
                group.addTask { [objects, workDirectory, downloader] in
                    do {
                        let compiler = try await Blocking.run {
                            let path = try Crawler.obtain(headers, urls: urls, objects: objects, workDirectory: workDirectory, downloader: downloader)
                            return try Crawler.compiler(ofPackageAt: path)
                        }
                        return (number, .success(compiler))
                    } catch {
                        return (number, .failure(error))
                    }
                }
            }
            for _ in 0..<4 { next() }
            for await (number, outcome) in group {
                let kernel = kernels[number]
                switch outcome {
                case let .success(compiler?):
                    log("\(kernel.name): compiler \(compiler), read from \((kernel.packages[0].url as NSString).lastPathComponent)\n")
                    result[number].compiler = compiler
                case .success(nil):
                    warnings.append("\(kernel.release): \((kernel.packages[0].url as NSString).lastPathComponent) names no compiler (no CONFIG_CC_VERSION_TEXT in .config, no LINUX_COMPILER in include/generated/compile.h); set 'compiler:' or 'toolchain:' for it in the manifest")
                case let .failure(error):
                    warnings.append("\(kernel.release): its compiler could not be read from its headers: \(error); the next crawl tries again")
                }
                next()
            }
        }
        return result
    }

    /// The pinned package's path: from the CAS if there, else downloaded (and put there).
    /// `check` (an RPM's own signature) runs before a download is stored: a package it refuses
    /// never enters the store.
    static func obtain(_ package: PackageReference, urls: [String], objects: ContentStore?, workDirectory: String, downloader: Downloader,
                       check: ((String) throws -> Void)? = nil) throws -> String {
        if let objects, objects.isPresent(package.sha256), let path = try? objects.verifiedPath(of: package.sha256) {
            try check?(path)
            return path
        }
        let partial = (objects?.temporaryPath("crawl") ?? workDirectory + "/package-\(package.sha256.hex)")
        try downloader.fetchPinned(urls: urls, to: partial, sha256: package.sha256, size: package.size)
        do { try check?(partial) } catch {
            unlink(partial)
            throw error
        }
        guard let objects else { return partial }
        return objects.path(of: try objects.adopt(partial).digest)
    }

    /// The compiler a kernel was built with, read from its headers package: `gcc-N` for gcc 5
    /// and newer, `gcc-N.M` before (gcc 4.8 and 4.9 are distinct packages). Blocking.
    public static func compiler(ofPackageAt path: String) throws -> String? {
        try KernelCompiler.read(package: path)?.compiler.name
    }

    /// The archive paths every mirror says it does not have, checked eight at a time. Only a
    /// definite "not found" counts, so a slow mirror never makes a crawl drop kernels.
    static func unserved(_ candidates: [String: [String]]) async -> Set<String> {
        await withTaskGroup(of: (String, Bool).self) { group in
            var pending = candidates.sorted { $0.key < $1.key }[...]
            var missing = Set<String>()
            func next() {
                guard let (path, urls) = pending.popFirst() else { return }
                group.addTask {
                    let served = (try? await Blocking.run { urls.contains { HTTPClient.exists($0) } }) ?? true
                    return (path, served)
                }
            }
            for _ in 0..<8 { next() }
            for await (path, served) in group {
                if !served { missing.insert(path) }
                next()
            }
            return missing
        }
    }

    private func recipePackages() -> [String] {
        recipes.order.compactMap { name in
            if case let .package(package) = recipes.recipes[name]?.source { return package }
            return nil
        }
    }

    /// The same release in two suites (a point release and its security update): the newer
    /// package wins, then the suite listed first.
    private func prefer(_ candidate: Kernel, over existing: Kernel, suites: [String]) -> Bool {
        let order = candidate.family.compareVersions(candidate.version ?? "", existing.version ?? "")
        if order != 0 { return order > 0 }
        return (suites.firstIndex(of: candidate.suite ?? "") ?? .max) < (suites.firstIndex(of: existing.suite ?? "") ?? .max)
    }

    /// Where one suite of an upstream is read from, by the upstream's index kind.
    func indexSource(for upstream: Upstream, suite: String, sources: AptSources?) throws -> any PackageIndexSource {
        switch upstream.kind {
        case .apt:
            var archive = try archive(for: upstream, suite: suite, sources: sources)
            archive.memory = memory
            return archive
        case .yum:
            return YumRepository(mirror: upstream.mirror, mirrorlist: upstream.mirrorlist, keyring: upstream.keyring.map { resolvePath($0) })
        }
    }

    /// The archive and keyrings for one suite of an upstream.
    func archive(for upstream: Upstream, suite: String, sources: AptSources?) throws -> AptArchive {
        if upstream.mirror != "apt" {
            guard let keyring = upstream.keyring.map({ resolvePath($0) }) ?? upstream.family.defaultKeyring else {
                throw FarmError.badInput("upstream '\(upstream.name)' names a mirror URL but no 'keyring:' to check it with; add one")
            }
            return AptArchive(baseURL: upstream.mirror, keyrings: [keyring])
        }
        guard let sources else {
            throw FarmError.environment("cannot read the host's apt sources under \(aptRoot)etc/apt; give the upstream an explicit 'mirror: URL'")
        }
        let entry = try sources.entry(for: suite)
        if let keyring = upstream.keyring { return AptArchive(baseURL: entry.uri, keyrings: [resolvePath(keyring)]) }
        if let signedBy = entry.signedBy {
            if signedBy.contains("BEGIN PGP PUBLIC KEY BLOCK") {
                // An inline key in a deb822 source: keep it as a file for gpgv.
                let path = workDirectory + "/inline-\(SHA256.hash(signedBy).short).asc"
                try AtomicFile.makeDirectory(workDirectory)
                let text = signedBy.split(separator: "\n").map { $0 == "." ? "" : String($0) }.joined(separator: "\n")
                try AtomicFile.write(Data(text.utf8), to: path, sync: false)
                return AptArchive(baseURL: entry.uri, keyrings: [path])
            }
            return AptArchive(baseURL: entry.uri, keyrings: signedBy.split(separator: " ").map { resolvePath(String($0), base: aptRoot) })
        }
        // No Signed-By: apt trusts the keyrings in trusted.gpg.d, so does farm.
        let directory = aptRoot + (aptRoot.hasSuffix("/") ? "" : "/") + "etc/apt/trusted.gpg.d"
        let keyrings = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".gpg") || $0.hasSuffix(".asc") }.sorted().map { directory + "/" + $0 }
        guard !keyrings.isEmpty else {
            throw FarmError.environment("\(entry.file): the entry for \(suite) has no Signed-By and \(directory) holds no keyring; add 'keyring:' to the upstream in the manifest")
        }
        return AptArchive(baseURL: entry.uri, keyrings: keyrings)
    }

    func resolvePath(_ path: String, base: String? = nil) -> String {
        if path.hasPrefix("/") {
            guard let base, base != "/" else { return path }
            return (base.hasSuffix("/") ? String(base.dropLast()) : base) + path
        }
        return manifest.directory + "/" + path
    }
}

extension Crawler.Result {
    /// `farm crawl --json`: one object. Kernels are `{"upstream", "release"}`; the lists are
    /// sorted; `changed` says whether the manifest was rewritten.
    public func json(manifest: String, changed: Bool) -> Data {
        func kernels(_ list: [KernelName]) -> [[String: String]] { list.map { ["upstream": $0.upstream, "release": $0.release] } }
        let object: [String: Any] = [
            "manifest": manifest, "changed": changed, "kernels": self.kernels.count, "packages": packages.count,
            "added": kernels(added), "pruned": kernels(removed), "missing": kernels(missing), "unserved": kernels(unserved),
            "warnings": warnings, "unmatched": unmatched, "failures": failures,
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    }
}

extension Crawler {
    /// Crawls for the manifest at `path` and rewrites its `packages:` and `kernels:` sections;
    /// the file is replaced atomically, and not at all when nothing changed.
    public static func updateManifest(at path: String, cacheDirectory: String, prune: Bool, aptRoot: String = "/",
                                      log: @escaping @Sendable (String) -> Void = { _ in }) async throws -> (result: Result, changed: Bool) {
        let manifest = try ManifestLoader.load(path: path)
        let recipes = try RecipeBook.load(for: manifest)
        let work = cacheDirectory + "/tmp/crawl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: work) }
        let crawler = Crawler(manifest: manifest, recipes: recipes, aptRoot: aptRoot, workDirectory: work,
                              objects: try ContentStore(root: cacheDirectory + "/cas"),
                              memory: CrawlMemory(directory: cacheDirectory + "/crawl"))
        let result = try await crawler.crawl(prune: prune, log: log)

        let original = try String(contentsOfFile: path, encoding: .utf8)
        var text = ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: result.kernels), in: original)
        if !result.packages.isEmpty || manifest.packages.count > 0 {
            text = ManifestWriter.replacing(section: "packages", with: ManifestWriter.render(packages: result.packages), in: text, before: "kernels")
        }
        guard text != original else { return (result, false) }
        // What is written must read back: a crawl never leaves a manifest farm refuses.
        _ = try ManifestLoader.parse(text, path: path)
        try AtomicFile.write(Data(text.utf8), to: path)
        return (result, true)
    }
}
