import FarmEngine
import CYaml
import Foundation

/// The one file that calls libyaml directly: a pass over a file's events before Yams composes
/// it. Yams expands every alias and hashes mapping keys to find duplicates, so an alias used as a
/// key that names a nested alias tree makes composing exponential (426 bytes kept farm busy for
/// minutes). Refused here: an alias as a mapping key, and aliases that would expand the document
/// past `maximumNodes`. Syntax errors are left to Yams, which reports them with their place.
enum YAMLAliasCheck {
    static let maximumNodes = 1_000_000

    static func check(_ text: String, file: String) throws {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return }
        defer { yaml_parser_delete(&parser) }
        var bytes = Array(text.utf8)
        try bytes.withUnsafeMutableBufferPointer { buffer in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            try walk(&parser, file: file)
        }
    }

    /// A collection being read: how many nodes it holds so far (expanded), whether the next node
    /// of a mapping is a key, and the anchor it will be known by.
    private struct Open {
        var isMapping: Bool
        var expectingKey: Bool
        var nodes: Int
        var anchor: String?
    }

    private static func walk(_ parser: inout yaml_parser_t, file: String) throws {
        var anchors: [String: Int] = [:]
        var stack: [Open] = []
        var total = 0

        func location(_ mark: yaml_mark_t) -> SourceLocation {
            SourceLocation(file: file, line: Int(mark.line) + 1, column: Int(mark.column) + 1)
        }
        /// Counts a finished node of `size` (expanded) nodes into its parent.
        func finish(size: Int, anchor: String?, mark: yaml_mark_t) throws {
            if let anchor { anchors[anchor] = size }
            total += size
            guard total <= maximumNodes else {
                throw ManifestError("aliases expand this file past \(maximumNodes) nodes; farm refuses it (write the values out)",
                                    at: location(mark))
            }
            guard !stack.isEmpty else { return }
            stack[stack.count - 1].nodes += size
            if stack[stack.count - 1].isMapping { stack[stack.count - 1].expectingKey.toggle() }
        }
        func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
            pointer.map { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
        }

        while true {
            var event = yaml_event_t()
            guard yaml_parser_parse(&parser, &event) == 1 else { return }
            defer { yaml_event_delete(&event) }
            let mark = event.start_mark
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return
            case YAML_SCALAR_EVENT:
                try finish(size: 1, anchor: string(event.data.scalar.anchor), mark: mark)
            case YAML_ALIAS_EVENT:
                let name = string(event.data.alias.anchor) ?? ""
                if let open = stack.last, open.isMapping, open.expectingKey {
                    throw ManifestError("the alias *\(name) is used as a mapping key; farm takes only plain keys (write the key out)",
                                        at: location(mark))
                }
                // An undefined alias is Yams' to report, with its place.
                try finish(size: anchors[name] ?? 1, anchor: nil, mark: mark)
            case YAML_SEQUENCE_START_EVENT:
                stack.append(Open(isMapping: false, expectingKey: false, nodes: 1, anchor: string(event.data.sequence_start.anchor)))
            case YAML_MAPPING_START_EVENT:
                stack.append(Open(isMapping: true, expectingKey: true, nodes: 1, anchor: string(event.data.mapping_start.anchor)))
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                guard let open = stack.popLast() else { return }
                // Its nodes were counted into `total` as they finished; count only the collection itself.
                total -= open.nodes - 1
                try finish(size: open.nodes, anchor: open.anchor, mark: mark)
            default:
                continue
            }
        }
    }
}
