import FarmEngine
import Foundation

/// What one SSH round trip learns about a host before anything is uploaded: its kernel, its
/// name, whether it loads a module farm signed, and its RAM. One round trip because each SSH
/// connection costs a key exchange, and a host under incident response should be touched little.
public struct HostFacts: Sendable, Equatable {
    /// A file read on the host: its text, or why there is none.
    public enum File: Sendable, Equatable {
        case text(String)
        case absent
        case unreadable
    }

    public var release: String
    public var machine: String
    public var isRoot: Bool
    /// `uname -n`.
    public var hostname: String
    /// `/proc/version`: the kernel's `linux_banner` without its trailing NUL.
    public var procVersion: String
    /// `/sys/kernel/security/lockdown`.
    public var lockdown: File
    /// `/sys/module/module/parameters/sig_enforce`.
    public var sigEnforce: File
    public var iomem: String

    static let marker = "--farm-- "
    static let absentMarker = "--farm-absent--"
    static let unreadableMarker = "--farm-unreadable--"

    /// The remote command (POSIX sh, busybox's too). Each fact follows a marker line, so a
    /// fact that prints nothing or several lines is still told apart from the next.
    public static let script = """
    f() { if [ -e "$1" ]; then cat "$1" 2>/dev/null || echo '\(unreadableMarker)'; else echo '\(absentMarker)'; fi; }; \
    echo '\(marker)release'; uname -r; echo '\(marker)machine'; uname -m; echo '\(marker)uid'; id -u; \
    echo '\(marker)hostname'; uname -n; echo '\(marker)version'; cat /proc/version; \
    echo '\(marker)lockdown'; f /sys/kernel/security/lockdown; \
    echo '\(marker)sig_enforce'; f /sys/module/module/parameters/sig_enforce; \
    echo '\(marker)iomem'; cat /proc/iomem
    """

    /// Parses `script`'s output; `host` names the host in errors.
    public static func parse(_ output: String, host: String) throws -> HostFacts {
        var sections: [String: [String]] = [:]
        var current: String?
        for line in output.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            if line.hasPrefix(marker) {
                current = String(line.dropFirst(marker.count))
                sections[current!] = []
            } else if let current {
                sections[current, default: []].append(String(line))
            }
        }
        func text(_ name: String) -> String? {
            guard var lines = sections[name] else { return nil }
            while lines.last?.isEmpty == true { lines.removeLast() }
            return lines.joined(separator: "\n")
        }
        func required(_ name: String, _ what: String) throws -> String {
            guard let value = text(name), !value.isEmpty else {
                throw FarmError("\(host): \(what) printed nothing; is it a Linux host with a POSIX shell?")
            }
            return value
        }
        func file(_ name: String) -> File {
            switch text(name) {
            case nil, absentMarker?: .absent
            case unreadableMarker?: .unreadable
            case let value?: .text(value)
            }
        }
        return HostFacts(release: try required("release", "uname -r"), machine: try required("machine", "uname -m"),
                         isRoot: try required("uid", "id -u") == "0", hostname: try required("hostname", "uname -n"),
                         procVersion: try required("version", "cat /proc/version"), lockdown: file("lockdown"),
                         sigEnforce: file("sig_enforce"), iomem: text("iomem") ?? "")
    }

    /// The host key the connection used, from `ssh -v`'s `debug1: Server host key: ssh-ed25519
    /// SHA256:...` (the key exchange's own line, so it is the key this connection checked
    /// against known_hosts, not one of several known_hosts may list for the name).
    public static func hostKey(sshDebug: String) -> String? {
        let label = "Server host key: "
        // ssh ends its debug lines with "\r\n", one Character in Swift, which a split on "\n" misses.
        guard let line = sshDebug.split(whereSeparator: \.isNewline).first(where: { $0.contains(label) }),
              let range = line.range(of: label) else { return nil }
        let key = line[range.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
        return key.isEmpty ? nil : key
    }
}
