import FarmEngine
import Foundation

/// Debian's deb822 control format (Release, Packages, `.sources`): stanzas of `Field: value`
/// lines, continuation lines starting with a space, stanzas separated by blank lines.
public enum ControlFile {
    public typealias Stanza = [String: String]

    /// Parses every stanza; `wanted`, when given, keeps only those fields (a Packages index is
    /// 50 MB and a crawl needs eight of its fields).
    public static func parse(_ data: Data, fields wanted: Set<String>? = nil,
                             keep: ((Stanza) -> Bool)? = nil) -> [Stanza] {
        var stanzas: [Stanza] = []
        var current: Stanza = [:]
        var field: String?
        data.withUnsafeBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            var start = 0
            func finish() {
                if !current.isEmpty, keep?(current) ?? true { stanzas.append(current) }
                current = [:]
                field = nil
            }
            while start <= bytes.count {
                var end = start
                while end < bytes.count, bytes[end] != 10 { end += 1 }
                var lineEnd = end
                if lineEnd > start, bytes[lineEnd - 1] == 13 { lineEnd -= 1 }
                if lineEnd == start {
                    finish()
                } else if bytes[start] == 32 || bytes[start] == 9 {
                    if let name = field {
                        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[(start + 1)..<lineEnd]), as: UTF8.self)
                        current[name, default: ""] += "\n" + text
                    }
                } else if bytes[start] != 35 {  // '#' starts a comment in .sources files
                    var colon = start
                    while colon < lineEnd, bytes[colon] != 58 { colon += 1 }
                    if colon < lineEnd {
                        let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<colon]), as: UTF8.self)
                        if wanted?.contains(name) ?? true {
                            var valueStart = colon + 1
                            while valueStart < lineEnd, bytes[valueStart] == 32 || bytes[valueStart] == 9 { valueStart += 1 }
                            current[name] = String(decoding: UnsafeBufferPointer(rebasing: bytes[valueStart..<lineEnd]), as: UTF8.self)
                            field = name
                        } else {
                            field = nil
                        }
                    }
                }
                start = end + 1
            }
            finish()
        }
        return stanzas
    }
}
