import Foundation

/// `farm plan --format text|json|dot`.
public enum PlanFormatter {
    public enum Format: String, CaseIterable, Sendable { case text, json, dot }

    public static func format(_ graph: BuildGraph, as format: Format) -> String {
        switch format {
        case .text: return text(graph)
        case .json: return json(graph)
        case .dot: return dot(graph)
        }
    }

    static func text(_ graph: BuildGraph) -> String {
        var out = ""
        for node in graph.nodes {
            out += node.name
            if !node.dependencies.isEmpty {
                out += " <- " + node.dependencies.map { graph.nodes[$0.node].name }.joined(separator: ", ")
            }
            out += "\n"
        }
        out += "\(graph.count) tasks\n"
        return out
    }

    static func json(_ graph: BuildGraph) -> String {
        let tasks: [[String: Any]] = graph.nodes.map { node in
            [
                "id": node.id, "kind": node.kind, "label": node.label, "name": node.name,
                "version": node.action.version, "resource": node.action.resource.rawValue,
                "parameters": Dictionary(node.action.parameters.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a }),
                "dependencies": node.dependencies.map { ["role": $0.role, "task": graph.nodes[$0.node].name] },
            ]
        }
        let data = (try? JSONSerialization.data(withJSONObject: ["tasks": tasks], options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    static func dot(_ graph: BuildGraph) -> String {
        func quote(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        var out = "digraph farm {\n  rankdir=LR;\n  node [shape=box];\n"
        for node in graph.nodes {
            out += "  n\(node.id) [label=\(quote(node.kind + "\n" + node.label))];\n"
        }
        for node in graph.nodes {
            for dependency in node.dependencies {
                out += "  n\(dependency.node) -> n\(node.id) [label=\(quote(dependency.role))];\n"
            }
        }
        return out + "}\n"
    }
}
