import Foundation

/// `farm plan --format text|json|dot`. Written as it is made, task by task, into a sink (the
/// command's standard output through a buffer), so a plan of 50,000 tasks is never one document
/// in memory.
public enum PlanFormatter {
    public enum Format: String, CaseIterable, Sendable { case text, json, dot }

    /// The plan as one string, for tests and small graphs.
    public static func format(_ graph: BuildGraph, as format: Format) -> String {
        var out = ""
        write(graph, as: format) { out += $0 }
        return out
    }

    /// Streams the plan to `standardOutput` in 64 KiB writes.
    public static func print(_ graph: BuildGraph, as format: Format) {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(80 << 10)
        func flush() {
            buffer.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(1, bytes.baseAddress! + offset, bytes.count - offset)
                    if written <= 0 { if errno == EINTR { continue }; return }
                    offset += written
                }
            }
            buffer.removeAll(keepingCapacity: true)
        }
        write(graph, as: format) { text in
            buffer.append(contentsOf: text.utf8)
            if buffer.count >= 64 << 10 { flush() }
        }
        flush()
    }

    public static func write(_ graph: BuildGraph, as format: Format, to sink: (String) -> Void) {
        switch format {
        case .text: text(graph, sink)
        case .json: json(graph, sink)
        case .dot: dot(graph, sink)
        }
    }

    static func text(_ graph: BuildGraph, _ sink: (String) -> Void) {
        for node in graph.nodes {
            var line = node.name
            if !node.dependencies.isEmpty {
                line += " <- " + node.dependencies.map { graph.nodes[$0.node].name }.joined(separator: ", ")
            }
            sink(line + "\n")
        }
        sink("\(graph.count) tasks\n")
    }

    /// `{"tasks": [...]}` with one task object per line, keys sorted (so `grep` and `jq` both work).
    static func json(_ graph: BuildGraph, _ sink: (String) -> Void) {
        sink("{\"tasks\":[\n")
        for node in graph.nodes {
            var line = "{\"dependencies\":["
            line += node.dependencies.map { "{\"role\":\(quoted($0.role)),\"task\":\(quoted(graph.nodes[$0.node].name))}" }.joined(separator: ",")
            line += "],\"id\":\(node.id),\"kind\":\(quoted(node.kind)),\"label\":\(quoted(node.label)),\"name\":\(quoted(node.name)),\"parameters\":{"
            var seen = Set<String>()
            let parameters = node.action.parameters.filter { seen.insert($0.name).inserted }.sorted { $0.name < $1.name }
            line += parameters.map { "\(quoted($0.name)):\(quoted($0.value))" }.joined(separator: ",")
            line += "},\"resource\":\(quoted(node.action.resource.rawValue)),\"version\":\(node.action.version)}"
            sink(line + (node.id == graph.nodes.count - 1 ? "\n" : ",\n"))
        }
        sink("]}\n")
    }

    /// A JSON string: quotes, backslashes and control characters escaped.
    static func quoted(_ text: String) -> String {
        // Task names and parameters almost never need escaping: then the text is used as it is.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            return "\"" + text + "\""
        }
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func dot(_ graph: BuildGraph, _ sink: (String) -> Void) {
        func quote(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        sink("digraph farm {\n  rankdir=LR;\n  node [shape=box];\n")
        for node in graph.nodes {
            sink("  n\(node.id) [label=\(quote(node.kind + "\n" + node.label))];\n")
        }
        for node in graph.nodes {
            for dependency in node.dependencies {
                sink("  n\(dependency.node) -> n\(node.id) [label=\(quote(dependency.role))];\n")
            }
        }
        sink("}\n")
    }
}
