import Foundation

/// What a killed farm left behind in the cache: work directories (an mmdebstrap root of 250 MB
/// with its gpg home), half-unpacked trees. Its children died with it, so what is left is
/// only files, and possibly mounts a child made and nobody unmounted.
public enum Leftovers {
    /// Whether process `pid` exists (EPERM: it exists, owned by someone else).
    public static func isRunning(_ pid: Int32) -> Bool { pid > 0 && (kill(pid, 0) == 0 || errno == EPERM) }

    /// Removes the entries of `directory` named `<hint>-<pid>-<number>` (`ContentStore.temporaryPath`)
    /// whose process is gone; a running farm's entries stay. Returns how many were removed.
    @discardableResult
    public static func removeAbandoned(in directory: String) -> Int {
        var removed = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let parts = name.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]), UInt64(parts[parts.count - 1]) != nil,
                  !isRunning(pid) else { continue }
            if remove(directory + "/" + name) { removed += 1 }
        }
        return removed
    }

    /// Removes a file or a tree. Anything mounted below it is detached first (lazily, so a busy
    /// mount goes too), and the removal never crosses into another file system: a leftover bind
    /// of the host's /dev/shm or /proc loses its mount, never its contents. Returns whether the
    /// path is gone.
    @discardableResult
    public static func remove(_ path: String) -> Bool {
        for mount in mountPoints(below: path) { umount2(mount, Int32(MNT_DETACH)) }
        var status = stat()
        guard lstat(path, &status) == 0 else { return errno == ENOENT }
        removeTree(path, device: status.st_dev)
        return lstat(path, &status) != 0
    }

    private static func removeTree(_ path: String, device: dev_t) {
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            unlink(path)
            return
        }
        guard status.st_dev == device else { return }
        // A read-only directory (a root's /proc, an unpacked tree) cannot lose its entries otherwise.
        if status.st_mode & S_IRWXU != S_IRWXU { chmod(path, (status.st_mode & 0o7777) | S_IRWXU) }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            removeTree(path + "/" + name, device: device)
        }
        rmdir(path)
    }

    /// The mount points at or below `path` in this process's mount namespace, deepest first.
    static func mountPoints(below path: String) -> [String] {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        let points = table.split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { return nil }
            let point = unescape(String(fields[4]))
            return point == path || point.hasPrefix(path + "/") ? point : nil
        }
        return points.sorted { $0.count > $1.count }
    }

    /// mountinfo writes space, tab, newline and backslash as three octal digits after a backslash.
    static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let code = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(code)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
