import FarmEngine
import FarmKit
import Foundation

/// `farm-bench compile [--manifest manifest.yml] [--kernels 8] [-j N]`: LiME for N real kernels,
/// built by `farm build` (parallel, memoized) and the way DKMS builds one module for many
/// kernels: one kernel after another, plain `make` in a fresh copy of the source, in the very same
/// bwrap sandbox with the same toolchain root and headers. Both cold (nothing compiled yet; the
/// toolchain and headers are ready for both, as DKMS has them installed) and warm (everything
/// built once: farm's no-op against make's own up-to-date check in the built trees).
func compileBenchmark(_ arguments: [String]) async throws {
    var manifestPath = "manifest.yml"
    var count = 8
    var jobs = BuildOptions.defaultJobs
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        switch argument {
        case "--manifest": manifestPath = rest.popFirst() ?? manifestPath
        case "--kernels": count = rest.popFirst().flatMap(Int.init) ?? count
        case "-j": jobs = rest.popFirst().flatMap(Int.init) ?? jobs
        default:
            FileHandle.standardError.write(Data("usage: farm-bench compile [--manifest PATH] [--kernels N] [-j N]\n".utf8))
            exit(2)
        }
    }
    let farm = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("farm").path
    let session = try Session(manifestPath: manifestPath, cacheDirectory: nil, rules: FarmRules())
    let recipe = try session.recipes.recipes["lime"].unwrap("the manifest builds no 'lime'")
    // The newest bookworm kernels: one toolchain, several flavours and ABIs.
    let kernels = Array(session.manifest.kernels.filter { $0.distribution == "debian-12" }
        .sorted { DebianVersion.less($1.version ?? "", $0.version ?? "") }.prefix(count))
    let releases = kernels.map(\.release)
    print("farm-bench compile: \(kernels.count) kernels (\(releases.first ?? "")...), farm -j \(jobs), cache \(session.cacheDirectory)")

    // Warm-up: fetch, bundle, toolchain and one compile of each, so both sides start from ready headers and root.
    let warm = try await session.build(patterns: releases, options: BuildOptions(jobs: jobs), reporter: SilentReporter())
    guard warm.succeeded else { print("the warm-up build failed; run farm build \(releases.joined(separator: " "))"); exit(1) }

    // A copy of the project whose recipe differs by a comment: new compile keys, same bundles and toolchain.
    let project = NSTemporaryDirectory() + "farm-bench-compile-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: project) }
    try FileManager.default.createDirectory(atPath: project, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: session.manifest.directory + "/recipes", toPath: project + "/recipes")
    // Compiles only, as DKMS's way does: the copy has no `signing:`, `publish:` or `profiles:`, so farm's timed
    // build runs the compile tasks alone (signing would add work the serial side does not do).
    var kept: [Substring] = [], skipping = false
    for line in try String(contentsOfFile: manifestPath, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("signing:") || line.hasPrefix("publish:") || line.hasPrefix("profiles:") { skipping = true; continue }
        if skipping, line.hasPrefix(" ") || line.hasPrefix("#") || line.isEmpty { continue }
        skipping = false
        kept.append(line)
    }
    try Data(kept.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: project + "/manifest.yml"))
    let recipeText = try String(contentsOfFile: project + "/recipes/lime.yml", encoding: .utf8)
    try Data(recipeText.replacingOccurrences(of: "modules\n", with: "modules && true farm-bench-\(UUID())\n").utf8)
        .write(to: URL(fileURLWithPath: project + "/recipes/lime.yml"))
    let buildArguments = ["build", "-j", String(jobs), "--manifest", project + "/manifest.yml", "--cache", session.cacheDirectory] + releases
    let cold = try run(farm, buildArguments)
    guard cold.status == 0 else { print("farm build failed:\n\(cold.tail.suffix(3000))"); exit(1) }
    let noop = try run(farm, buildArguments)

    // DKMS's way, in the same sandbox.
    let cache = try session.openCache()
    let graph = try session.plan(releases)
    let explainer = Explainer(cache: cache)
    let trees = UnpackedTrees(objects: cache.objects)
    let log = TaskLog()
    let catalog = try ToolchainCatalog.load(directory: session.manifest.directory + "/recipes/toolchains")
    let sourcePackage = try cache.objects.verifiedPath(of: try graph.nodes.first { $0.kind == "fetch" && $0.label.hasPrefix("lime-forensics-dkms_") }
        .flatMap { try explainer.cachedOutputs(of: $0, in: graph)?["package"] }.unwrap("no LiME source"))
    var specs: [SandboxSpec] = []
    for kernel in kernels {
        func output(_ task: FarmTask, _ key: String) throws -> Digest {
            let node = try graph.node(for: task).unwrap("no task \(task)")
            return try (try explainer.cachedOutputs(of: node, in: graph)?[key]).unwrap("\(task) is not built")
        }
        let toolchain = try catalog.recipe(for: kernel)
        let bundle = try trees.tree(of: try output(.bundle(kernel: kernel.name), "bundle"), log: log)
        let root = try trees.tree(of: try output(.toolchain(name: toolchain.name), "root"), log: log)
        let directory = "\(project)/dkms/\(kernel.release)"
        _ = try PackageExtractor.extract(package: sourcePackage, into: directory + "-package")
        let source = try FileManager.default.contentsOfDirectory(atPath: directory + "-package/usr/src").first.unwrap("no source in the package")
        try FileManager.default.moveItem(atPath: directory + "-package/usr/src/" + source, toPath: directory)
        specs.append(try CompileAction.sandbox(bundleTree: bundle, root: root, source: directory, release: kernel.release,
                                               command: "set -e\n\(recipe.build)\nstrip --strip-debug lime.ko", backend: .bwrap))
    }
    cache.close()
    func serial() throws -> Double {
        let start = ContinuousClock.now
        for spec in specs {
            let log = TaskLog()
            guard try Sandbox.run(spec, backend: .bwrap, log: log) == 0 else { print(log.text); exit(1) }
        }
        return seconds(ContinuousClock.now - start)
    }
    let dkmsCold = try serial()
    let dkmsWarm = try serial()
    print(String(format: "cold  farm build -j %d: %7.2f s   serial make (DKMS): %7.2f s   ratio %.2fx", jobs, cold.seconds, dkmsCold, cold.seconds / dkmsCold))
    print(String(format: "warm  farm build (no-op): %6.2f s   serial make again: %7.2f s   ratio %.3fx", noop.seconds, dkmsWarm, noop.seconds / dkmsWarm))
}
