import FarmEngine
import Foundation

/// Task kind `bundle`: one kernel's header packages (inputs `package.0`, `package.1`, ... with
/// output `package`, as the fetch task stores them) into `bundle-<release>.tgz`.
public struct BundleAction: TaskAction {
    public let release: String
    public let distro: String

    public init(release: String, distro: String = "debian") {
        self.release = release
        self.distro = distro
    }

    public var kind: String { "bundle" }

    public var sharedRemotely: Bool { true }
    // 2: packages read in memory, gzip in parallel blocks (other bytes for the same tar).
    // 3: libdeflate, one gzip member per 1 MiB block (other bytes for the same tar).
    public var version: Int { 3 }
    public var parameters: [(name: String, value: String)] { [("release", release), ("distro", distro)] }
    public var resource: ResourceClass { .io }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        // Extraction and compression block for seconds: off the cooperative pool.
        try await Blocking.run { try bundle(context) }
    }

    private func bundle(_ context: TaskContext) throws -> [String: Digest] {
        let roles = context.roles(withPrefix: "package.")
        guard !roles.isEmpty else {
            throw FarmError(message: "task \(context.kind):\(context.label) has no package inputs; the kernel lists no packages")
        }
        let packages = ExtractedTree()
        let summaries = try PackageExtractor.read(packages: roles.map { try context.inputPath($0, "package") }, into: packages)
        for (role, summary) in zip(roles, summaries) {
            let name = summary.name.map { [$0, summary.version].compactMap { $0 }.joined(separator: " ") } ?? "\(summary.format.rawValue) package"
            context.log.append("\(role): \(name) (\(try context.input(role, "package").short)): \(summary.entries) entries, \(summary.bytes) bytes\n")
        }

        let output = context.workDirectory + "/bundle-\(release).tgz"
        // The task's key changes exactly when a package, the release, the distro or this code
        // changes, which is what a consumer of BUNDLE_CHECKSUM needs to know.
        let report = try BundleBuilder.build(packages: packages, release: release, distro: distro,
                                             checksum: context.key.hex, output: output)
        for name in report.dropped { context.log.append("left out /\(name): not part of a \(distro) bundle\n") }
        for line in report.relativized { context.log.append("made relative: \(line)\n") }
        for path in report.rewrittenMakefiles { context.log.append("include rewritten to $(BUILD_ROOT): \(path)\n") }
        for line in report.removedLinks { context.log.append("removed broken link: \(line)\n") }
        context.log.append("bundle-\(release).tgz: \(report.entries) entries\n")
        return ["bundle": try context.store(file: output)]
    }
}
