import FarmEngine
import Foundation

/// The product's planning rules: per kernel, one fetch per pinned package (shared packages are
/// fetched once) and the kernel's bundle; per recipe and kernel, a compile task that also needs
/// the recipe's source and the kernel's toolchain (each made once and shared); per module a sign
/// task; and, when the whole manifest is built, one publish task over every signed module.
public struct FarmRules: BuildRules {
    /// The root whose `etc/apt` names the mirrors for `mirror: apt` (a directory in tests).
    public var aptRoot: String
    /// `--sandbox`: overrides the manifest's `sandbox:`; bwrap when neither says.
    public var sandbox: SandboxBackend?

    public init(aptRoot: String = "/", sandbox: SandboxBackend? = nil) {
        self.aptRoot = aptRoot
        self.sandbox = sandbox
    }

    public var settings: String { "apt-root \(aptRoot) sandbox \(sandbox?.rawValue ?? "-")" }

    /// The recipes (module and toolchain recipes: the whole `recipes/` directory), the keys'
    /// public files the sign and publish tasks name, and the trees of directory sources.
    public func planInputs(manifest: Manifest, recipes: RecipeBook) -> [String]? {
        var paths = [manifest.directory + "/recipes"]
        if let (module, repository) = Signing.paths(manifest: manifest) {
            paths += [module.metadata, module.certificate, repository.metadata, repository.publicKey]
        }
        for recipe in recipes.recipes.values {
            if case let .directory(path) = recipe.source {
                paths.append(((path.hasPrefix("/") ? path : manifest.directory + "/" + path) as NSString).standardizingPath)
            }
        }
        return paths
    }

