import Foundation

/// The product's planning rules: per kernel, one fetch per pinned package (shared packages are
/// fetched once), then the kernel's bundle. Toolchain, compile, sign and publish join with the
/// next issues.
public struct FarmRules: BuildRules {
    /// The root whose `etc/apt` names the mirrors for `mirror: apt` (a directory in tests).
    public var aptRoot: String

    public init(aptRoot: String = "/") { self.aptRoot = aptRoot }

    public func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws {
        let mirrors = MirrorResolver(manifest: manifest, aptRoot: aptRoot)
        for kernel in kernels {
            bundle(kernel, mirrors: mirrors, into: &graph)
        }
    }

    /// The kernel's bundle task, after the fetch tasks of its packages.
    @discardableResult
    func bundle(_ kernel: Kernel, mirrors: MirrorResolver, into graph: inout BuildGraph) -> BuildGraph.NodeID {
        let packages = fetchTasks(for: kernel, mirrors: mirrors, into: &graph)
        return graph.add(BundleAction(release: kernel.release, distro: "debian"), label: kernel.release, dependencies: packages)
    }

    /// The fetch tasks of a kernel's packages, as `package.N` dependencies in the packages' order.
    func fetchTasks(for kernel: Kernel, mirrors: MirrorResolver, into graph: inout BuildGraph) -> [BuildGraph.Dependency] {
        kernel.packages.enumerated().map { index, package in
            let (urls, reason) = mirrors.urls(for: package, upstream: kernel.upstream, suite: kernel.suite)
            let action = FetchAction(package: package, urls: urls, reason: reason)
            return BuildGraph.Dependency(role: "package.\(index)", node: graph.add(action, label: action.file))
        }
    }
}

