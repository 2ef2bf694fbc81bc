/// The product's planning rules. Task kinds join as they land (fetch and bundle next, then
/// toolchain, compile, sign and publish); until then a build plans no tasks.
public struct FarmRules: BuildRules {
    public init() {}

    public func plan(kernels: [Kernel], manifest: Manifest, recipes: RecipeBook, into graph: inout BuildGraph) throws {}
}
