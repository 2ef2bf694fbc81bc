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

    public init(manifest: Manifest, recipes: RecipeBook, aptRoot: String = "/", workDirectory: String,
                downloader: Downloader = Downloader()) {
        self.manifest = manifest
        self.recipes = recipes
        self.aptRoot = aptRoot
        self.workDirectory = workDirectory
        self.downloader = downloader
    }

    public struct Result: Sendable {
        public var kernels: [Kernel]
        public var packages: [PinnedPackage]
        /// Suites that could not be read, as `upstream/suite: why`; their kernels were kept.
        public var failures: [String]
        /// Kernels a dependency could not be found for, with the reason; they were left out.
        public var warnings: [String]
        /// Header-like packages no rule of their upstream's family matched, as `upstream/suite: name`.
        public var unmatched: [String]
        public var added: [String]
        public var removed: [String]
        public var missing: [String]
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

        let failedSuites = Set(failures.map { String($0.prefix(while: { $0 != ":" })) })
        var warnings: [String] = []
        var unmatched: [String] = []
        var found: [String: Kernel] = [:]
        var pinned: [PinnedPackage] = []
        for upstream in manifest.upstreams {
            let mine = indices.filter { $0.upstream.name == upstream.name }
            let pool = Dictionary(grouping: mine.flatMap(\.packages), by: \.name)
            for index in mine {
                let discovery = upstream.family.discovery.discover(index, pool: pool, manifest: manifest)
                warnings += index.warnings + discovery.warnings
                // yum's share of "a readable suite with no kernel fails the crawl".
                if upstream.kind == .yum, discovery.kernels.isEmpty {
                    failures.append("\(upstream.name)/\(index.suite): the repository lists no kernel (no kernel-devel package); check 'mirror' and 'suites' of the upstream")
                }
                unmatched += discovery.unmatched.map { "\(upstream.name)/\(index.suite): \($0)" }
                for kernel in discovery.kernels {
                    if let existing = found[kernel.release], !prefer(kernel, over: existing, suites: upstream.suites) { continue }
                    found[kernel.release] = kernel
                }
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
        for kernel in found.values {
            for package in kernel.packages + (kernel.image.map { [$0] } ?? []) {
                let urls = resolver.urls(for: package, upstream: kernel.upstream, suite: kernel.suite).urls
                // A yum mirrorlist is read when fetching; its kernel-devel was fetched by the crawl already.
                if urls.isEmpty, manifest.upstream(named: kernel.upstream)?.mirrorlist != nil { continue }
                candidates[package.url] = urls
            }
        }
        let unserved = await Crawler.unserved(candidates)
        for (release, kernel) in found {
            let missingFiles = kernel.packages.map(\.url).filter(unserved.contains)
            if !missingFiles.isEmpty {
                warnings.append("\(release): listed by \(kernel.upstream)/\(kernel.suite ?? "?") but no mirror serves \(missingFiles.map { ($0 as NSString).lastPathComponent }.joined(separator: ", ")); left out")
                found.removeValue(forKey: release)
            } else if let image = kernel.image, unserved.contains(image.url) {
                // Modules build without the image; only the lab needs it.
                warnings.append("\(release): no mirror serves \((image.url as NSString).lastPathComponent); recorded without an image")
                found[release]?.image = nil
            }
        }

        // Merge with what the manifest lists: found kernels replace their old entries (keeping a
        // hand-set toolchain), kernels not found stay unless pruned from a suite that was read.
        var kernels: [Kernel] = []
        var added: [String] = [], removed: [String] = [], missing: [String] = []
        let crawled = Set(manifest.upstreams.map(\.name))
        let stamp = ISO8601DateFormatter().string(from: now)
        for old in manifest.kernels {
            if var new = found.removeValue(forKey: old.release) {
                new.toolchain = old.toolchain ?? new.toolchain
                kernels.append(new)
            } else if crawled.contains(old.upstream) {
                let suiteRead = !failedSuites.contains("\(old.upstream)/\(old.suite ?? "")")
                if prune, suiteRead {
                    removed.append(old.release)
                } else {
                    var kept = old
                    kept.lastSeen = old.lastSeen ?? stamp
                    missing.append(old.release)
                    kernels.append(kept)
                }
            } else {
                kernels.append(old)
            }
        }
        for kernel in found.values {
            added.append(kernel.release)
            kernels.append(kernel)
        }
        kernels.sort { a, b in
            a.upstream != b.upstream ? a.upstream < b.upstream : DebianVersion.less(a.release, b.release)
        }
        // Pins for recipe packages from suites that failed stay as they were.
        for old in manifest.packages where !pinned.contains(where: { $0.name == old.name }) { pinned.append(old) }
        pinned.sort { $0.name < $1.name }
        return Result(kernels: kernels, packages: pinned, failures: failures.sorted(), warnings: warnings, unmatched: unmatched.sorted(),
                      added: added.sorted(), removed: removed, missing: missing)
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
        case .apt: try archive(for: upstream, suite: suite, sources: sources)
        case .yum: YumRepository(mirror: upstream.mirror, mirrorlist: upstream.mirrorlist, keyring: upstream.keyring.map { resolvePath($0) })
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

extension Crawler {
    /// Crawls for the manifest at `path` and rewrites its `packages:` and `kernels:` sections;
    /// the file is replaced atomically, and not at all when nothing changed.
    public static func updateManifest(at path: String, cacheDirectory: String, prune: Bool, aptRoot: String = "/",
                                      log: @escaping @Sendable (String) -> Void = { _ in }) async throws -> (result: Result, changed: Bool) {
        let manifest = try ManifestLoader.load(path: path)
        let recipes = try RecipeBook.load(for: manifest)
        let work = cacheDirectory + "/tmp/crawl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: work) }
        let crawler = Crawler(manifest: manifest, recipes: recipes, aptRoot: aptRoot, workDirectory: work)
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