    public func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws {
        let mirrors = MirrorResolver(manifest: manifest, aptRoot: aptRoot)
        let backend = backend(manifest)
        let catalog = recipes.order.isEmpty ? nil : try ToolchainCatalog.load(directory: manifest.directory + "/recipes/toolchains")
        var sources: [String: BuildGraph.Dependency] = [:]
        var roots: [String: BuildGraph.NodeID] = [:]
        for name in recipes.order {
            guard let recipe = recipes.recipes[name] else { continue }
            do {
                sources[name] = try source(of: recipe, manifest: manifest, mirrors: mirrors, into: &graph)
            } catch {
                // A source that cannot be had fails the recipe's tasks, not the whole plan.
                let node = graph.add(UnbuildableAction(task: .source(recipe: recipe.name), message: "\(error)"), as: .source(recipe: recipe.name))
                sources[name] = .init(role: "source", node: node)
            }
        }
        let signing = Signing.Plan(manifest: manifest)
        var signed: [(recipe: String, kernel: KernelName, node: BuildGraph.NodeID)] = []
        var profiles: [(table: PublishAction.Table, node: BuildGraph.NodeID)] = []
        for kernel in kernels {
            let bundle = bundle(kernel, mirrors: mirrors, into: &graph)
            if manifest.profiles, let profile = profile(kernel, mirrors: mirrors, catalog: catalog, into: &graph) {
                let table = PublishAction.Table(kernel: kernel.name, file: ProfileAction.fileName(for: kernel), family: kernel.family.rawValue,
                                                machine: RepositoryFormat.unameMachine(debianArchitecture: kernel.debianArchitecture ?? "amd64"))
                profiles.append((table, profile))
            }
            guard let catalog else { continue }
            var compiles: [(recipe: Recipe, node: BuildGraph.NodeID)] = []
            do {
                let toolchain = try catalog.recipe(for: kernel, in: manifest)
                let upstream = try ToolchainCatalog.upstream(of: toolchain, for: kernel, in: manifest)
                // One toolchain task per recipe; its mirror is worked out once, for the first kernel that needs it.
                let root = roots[toolchain.name] ?? self.toolchain(toolchain, upstream: upstream, mirrors: mirrors, into: &graph)
                roots[toolchain.name] = root
                for name in recipes.order {
                    guard let recipe = recipes.recipes[name], let source = sources[name] else { continue }
                    let action = CompileAction(recipe: recipe, release: kernel.release, toolchain: toolchain, backend: backend)
                    compiles.append((recipe, graph.add(action, as: .compile(recipe: recipe.name, kernel: kernel.name),
                                                       dependencies: [.init(role: "bundle", node: bundle), .init(role: "toolchain", node: root), source])))
                }
            } catch {
                // One kernel nobody can compile for fails its own tasks (so `-k` builds the rest,
                // and `farm bundle` still works), with the error that names the compiler it needs.
                for name in recipes.order {
                    guard let recipe = recipes.recipes[name] else { continue }
                    let task = FarmTask.compile(recipe: name, kernel: kernel.name)
                    compiles.append((recipe, graph.add(UnbuildableAction(task: task, message: "\(error)"), as: task)))
                }
            }
            guard let signing else { continue }
            for (recipe, compile) in compiles {
                let task = FarmTask.sign(recipe: recipe.name, kernel: kernel.name)
                let dependencies: [BuildGraph.Dependency] = [.init(role: "module", node: compile), .init(role: "bundle", node: bundle)]
                let node = switch signing.keys {
                case let .success((moduleKey, repositoryKey)):
                    graph.add(SignAction(recipe: recipe, release: kernel.release, moduleKey: moduleKey, moduleKeyPaths: signing.modulePaths,
                                         repositoryKey: repositoryKey, repositoryKeyPaths: signing.repositoryPaths),
                              as: task, dependencies: dependencies)
                case let .failure(error):
                    graph.add(UnbuildableAction(task: task, message: error.message, missing: FarmError.environment(error.message)),
                              as: task, dependencies: dependencies)
                }
                signed.append((recipe.name, kernel.name, node))
            }
        }
        // The repository holds every kernel of the manifest: a build of some kernels publishes nothing.
        guard let signing, let publish = manifest.publish, kernels.count == manifest.kernels.count, !signed.isEmpty else { return }
        let directory = publish.dir.hasPrefix("/") ? publish.dir : manifest.directory + "/" + publish.dir
        switch signing.keys {
        case let .success((_, repositoryKey)):
            var machines: [String: String] = [:]
            for kernel in kernels {
                machines[kernel.release] = RepositoryFormat.unameMachine(debianArchitecture: kernel.debianArchitecture ?? "amd64")
            }
            var outputs: [String: String] = [:]
            for name in recipes.order { outputs[name] = recipes.recipes[name]?.output }
            // The repository names a module by its release (Margarita Shotgun picks by `uname -r`), so
            // of one release shipped by two upstreams, the upstream the manifest lists first is published.
            let order = Dictionary(manifest.upstreams.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
            var chosen: [String: (recipe: String, kernel: KernelName, node: BuildGraph.NodeID)] = [:]
            var shadowed: [String] = []
            for entry in signed {
                let slot = entry.recipe + "/" + entry.kernel.release
                if let other = chosen[slot] {
                    let (keep, drop) = (order[entry.kernel.upstream] ?? .max) < (order[other.kernel.upstream] ?? .max) ? (entry, other) : (other, entry)
                    chosen[slot] = keep
                    shadowed.append("\(drop.recipe) for \(drop.kernel) (\(keep.kernel) has the same release)")
                } else {
                    chosen[slot] = entry
                }
            }
            let published = signed.filter { chosen[$0.recipe + "/" + $0.kernel.release]?.node == $0.node }
            let modules = published.map { PublishAction.Module(recipe: $0.recipe, kernel: $0.kernel) }
            var action = PublishAction(directory: (directory as NSString).standardizingPath, machines: machines, outputs: outputs,
                                       modules: modules, shadowed: shadowed.sorted(),
                                       repositoryKey: repositoryKey, repositoryKeyPaths: signing.repositoryPaths)
            action.tables = profiles.map(\.table)
            action.baseURL = publish.url
            graph.add(action, as: .publish(directory: publish.dir), dependencies: zip(modules, published).map {
                .init(role: $0.role, node: $1.node, optional: true)
            } + profiles.map { .init(role: $0.table.role, node: $0.node, optional: true) })
        case let .failure(error):
            graph.add(UnbuildableAction(task: .publish(directory: publish.dir), message: error.message, missing: FarmError.environment(error.message)),
                      as: .publish(directory: publish.dir))
        }
    }

    /// The bundle, each recipe's compile and sign, and the profile: the last of compile and sign
    /// holds the module the repository publishes.
    public func reportTasks(for kernel: Kernel, manifest: Manifest, recipes: RecipeBook) -> KernelTasks {
        let signed = manifest.signing != nil
        let modules = recipes.order.compactMap { recipes.recipes[$0] }.map { recipe in
            KernelTasks.Module(recipe: recipe.name, file: recipe.outputName(release: kernel.release),
                               tasks: [FarmTask.compile(recipe: recipe.name, kernel: kernel.name).name]
                                   + (signed ? [FarmTask.sign(recipe: recipe.name, kernel: kernel.name).name] : []),
                               signatureOutput: signed ? "signature" : nil)
        }
        let profile = manifest.profiles ? FarmTask.profile(kernel: kernel.name).name : nil
        return KernelTasks(tasks: [FarmTask.bundle(kernel: kernel.name).name] + modules.flatMap(\.tasks) + (profile.map { [$0] } ?? []),
                           modules: modules, profile: profile)
    }

    /// The kernel's image package, fetched like any package, and the initramfs task over it.
    public func planLab(_ kernel: Kernel, manifest: Manifest, into graph: inout BuildGraph) throws -> BuildGraph.NodeID {
        guard let fetched = imageFetch(kernel, mirrors: MirrorResolver(manifest: manifest, aptRoot: aptRoot), into: &graph) else {
            throw FarmError.badInput("\(manifest.path):\(kernel.location.line):\(kernel.location.column): kernel \(kernel.release) has no 'image:' package"
                            + " pinned; run 'farm crawl' (an image no mirror serves is left out)")
        }
        return graph.add(try InitramfsAction(release: kernel.release), as: .initramfs(kernel: kernel.name),
                         dependencies: [.init(role: "image", node: fetched)])
    }

    public func planProfile(_ kernel: Kernel, manifest: Manifest, into graph: inout BuildGraph) throws -> BuildGraph.NodeID {
        guard let node = profile(kernel, mirrors: MirrorResolver(manifest: manifest, aptRoot: aptRoot), into: &graph) else {
            throw FarmError.badInput("\(manifest.path):\(kernel.location.line):\(kernel.location.column): kernel \(kernel.release) has no 'image:' package"
                            + " pinned, and its symbol table is made from it; run 'farm crawl' (an image no mirror serves is left out)")
        }
        return node
    }

    /// The kernel's profile task over its image package; nil when the manifest pins no image for it.
    /// A kernel whose family did not build it with BTF also gets the types task, whose BTF the
    /// profile takes instead; when no toolchain covers that kernel, the profile fails with the reason.
    /// `catalog`: the plan's toolchain recipes when it has read them, else read here.
    func profile(_ kernel: Kernel, mirrors: MirrorResolver, catalog: ToolchainCatalog? = nil, into graph: inout BuildGraph) -> BuildGraph.NodeID? {
        guard let image = imageFetch(kernel, mirrors: mirrors, into: &graph) else { return nil }
        let task = FarmTask.profile(kernel: kernel.name)
        guard !kernel.family.shipsBTF(kernel) else {
            return graph.add(ProfileAction(release: kernel.release), as: task, dependencies: [.init(role: "image", node: image)])
        }
        do {
            let types = try planTypes(kernel, manifest: mirrors.manifest, catalog: catalog, into: &graph)
            return graph.add(ProfileAction(release: kernel.release, typesFromModule: true), as: task,
                             dependencies: [.init(role: "image", node: image), .init(role: "types", node: types)])
        } catch {
            return graph.add(UnbuildableAction(task: task, message: "\(kernel.name) has no BTF in its image, and its types module cannot be built: \(error)"),
                             as: task)
        }
    }

    /// The fetch task of the kernel's image package; nil when none is pinned.
    func imageFetch(_ kernel: Kernel, mirrors: MirrorResolver, into graph: inout BuildGraph) -> BuildGraph.NodeID? {
        guard let image = kernel.image else { return nil }
        let (urls, reason) = mirrors.urls(for: image, upstream: kernel.upstream, suite: kernel.suite)
        let fetch = FetchAction(package: image, urls: urls, reason: reason, upstream: mirrors.manifest.upstream(named: kernel.upstream),
                                manifestDirectory: mirrors.manifest.directory)
        return graph.add(fetch, as: .fetch(file: fetch.file))
    }

    /// The `types` task of a kernel (its bundle and toolchain first): the kernel's types as BTF,
    /// from the DWARF of farm's types module, for a kernel whose image carries no BTF. Not part of
    /// `plan`: the profile task asks for it only for such kernels. Throws when no toolchain
    /// recipe covers the kernel, naming the compiler it needs.
    public func planTypes(_ kernel: Kernel, manifest: Manifest, catalog: ToolchainCatalog? = nil, into graph: inout BuildGraph) throws -> BuildGraph.NodeID {
        let mirrors = MirrorResolver(manifest: manifest, aptRoot: aptRoot)
        let catalog = try catalog ?? ToolchainCatalog.load(directory: manifest.directory + "/recipes/toolchains")
        let recipe = try catalog.recipe(for: kernel, in: manifest)
        let upstream = try ToolchainCatalog.upstream(of: recipe, for: kernel, in: manifest)
        let bundle = bundle(kernel, mirrors: mirrors, into: &graph)
        let root = toolchain(recipe, upstream: upstream, mirrors: mirrors, into: &graph)
        return graph.add(TypesAction(release: kernel.release, toolchain: recipe, backend: backend(manifest)), as: .types(kernel: kernel.name),
                         dependencies: [.init(role: "bundle", node: bundle), .init(role: "toolchain", node: root)])
    }

    /// `--sandbox`, else the manifest's `sandbox:`, else bwrap.
    func backend(_ manifest: Manifest) -> SandboxBackend {
        sandbox ?? manifest.sandbox.flatMap(SandboxBackend.init(rawValue:)) ?? .bwrap
    }

    /// The toolchain task of a recipe, its mirror worked out from the upstream.
    func toolchain(_ recipe: ToolchainRecipe, upstream: Upstream, mirrors: MirrorResolver, into graph: inout BuildGraph) -> BuildGraph.NodeID {
        let lines = recipe.suites.map { mirrors.sourceLine(upstream: upstream.name, suite: $0, components: recipe.components) }
        let reason = lines.lazy.compactMap(\.reason).first
        let action = ToolchainAction(recipe: recipe, sources: reason == nil ? lines.compactMap(\.line) : [], reason: reason)
        return graph.add(action, as: .toolchain(name: recipe.name))
    }

    /// The task that provides a recipe's source, as the `source` dependency of its compile tasks.
    func source(of recipe: Recipe, manifest: Manifest, mirrors: MirrorResolver, into graph: inout BuildGraph) throws -> BuildGraph.Dependency {
        switch recipe.source {
        case let .package(name):
            guard let pinned = manifest.packages.first(where: { $0.name == name }) else {
                throw FarmError.badInput("recipe \(recipe.path) takes its source from the package \(name), which \(manifest.path) does not pin;"
                                + " run 'farm crawl' to pin it")
            }
            let (urls, reason) = mirrors.urls(for: pinned.package, upstream: pinned.upstream, suite: pinned.suite)
            let action = FetchAction(package: pinned.package, urls: urls, reason: reason)
            return .init(role: "source", node: graph.add(action, as: .fetch(file: action.file)))
        case let .directory(path):
            let directory = path.hasPrefix("/") ? path : manifest.directory + "/" + path
            let action = try SourceDirectoryAction(recipe: recipe.name, directory: (directory as NSString).standardizingPath)
            return .init(role: "source", node: graph.add(action, as: .source(recipe: recipe.name)))
        case let .git(url, commit):
            let action = SourceGitAction(recipe: recipe.name, url: url, commit: commit)
            return .init(role: "source", node: graph.add(action, as: .source(recipe: recipe.name)))
        }
    }

    /// The kernel's bundle task, after the fetch tasks of its packages.
    @discardableResult
    func bundle(_ kernel: Kernel, mirrors: MirrorResolver, into graph: inout BuildGraph) -> BuildGraph.NodeID {
        let packages = fetchTasks(for: kernel, mirrors: mirrors, into: &graph)
        return graph.add(BundleAction(release: kernel.release, distro: kernel.family.bundleDistro), as: .bundle(kernel: kernel.name), dependencies: packages)
    }

    /// The fetch tasks of a kernel's packages, as `package.N` dependencies in the packages' order.
    func fetchTasks(for kernel: Kernel, mirrors: MirrorResolver, into graph: inout BuildGraph) -> [BuildGraph.Dependency] {
        kernel.packages.enumerated().map { index, package in
            let (urls, reason) = mirrors.urls(for: package, upstream: kernel.upstream, suite: kernel.suite)
            let action = FetchAction(package: package, urls: urls, reason: reason, upstream: mirrors.manifest.upstream(named: kernel.upstream),
                                     manifestDirectory: mirrors.manifest.directory)
            return BuildGraph.Dependency(role: "package.\(index)", node: graph.add(action, as: .fetch(file: action.file)))
        }
    }
}

/// A task that cannot be built as planned: it fails with the planner's reason when it runs.
public struct UnbuildableAction: TaskAction {
    public let kind: String
    public let message: String

