import FarmEngine
import FarmKit
import SyntheticKinds

/// The synthetic kinds planned from a manifest, through the product's `BuildRules`: each manifest
/// kernel becomes a `SyntheticKernel` (a package URL that says `FAIL` makes it fail, as
/// `SyntheticManifest` writes them) and the engine-level `SyntheticPlan` adds its tasks.
public struct SyntheticRules: BuildRules {
    public let publish: Bool

    public init(publish: Bool = true) { self.publish = publish }

    /// The synthetic kinds read nothing but the manifest.
    public func planInputs(manifest: Manifest, recipes: RecipeBook) -> [String]? { [] }
    public var settings: String { "synthetic publish \(publish)" }

    public func reportTasks(for kernel: Kernel, manifest: Manifest, recipes: RecipeBook) -> KernelTasks {
        let module = KernelTasks.Module(recipe: "synthetic", file: "synthetic-\(kernel.release).ko",
                                        tasks: ["synthetic-compile:\(kernel.release)", "synthetic-sign:\(kernel.release)"],
                                        moduleOutput: "signed")
        return KernelTasks(tasks: ["synthetic-bundle:\(kernel.release)"] + module.tasks, modules: [module])
    }

    public func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws {
        SyntheticPlan.add(kernels.map(SyntheticKernel.init), publish: publish, to: &graph)
    }
}

extension SyntheticKernel {
    public init(_ kernel: Kernel) {
        self.init(release: kernel.release,
                  packages: kernel.packages.map { .init(url: $0.url, sha256: $0.sha256) },
                  toolchain: kernel.toolchain ?? "default",
                  fails: kernel.packages.first?.url.contains("FAIL") ?? false)
    }
}
