import FarmEngine
import Foundation

/// Plans the synthetic kinds on the engine alone, and keeps a plan in a file: the engine's
/// analogue of a `build.ninja`, one kernel per line:
///
///     RELEASE TOOLCHAIN ok|fails URL SHA256 [URL SHA256 ...]
///
/// Blank lines and lines starting with `#` are ignored.
public enum SyntheticPlan {
    /// Per kernel: one fetch per package, bundle, compile (with the kernel's toolchain), sign; then
    /// one publish over all kernels. A kernel with two packages gives five tasks.
    public static func add(_ kernels: [SyntheticKernel], publish: Bool = true, to graph: inout BuildGraph) {
        var signed: [BuildGraph.Dependency] = []
        for kernel in kernels {
            var packages: [BuildGraph.Dependency] = []
            for (index, package) in kernel.packages.enumerated() {
                let id = graph.add(SyntheticFetch(url: package.url, sha256: package.sha256.hex), label: package.url)
                packages.append(.init(role: "package.\(index)", node: id))
            }
            let bundle = graph.add(SyntheticBundle(release: kernel.release), label: kernel.release, dependencies: packages)
            let toolchain = graph.add(SyntheticToolchain(name: kernel.toolchain), label: kernel.toolchain)
            let compile = graph.add(SyntheticCompile(release: kernel.release, fails: kernel.fails), label: kernel.release,
                                    dependencies: [.init(role: "bundle", node: bundle), .init(role: "toolchain", node: toolchain)])
            let sign = graph.add(SyntheticSign(release: kernel.release), label: kernel.release,
                                 dependencies: [.init(role: "module", node: compile)])
            // As the product's publish: a module that failed is left out, under -k, rather than stopping it.
            signed.append(.init(role: "module.\(kernel.release)", node: sign, optional: true))
        }
        if publish, !signed.isEmpty {
            graph.add(SyntheticPublish(), label: "repository", dependencies: signed)
        }
    }

    public static func text(_ kernels: [SyntheticKernel]) -> String {
        var text = "# farm synthetic plan: RELEASE TOOLCHAIN ok|fails URL SHA256 [URL SHA256 ...]\n"
        for kernel in kernels {
            text += "\(kernel.release) \(kernel.toolchain) \(kernel.fails ? "fails" : "ok")"
            for package in kernel.packages { text += " \(package.url) \(package.sha256.hex)" }
            text += "\n"
        }
        return text
    }

    public static func read(_ path: String) throws -> [SyntheticKernel] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FarmError.badInput("cannot read the plan file \(path); farm-bench writes one (SyntheticPlan.text)")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    /// `path` only names the file in errors.
    public static func parse(_ text: String, path: String) throws -> [SyntheticKernel] {
        var kernels: [SyntheticKernel] = []
        // Split as bytes: splitting a String by Character costs more than the whole graph (10,000 kernels).
        for (index, line) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if line.isEmpty || line.first == UInt8(ascii: "#") { continue }
            func refuse(_ problem: String) -> FarmError {
                FarmError.badInput("\(path):\(index + 1): \(problem); a line is RELEASE TOOLCHAIN ok|fails URL SHA256 [URL SHA256 ...]")
            }
            let fields = line.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
            guard fields.count >= 3, fields.count % 2 == 1 else { throw refuse("\(fields.count) fields") }
            guard fields[2] == "ok" || fields[2] == "fails" else { throw refuse("'\(fields[2])' is neither 'ok' nor 'fails'") }
            var packages: [SyntheticKernel.Package] = []
            for field in stride(from: 3, to: fields.count, by: 2) {
                guard let sha256 = Digest(hex: fields[field + 1]) else { throw refuse("'\(fields[field + 1])' is not a SHA-256 in hex") }
                packages.append(.init(url: fields[field], sha256: sha256))
            }
            kernels.append(SyntheticKernel(release: fields[0], packages: packages, toolchain: fields[1], fails: fields[2] == "fails"))
        }
        return kernels
    }
}
