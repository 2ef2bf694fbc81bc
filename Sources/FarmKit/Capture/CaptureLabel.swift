import FarmEngine
import Foundation

/// The free text a responder puts in a capture's record (`--case`, `--operator`): printable, so
/// the sidecar and any report made from it show what was typed and nothing else (no newline to
/// forge a line, no bidirectional override to reorder what a reader sees).
public enum CaptureLabel {
    public static let longest = 128

    /// `text` when it is 1 to 128 printable characters; a bad-input error naming `option` otherwise.
    public static func validated(_ text: String, option: String) throws -> String {
        guard !text.isEmpty else { throw FarmError.badInput("\(option) is empty; give 1 to \(longest) printable characters") }
        guard text.count <= longest else {
            throw FarmError.badInput("\(option) has \(text.count) characters; at most \(longest) are kept in the capture's record")
        }
        let unprintable: Set<Unicode.GeneralCategory> = [.control, .format, .privateUse, .surrogate, .unassigned,
                                                         .lineSeparator, .paragraphSeparator]
        if let bad = text.unicodeScalars.first(where: { unprintable.contains($0.properties.generalCategory) }) {
            let code = String(format: "U+%04X", bad.value)
            throw FarmError.badInput("\(option) holds the unprintable character \(code); use printable characters only")
        }
        return text
    }

    /// Who runs farm: the user who ran sudo when farm runs under it, else the effective user.
    public static func localOperator(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if geteuid() == 0, let invoker = environment["SUDO_USER"], !invoker.isEmpty { return invoker }
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return environment["USER"] ?? "uid \(geteuid())"
    }
}