    public init(task: FarmTask, message: String, missing: FarmError? = nil) {
        kind = task.kind
        self.message = message
        self.missing = missing
    }
    /// A problem of the machine rather than of this one task (the signing keys are missing): then
    /// the build stops before anything runs instead of failing this task minutes later.
    public var missing: FarmError?
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("unbuildable", message)] }
    // Keyed by the problem alone: the sign and publish tasks missing one key report it once.
    public var requirements: [Requirement] { missing.map { [.unmet("missing:" + $0.message, $0)] } ?? [] }
    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        throw FarmError.badInput(message)
    }
}

extension Signing {
    /// The keys the manifest at `path` names, when that manifest exists and has `signing:`: the
    /// defaults `farm verify` and `farm capture` trust, since they are the user's own.
    public static func paths(manifestAt path: String) -> (module: ModuleKey.Paths, repository: RepositoryKey.Paths)? {
        guard FileManager.default.fileExists(atPath: path), let manifest = try? ManifestLoader.load(path: path) else { return nil }
        return paths(manifest: manifest)
    }

    /// Where the manifest's `signing:` keys live (relative paths from the manifest's directory);
    /// nil when the manifest has no `signing:`.
    public static func paths(manifest: Manifest) -> (module: ModuleKey.Paths, repository: RepositoryKey.Paths)? {
        guard let signing = manifest.signing else { return nil }
        func resolve(_ path: String) -> String { path.hasPrefix("/") ? path : manifest.directory + "/" + path }
        return (ModuleKey.Paths(base: resolve(signing.moduleKey ?? "keys/module")),
                RepositoryKey.Paths(base: resolve(signing.repoKey ?? "keys/repo")))
    }

