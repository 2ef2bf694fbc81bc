import FarmEngine
import Foundation

/// One invocation's view of a project: the manifest, its recipes, the rules that plan tasks, and
/// the cache directory. The CLI commands are thin calls into this.
public struct Session: Sendable {
    public let manifest: Manifest
    public let recipes: RecipeBook
    public let rules: any BuildRules
    public let cacheDirectory: String

    /// `--cache DIR`, else `$FARM_CACHE`, else `cache/` beside the manifest.
    public static func cacheDirectory(option: String?, manifestPath: String) -> String {
        if let option, !option.isEmpty { return option }
        if let environment = ProcessInfo.processInfo.environment["FARM_CACHE"], !environment.isEmpty { return environment }
        let directory = (manifestPath as NSString).deletingLastPathComponent
        return (directory.isEmpty ? "." : directory) + "/cache"
    }

    /// `writing: false` for a dry run: nothing is written, not even the manifest's snapshot.
    public init(manifestPath: String, cacheDirectory: String?, rules: any BuildRules, writing: Bool = true) throws {
        var timer = PhaseTimer()
        let cacheDirectory = Session.cacheDirectory(option: cacheDirectory, manifestPath: manifestPath)
        var recipes: RecipeBook?
        // The snapshot is kept only for a manifest whose recipes also check out.
        manifest = try ManifestLoader.load(path: manifestPath, snapshotDirectory: cacheDirectory, writingSnapshot: writing) { manifest in
            recipes = try RecipeBook.load(for: manifest)
        }
        self.recipes = recipes!
        timer.mark("manifest and recipes")
        self.rules = rules
        self.cacheDirectory = cacheDirectory
    }

    /// The manifest's kernel named `release` or `release@upstream`, or an error that names the
    /// manifest and the releases that look alike (a typo, another flavour), or the upstreams to
    /// choose from when two ship that release.
    public func kernel(_ text: String) throws -> Kernel {
        let parts = text.split(separator: "@", maxSplits: 1).map(String.init)
        let release = parts.first ?? text
        let matches = manifest.kernels.filter { $0.release == release && (parts.count == 1 || $0.upstream == parts[1]) }
        if matches.count == 1 { return matches[0] }
        if matches.count > 1 {
            throw FarmError.badInput("\(manifest.path) has \(release) from \(matches.count) upstreams; name one: "
                                     + matches.map(\.name.description).joined(separator: ", "))
        }
        let stem = release.split(separator: "-").first.map(String.init) ?? release
        let alike = manifest.kernels.map(\.release).filter { $0.hasPrefix(stem) }.prefix(5)
        throw FarmError.badInput("no kernel \(release) in \(manifest.path)"
                        + (alike.isEmpty ? "; 'farm plan' lists the kernels, 'farm crawl' finds new ones"
                                         : "; it has \(alike.joined(separator: ", "))\(alike.count == 5 ? ", ..." : "")"))
    }

    public func plan(_ patterns: [String], shard: KernelShard? = nil) throws -> BuildGraph {
        try Planner(rules: rules).plan(manifest: manifest, recipes: recipes, patterns: patterns.map(KernelPattern.init), shard: shard)
    }

    public func openCache(_ access: BuildCache.Access = .shared) throws -> BuildCache {
        try BuildCache(directory: cacheDirectory, access: access)
    }

