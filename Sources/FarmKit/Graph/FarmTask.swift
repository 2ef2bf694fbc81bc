import FarmEngine
/// A task of farm's, named by what it is for. Rules add tasks under these names, commands ask
/// for them, messages print them: a task's label is built here and nowhere else, and never
/// parsed back (`farm log`, `farm explain` take what a user typed, `kind:label`, as a string).
public enum FarmTask: Hashable, Sendable, CustomStringConvertible {
    case fetch(file: String)
    case bundle(kernel: KernelName)
    case source(recipe: String)
    case toolchain(name: String)
    case compile(recipe: String, kernel: KernelName)
    case sign(recipe: String, kernel: KernelName)
    case publish(directory: String)
    case initramfs(kernel: KernelName)
    case types(kernel: KernelName)
    case profile(kernel: KernelName)

    public var kind: String {
        switch self {
        case .fetch: "fetch"
        case .bundle: "bundle"
        case .source: "source"
        case .toolchain: "toolchain"
        case .compile: "compile"
        case .sign: "sign"
        case .publish: "publish"
        case .initramfs: "initramfs"
        case .types: "types"
        case .profile: "profile"
        }
    }

    public var label: String {
        switch self {
        case let .fetch(file): file
        case let .bundle(kernel), let .initramfs(kernel), let .types(kernel), let .profile(kernel): kernel.description
        case let .source(recipe): recipe
        case let .toolchain(name): name
        case let .compile(recipe, kernel), let .sign(recipe, kernel): recipe + "/" + kernel.description
        case let .publish(directory): directory
        }
    }

    /// `kind:label`, as `farm plan` prints it and `farm log` takes it.
    public var name: String { kind + ":" + label }
    public var description: String { name }
}

extension BuildGraph {
    /// Adds `action` as `task` (once: a task already there is returned). The action's kind must be the task's.
    @discardableResult
    public mutating func add(_ action: any TaskAction, as task: FarmTask, dependencies: [Dependency] = []) -> NodeID {
        precondition(action.kind == task.kind, "a \(action.kind) action added as \(task)")
        return add(action, label: task.label, dependencies: dependencies)
    }

    public func node(for task: FarmTask) -> Node? { node(named: task.name) }
}