    /// The manifest's keys, as planning finds them: the sign and publish tasks' keys name their
    /// fingerprints, so they are read (the public halves only) when the graph is planned.
    struct Plan {
        let modulePaths: ModuleKey.Paths
        let repositoryPaths: RepositoryKey.Paths
        let keys: Result<(ModuleKey, RepositoryKey), FarmError>

        /// nil when the manifest has no `signing:`.
        init?(manifest: Manifest) {
            guard let paths = Signing.paths(manifest: manifest) else { return nil }
            (modulePaths, repositoryPaths) = paths
            do {
                guard let moduleKey = try ModuleKey.load(modulePaths) else {
                    throw FarmError.badInput("no module-signing key (\(modulePaths.metadata) is missing); run 'farm keys init' to make the keys"
                                   + " \(manifest.path) names under 'signing:'")
                }
                guard let repositoryKey = try RepositoryKey.load(repositoryPaths) else {
                    throw FarmError.badInput("no repository key (\(repositoryPaths.metadata) is missing); run 'farm keys init' to make the keys"
                                   + " \(manifest.path) names under 'signing:'")
                }
                keys = .success((moduleKey, repositoryKey))
            } catch let error as FarmError {
                keys = .failure(error)
            } catch {
                keys = .failure(FarmError.badInput("\(error)"))
            }
        }
    }
}