    /// Plans, builds and records the run's figures for `farm status` and its report (`farm report`,
    /// and the files `reports` asks for).
    public func build(patterns: [String], shard: KernelShard? = nil, options: BuildOptions, reporter: any BuildReporter,
                      command: String = "build", remoteCache: RemoteCacheSetting = .init(),
                      reports: ReportFiles = .init()) async throws -> BuildSummary {
        var options = options
        options.remoteCache = remoteCache.cache(manifest: manifest)
        var timer = PhaseTimer()
        let graph = try plan(patterns, shard: shard)
        timer.mark("plan")
        // A dry run only reads the cache, and takes a cache that does not exist yet as empty.
        let cache = try openCache(options.dryRun ? .readOnly : .shared)
        defer { cache.close() }
        timer.mark("open cache")
        let started = Date()
        let publish = graph.nodes.last { $0.action is PublishAction }
        let outcomes = OutcomeRecorder(passingTo: reporter)
        let summary = try await Builder(cache: cache, options: options, reporter: outcomes)
            .build(graph, collecting: publish.map { [$0.id] } ?? [])
        timer.mark("build")
        if !options.dryRun {
            // Before the publication is installed, so a report exists even when installing fails.
            let kernels = try Planner.select(manifest.kernels, patterns: patterns.map(KernelPattern.init), manifestPath: manifest.path)
            // One read transaction for every kernel's digests, as the build's own lookups.
            let report = try cache.readBatch {
                BuildReport.make(kernels: kernels, graph: graph, rules: rules, manifest: manifest, recipes: recipes,
                                 outcomes: outcomes, cache: cache, command: command, started: started, finished: Date())
            }
            try reports.write(report, cacheDirectory: cacheDirectory)
            timer.mark("report")
        }
        if let publish, let action = publish.action as? PublishAction, let files = summary.collected[publish.id]?["files"] {
            let publication = try PublicationFiles.decode(try cache.objects.read(files))
            // A dry run writes nothing anywhere: it says what the directory lacks.
            let text = options.dryRun ? Session.wouldInstall(publication, of: action)
                : try Session.install(publication, into: action.directory, cache: cache)
            reporter.report(.published(directory: action.directory, summary: text))
            timer.mark("publish")
        }
        if !options.dryRun {
            cache.saveLastBuildKeys(outcomes.usedKeys)
            cache.saveLastRun(.init(command: command, started: started, duration: summary.duration, total: summary.total,
                                    built: summary.built, cached: summary.cached, failed: summary.failed,
                                    skipped: summary.skipped + summary.notRun, criticalPath: summary.criticalPath))
        }
        if summary.succeeded, !options.dryRun, let inputs = rules.planInputs(manifest: manifest, recipes: recipes) {
            var collected: [String: String] = [:]
            if let publish, let action = publish.action as? PublishAction, let files = summary.collected[publish.id]?["files"] {
                collected = ["publication": files.hex, "directory": action.directory]
            }
            // Written last, once the cache and the repository are as this build leaves them.
            try UpToDateStamp.make(inputs: inputs + [manifest.path], cacheDirectory: cacheDirectory, total: summary.total, collected: collected)?
                .write(cacheDirectory: cacheDirectory, identity: Session.stampIdentity(manifestPath: manifest.path, patterns: patterns, shard: shard, rules: rules))
            timer.mark("stamp")
        }
        return summary
    }

    /// `farm build`: first the up-to-date stamp of the last identical build, which proves in a few
    /// hundred `stat` calls that nothing changed (no manifest read, no plan, no key); else the
    /// full build. A dry run always plans.
    public static func build(manifestPath: String, cacheDirectory option: String?, rules: any BuildRules, patterns: [String],
                             shard: KernelShard? = nil, options: BuildOptions, reporter: any BuildReporter, command: String = "build",
                             remoteCache: RemoteCacheSetting = .init(), reports: ReportFiles = .init()) async throws -> BuildSummary {
        let cacheDirectory = Session.cacheDirectory(option: option, manifestPath: manifestPath)
        // A report file asked for lists every kernel, which needs the plan the stamp skips.
        if !options.dryRun, reports.isEmpty, let summary = try upToDate(manifestPath: manifestPath, cacheDirectory: cacheDirectory, rules: rules,
                                                       patterns: patterns, shard: shard, reporter: reporter, command: command) {
            return summary
        }
        return try await Session(manifestPath: manifestPath, cacheDirectory: cacheDirectory, rules: rules, writing: !options.dryRun)
            .build(patterns: patterns, shard: shard, options: options, reporter: reporter, command: command, remoteCache: remoteCache,
                   reports: reports)
    }

    static func stampIdentity(manifestPath: String, patterns: [String], shard: KernelShard? = nil, rules: any BuildRules) -> String {
        let absolute = URL(fileURLWithPath: manifestPath).standardizedFileURL.path
        return (["manifest " + absolute, "rules " + rules.settings] + patterns.map { "pattern " + $0 }
                + (shard.map { ["shard \($0)"] } ?? [])).joined(separator: "\n")
    }

    /// The outcome of the last identical build when its stamp still holds: reported as a build
    /// would (every task cached), the repository made to hold its publication again, the run recorded.
    static func upToDate(manifestPath: String, cacheDirectory: String, rules: any BuildRules, patterns: [String],
                         shard: KernelShard? = nil, reporter: any BuildReporter, command: String) throws -> BuildSummary? {
        var timer = PhaseTimer()
        let identity = stampIdentity(manifestPath: manifestPath, patterns: patterns, shard: shard, rules: rules)
        guard let stamp = UpToDateStamp.read(cacheDirectory: cacheDirectory, identity: identity),
              FileManager.default.fileExists(atPath: cacheDirectory + "/farm.sqlite") else { return nil }
        let started = Date()
        let clock = ContinuousClock.now
        // Under the cache's shared lock, so `farm gc` cannot change the store meanwhile.
        let cache = try BuildCache(directory: cacheDirectory)
        defer { cache.close() }
        guard stamp.holds(cacheDirectory: cacheDirectory) else {
            timer.mark("stamp (changed)")
            return nil
        }
        timer.mark("stamp holds")
        reporter.report(.planned(total: stamp.total))
        var summary = BuildSummary()
        summary.total = stamp.total
        summary.cached = stamp.total
        summary.unchangedSinceStamp = true
        summary.duration = (ContinuousClock.now - clock).seconds
        reporter.report(.completed(summary))
        if let hex = stamp.collected["publication"], let files = Digest(hex: hex), let directory = stamp.collected["directory"] {
            let publication = try PublicationFiles.decode(try cache.objects.read(files))
            reporter.report(.published(directory: directory, summary: try Session.install(publication, into: directory, cache: cache)))
        }
        cache.saveLastRun(.init(command: command, started: started, duration: summary.duration, total: summary.total,
                                built: 0, cached: summary.cached, failed: 0, skipped: 0))
        // The last report still lists the same kernels; what it built is now cached.
        let last = BuildReport.lastPath(cacheDirectory: cacheDirectory)
        if let report = try? BuildReport.read(last) {
            try? BuildReport.write(try report.asUnchanged(started: started, finished: Date()).encoded(), to: last)
        }
        timer.mark("report")
        return summary
    }

