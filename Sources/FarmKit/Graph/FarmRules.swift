import Foundation

/// The product's planning rules: per kernel, one fetch per pinned package (shared packages are
/// fetched once) and the kernel's bundle; per recipe and kernel, a compile task that also needs
/// the recipe's source and the kernel's toolchain (each made once and shared). Sign and publish
/// join with the next issue.
public struct FarmRules: BuildRules {
    /// The root whose `etc/apt` names the mirrors for `mirror: apt` (a directory in tests).
    public var aptRoot: String
    /// `--sandbox`: overrides the manifest's `sandbox:`; bwrap when neither says.
    public var sandbox: SandboxBackend?

    public init(aptRoot: String = "/", sandbox: SandboxBackend? = nil) {
        self.aptRoot = aptRoot
        self.sandbox = sandbox
    }

    public func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws {
        let mirrors = MirrorResolver(manifest: manifest, aptRoot: aptRoot)
        let backend = sandbox ?? manifest.sandbox.flatMap(SandboxBackend.init(rawValue:)) ?? .bwrap
        let catalog = recipes.order.isEmpty ? nil : try ToolchainCatalog.load(directory: manifest.directory + "/recipes/toolchains")
        var sources: [String: BuildGraph.Dependency] = [:]
        var roots: [String: BuildGraph.NodeID] = [:]
        for name in recipes.order {
            guard let recipe = recipes.recipes[name] else { continue }
            do {
                sources[name] = try source(of: recipe, manifest: manifest, mirrors: mirrors, into: &graph)
            } catch {
                // A source that cannot be had fails the recipe's tasks, not the whole plan.
                let node = graph.add(UnbuildableAction(kind: "source", message: "\(error)"), label: recipe.name)
                sources[name] = .init(role: "source", node: node)
            }
        }
        for kernel in kernels {
            let bundle = bundle(kernel, mirrors: mirrors, into: &graph)
            guard let catalog else { continue }
            let toolchain: ToolchainRecipe
            do {
                toolchain = try catalog.recipe(for: kernel)
            } catch {
                // One kernel nobody can compile for fails its own tasks (so `-k` builds the rest,
                // and `farm bundle` still works), with the error that names the compiler it needs.
                for name in recipes.order {
                    _ = graph.add(UnbuildableAction(kind: "compile", message: "\(error)"), label: "\(name)/\(kernel.release)")
                }
                continue
            }
            // One toolchain task per recipe; its mirror is worked out once, for the first kernel that needs it.
            let root: BuildGraph.NodeID
            if let planned = roots[toolchain.name] {
                root = planned
            } else {
                let upstream = toolchain.upstream ?? kernel.upstream
                let line = mirrors.sourceLine(upstream: upstream, suite: toolchain.suite, components: toolchain.components)
                root = graph.add(ToolchainAction(recipe: toolchain, sourceLine: line.line, reason: line.reason), label: toolchain.name)
                roots[toolchain.name] = root
            }
            for name in recipes.order {
                guard let recipe = recipes.recipes[name], let source = sources[name] else { continue }
                let action = CompileAction(recipe: recipe, release: kernel.release, toolchain: toolchain, backend: backend)
                _ = graph.add(action, label: "\(recipe.name)/\(kernel.release)",
                          dependencies: [.init(role: "bundle", node: bundle), .init(role: "toolchain", node: root), source])
            }
        }
    }

    /// The task that provides a recipe's source, as the `source` dependency of its compile tasks.
    func source(of recipe: Recipe, manifest: Manifest, mirrors: MirrorResolver, into graph: inout BuildGraph) throws -> BuildGraph.Dependency {
        switch recipe.source {
        case let .package(name):
            guard let pinned = manifest.packages.first(where: { $0.name == name }) else {
                throw PlanError("recipe \(recipe.path) takes its source from the package \(name), which \(manifest.path) does not pin;"
                                + " run 'farm crawl' to pin it")
            }
            let (urls, reason) = mirrors.urls(for: pinned.package, upstream: pinned.upstream, suite: pinned.suite)
            let action = FetchAction(package: pinned.package, urls: urls, reason: reason)
            return .init(role: "source", node: graph.add(action, label: action.file))
        case let .directory(path):
            let directory = path.hasPrefix("/") ? path : manifest.directory + "/" + path
            let action = try SourceDirectoryAction(recipe: recipe.name, directory: (directory as NSString).standardizingPath)
            return .init(role: "source", node: graph.add(action, label: recipe.name))
        case let .git(url, commit):
            let action = SourceGitAction(recipe: recipe.name, url: url, commit: commit)
            return .init(role: "source", node: graph.add(action, label: recipe.name))
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

/// A task that cannot be built as planned: it fails with the planner's reason when it runs.
public struct UnbuildableAction: TaskAction {
    public let kind: String
    public let message: String
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("unbuildable", message)] }
    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        throw PlanError(message)
    }
}
