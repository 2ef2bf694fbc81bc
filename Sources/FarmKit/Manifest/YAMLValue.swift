import FarmEngine
import Foundation
import Yams

/// A YAML node that remembers its file, so every complaint about it can say where it is.
struct YAMLValue {
    let node: Node
    let file: String

    var location: SourceLocation {
        let mark = node.mark
        return SourceLocation(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1)
    }

    /// Parses a whole file; a syntax error becomes a located `ManifestError`.
    static func parse(_ text: String, file: String) throws -> YAMLValue? {
        try YAMLAliasCheck.check(text, file: file)
        do {
            // No tag resolution: farm reads scalars by text and style, and the default resolver runs
            // regular expressions over every key it hashes for the duplicate check.
            guard let node = try Yams.compose(yaml: text, .basic) else { return nil }
            return YAMLValue(node: node, file: file)
        } catch let error as YamlError {
            throw located(error, file: file)
        }
    }

    private static func located(_ error: YamlError, file: String) -> ManifestError {
        switch error {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            let where_ = context.map { " (\($0.text) at line \($0.mark.line))" } ?? ""
            return ManifestError("invalid YAML: \(problem)\(where_)", at: SourceLocation(file: file, line: mark.line, column: mark.column))
        case let .duplicatedKeysInMapping(duplicates, context):
            return ManifestError("duplicate key \(duplicates.map { "'\($0)'" }.joined(separator: ", ")) in this mapping; each key may appear once",
                                 at: SourceLocation(file: file, line: context.mark.line, column: context.mark.column))
        case let .reader(problem, _, _, _):
            return ManifestError("unreadable YAML: \(problem)", file: file)
        default:
            return ManifestError("invalid YAML: \(error)", file: file)
        }
    }

    private var kindName: String {
        switch node {
        case .scalar: return "a scalar"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    func fail(_ message: String) -> ManifestError { ManifestError(message, at: location) }

    func string(_ what: String) throws -> String {
        guard case let .scalar(scalar) = node else { throw fail("expected \(what) (a string), found \(kindName)") }
        if scalar.style == .plain, scalar.string.isEmpty || scalar.string == "~" || scalar.string == "null" {
            throw fail("expected \(what) (a string), found nothing")
        }
        return scalar.string
    }

    func integer(_ what: String) throws -> Int {
        guard case let .scalar(scalar) = node, scalar.style == .plain, let value = Int(scalar.string) else {
            throw fail("expected \(what) (a whole number), found \(describe())")
        }
        return value
    }

    func bool(_ what: String) throws -> Bool {
        guard case let .scalar(scalar) = node, scalar.style == .plain else {
            throw fail("expected \(what) (true or false), found \(describe())")
        }
        switch scalar.string {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw fail("expected \(what) (true or false), found '\(scalar.string)'")
        }
    }

    func list(_ what: String) throws -> [YAMLValue] {
        guard case let .sequence(sequence) = node else { throw fail("expected \(what) (a list), found \(kindName)") }
        return sequence.map { YAMLValue(node: $0, file: file) }
    }

    func stringList(_ what: String) throws -> [String] {
        try list(what).map { try $0.string("an entry of \(what)") }
    }

    /// Reads a mapping whose keys must all be in `allowed`; anything else is refused by name.
    func mapping(_ what: String, allowed: [String]) throws -> YAMLMapping {
        guard case let .mapping(mapping) = node else { throw fail("expected \(what) (a mapping), found \(kindName)") }
        var entries: [String: (key: YAMLValue, value: YAMLValue)] = [:]
        for (keyNode, valueNode) in mapping {
            let key = YAMLValue(node: keyNode, file: file)
            let name = try key.string("a key")
            guard allowed.contains(name) else {
                throw key.fail("unknown key '\(name)' in \(what); expected one of: \(allowed.joined(separator: ", "))")
            }
            entries[name] = (key, YAMLValue(node: valueNode, file: file))
        }
        return YAMLMapping(owner: self, what: what, entries: entries)
    }

    /// Reads a mapping with free-form keys (names chosen by the user), in file order.
    func namedEntries(_ what: String) throws -> [(name: String, key: YAMLValue, value: YAMLValue)] {
        guard case let .mapping(mapping) = node else { throw fail("expected \(what) (a mapping), found \(kindName)") }
        return try mapping.map { keyNode, valueNode in
            let key = YAMLValue(node: keyNode, file: file)
            return (try key.string("a name"), key, YAMLValue(node: valueNode, file: file))
        }
    }

    private func describe() -> String {
        if case let .scalar(scalar) = node { return "'\(scalar.string)'" }
        return kindName
    }
}

struct YAMLMapping {
    let owner: YAMLValue
    let what: String
    let entries: [String: (key: YAMLValue, value: YAMLValue)]

    subscript(_ key: String) -> YAMLValue? { entries[key]?.value }

    func required(_ key: String) throws -> YAMLValue {
        guard let value = entries[key]?.value else { throw owner.fail("missing key '\(key)' in \(what)") }
        return value
    }
}
