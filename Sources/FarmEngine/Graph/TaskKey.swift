/// The canonical description of a task that its key hashes: kind, implementation version,
/// parameters and the content digests of its inputs (never their keys, so a dependency that reruns
/// and yields the same bytes changes nothing downstream).
public struct TaskDefinition: Sendable, Hashable {
    public struct Input: Sendable, Hashable {
        public var role: String
        public var output: String
        public var digest: Digest

        public init(role: String, output: String, digest: Digest) {
            self.role = role
            self.output = output
            self.digest = digest
        }
    }

    public var kind: String
    public var version: Int
    public var parameters: [(name: String, value: String)]
    public var inputs: [Input]

    public init(kind: String, version: Int, parameters: [(name: String, value: String)], inputs: [Input]) {
        self.kind = kind
        self.version = version
        self.parameters = parameters.sorted { $0.name < $1.name }
        self.inputs = inputs.sorted { ($0.role, $0.output) < ($1.role, $1.output) }
    }

    public static func == (lhs: TaskDefinition, rhs: TaskDefinition) -> Bool { lhs.encoded == rhs.encoded }
    public func hash(into hasher: inout Hasher) { hasher.combine(encoded) }

    /// One line per fact; every free-form value is length-prefixed so no two definitions encode alike.
    public var encoded: String {
        // Built by appending rather than interpolating: a no-op build encodes every task once.
        var text = "farm-task 1\nkind "
        text.reserveCapacity(256)
        func field(_ value: String) {
            text.append(String(value.utf8.count))
            text.append(":")
            text.append(value)
        }
        field(kind)
        text.append("\nversion ")
        text.append(String(version))
        text.append("\n")
        for (name, value) in parameters {
            text.append("param ")
            field(name)
            text.append(" ")
            field(value)
            text.append("\n")
        }
        for input in inputs {
            text.append("input ")
            field(input.role)
            text.append(" ")
            field(input.output)
            text.append(" ")
            text.append(input.digest.hex)
            text.append("\n")
        }
        return text
    }

    public var key: Digest { SHA256.hash(encoded) }

    /// Reads back an encoding made by `encoded` (as stored for `farm explain`).
    public init?(encoded text: String) {
        var kind: String?
        var version: Int?
        var parameters: [(String, String)] = []
        var inputs: [Input] = []
        var rest = Substring(text)
        func field(_ line: inout Substring) -> String? {
            guard let colon = line.firstIndex(of: ":"), let count = Int(line[line.startIndex..<colon]) else { return nil }
            let start = line.index(after: colon)
            let utf8 = line[start...].utf8
            guard utf8.count >= count else { return nil }
            let end = utf8.index(utf8.startIndex, offsetBy: count)
            let value = String(line[start..<end])
            line = line[end...].drop(while: { $0 == " " })
            return value
        }
        guard rest.hasPrefix("farm-task 1\n") else { return nil }
        rest = rest.dropFirst("farm-task 1\n".count)
        while !rest.isEmpty {
            guard let space = rest.firstIndex(of: " ") else { return nil }
            let tag = rest[rest.startIndex..<space]
            var line = rest[rest.index(after: space)...]
            switch tag {
            case "kind": kind = field(&line)
            case "version":
                let digits = line.prefix(while: \.isNumber)
                version = Int(digits)
                line = line.dropFirst(digits.count)
            case "param":
                guard let name = field(&line), let value = field(&line) else { return nil }
                parameters.append((name, value))
            case "input":
                guard let role = field(&line), let output = field(&line),
                      let digest = Digest(hex: String(line.prefix(64))) else { return nil }
                inputs.append(Input(role: role, output: output, digest: digest))
                line = line.dropFirst(64)
            default: return nil
            }
            guard line.first == "\n" else { return nil }
            rest = line.dropFirst()
        }
        guard let kind, let version else { return nil }
        self.init(kind: kind, version: version, parameters: parameters, inputs: inputs)
    }
}

/// What a dependency gives the task that needs it, as far as is known.
public enum InputResolution: Sendable {
    /// Its outputs (built now, or taken from the store).
    case outputs([String: Digest])
    /// It failed or was skipped: an optional input is then left out.
    case absent
    /// Not known yet (it will run first); the text says why, for a dry run or `farm explain`.
    case unknown(String)
}

/// A task's definition as its dependencies allow.
public enum DefinitionResolution: Sendable {
    case resolved(TaskDefinition)
    /// An input will be made first, so the key is not known yet.
    case unknown(String)
    /// A required input failed or was skipped: the task is skipped too.
    case skipped(String)
}

extension TaskDefinition {
    /// The one way a task's definition (and so its key) is made from its dependencies: the
    /// scheduler, the dry run and `farm explain` all call this, so they cannot disagree.
    public static func resolve(_ node: BuildGraph.Node, in graph: BuildGraph,
                               _ resolution: (BuildGraph.Dependency) -> InputResolution) -> DefinitionResolution {
        var inputs: [Input] = []
        for dependency in node.dependencies {
            switch resolution(dependency) {
            case let .outputs(outputs):
                for (name, digest) in outputs { inputs.append(.init(role: dependency.role, output: name, digest: digest)) }
            case .absent where dependency.optional:
                continue
            case .absent:
                return .skipped("input \(dependency.role) (\(graph.nodes[dependency.node].name)) fails")
            case let .unknown(why):
                return .unknown("input \(dependency.role) (\(graph.nodes[dependency.node].name)) will be rebuilt: \(why)")
            }
        }
        return .resolved(TaskDefinition(kind: node.kind, version: node.action.version, parameters: node.action.parameters, inputs: inputs))
    }
}