    /// Makes the publish directory hold the publication (a no-op when it already does); says what it did.
    static func install(_ publication: PublicationFiles, into directory: String, cache: BuildCache) throws -> String {
        let report = try Publisher.install(publication, objects: cache.objects, into: directory)
        let modules = publication.files.filter { $0.path.hasPrefix("modules/") && !$0.path.hasSuffix(".sig") }.count
        var text = "repository \(directory): \(modules) module(s), revision \(publication.revision)"
        if report.written.isEmpty {
            text += ", up to date"
        } else {
            text += ", \(report.written.count) file(s) written, \(report.unchanged) unchanged"
            if !report.removed.isEmpty { text += ", \(report.removed.count) retired" }
        }
        return text
    }

    static func wouldInstall(_ publication: PublicationFiles, of action: PublishAction) -> String {
        let pending = Publisher.pending(publication, in: action.directory)
        return "repository \(action.directory): revision \(publication.revision), "
            + (pending.isEmpty ? "up to date" : "would write \(pending.count) file(s) (dry run: nothing written)")
    }

    /// Builds one task and what it needs, then copies its output `output` to `directory/name`
    /// (atomically), and each of `extras` (output name to file name) the task produced.
    /// For `farm bundle RELEASE -o DIR` and `farm module`.
    public func buildOne(_ task: FarmTask, output: String, into directory: String, as name: String,
                         extras: [String: String] = [:], graph planned: BuildGraph? = nil,
                         options: BuildOptions, reporter: any BuildReporter) async throws -> (summary: BuildSummary, path: String?) {
        let graph = try planned ?? plan([])
        guard let node = graph.node(for: task) else {
            throw FarmError.badInput("no task '\(task)' in the plan of \(manifest.path); 'farm plan' lists the tasks")
        }
        let cache = try openCache()
        defer { cache.close() }
        let summary = try await Builder(cache: cache, options: options, reporter: reporter).build(graph, targets: [node.id])
        guard summary.succeeded, !options.dryRun else { return (summary, nil) }
        let definitionOutputs = try Explainer(cache: cache).cachedOutputs(of: node, in: graph)
        guard let digest = definitionOutputs?[output] else { throw FarmError.badInput("\(task) has no output '\(output)'") }
        try AtomicFile.makeDirectory(directory)
        func copy(_ digest: Digest, as name: String) throws -> String {
            let target = directory + "/" + name
            let temporary = directory + "/.\(name).tmp-\(getpid())"
            unlink(temporary)
            try FileManager.default.copyItem(atPath: try cache.objects.verifiedPath(of: digest), toPath: temporary)
            chmod(temporary, 0o644)
            try AtomicFile.rename(temporary, to: target)
            return target
        }
        for (extra, file) in extras.sorted(by: { $0.key < $1.key }) {
            if let digest = definitionOutputs?[extra] { _ = try copy(digest, as: file) }
        }
        return (summary, try copy(digest, as: name))
    }

    /// Why the named task would run now, or that it is up to date.
    public func explain(_ name: String) throws -> String {
        let graph = try plan([])
        guard let node = graph.node(named: name) ?? graph.nodes.first(where: { $0.label == name }) else {
            throw FarmError.badInput("no task named '\(name)' in the plan; 'farm plan' lists tasks as kind:label")
        }
        let cache = try openCache(.readOnly)
        defer { cache.close() }
        return try Explainer(cache: cache).explain(node, in: graph)
    }

    /// The log of the last run of a task, by `kind:label`, label or key prefix.
    public func log(_ name: String) throws -> (record: TaskRecord, text: String) {
        let cache = try openCache(.readOnly)
        defer { cache.close() }
        let records = try cache.findRecords(name)
        guard !records.isEmpty else {
            throw FarmError.badInput("no recorded run of '\(name)' in \(cacheDirectory); name a task as kind:label ('farm plan' lists them) or by key")
        }
        guard records.count == 1, let record = records.first else {
            throw FarmError.badInput("'\(name)' names several tasks: \(records.map(\.name).joined(separator: ", ")); use kind:label")
        }
        guard let log = record.log else { return (record, "") }
        return (record, String(decoding: try cache.objects.read(log), as: UTF8.self))
    }
}
