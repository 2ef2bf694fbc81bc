import Foundation

/// Walks a directory tree without following symlinks (a link to `/` in a toolchain root must not
/// lead out of it). Paths given to the callbacks are relative to the root, which is "".
enum FileWalk {
    /// Calls `entering` for every entry (a directory before its contents) and `leaving` for every
    /// directory after its contents. A directory that cannot be listed is passed over.
    static func walk(_ root: String, entering: (String, stat) throws -> Void,
                     leaving: (String, stat) throws -> Void) rethrows {
        try visit(root, relative: "", entering: entering, leaving: leaving)
    }

    static func walk(_ root: String, entering: (String, stat) throws -> Void) rethrows {
        try visit(root, relative: "", entering: entering, leaving: { _, _ in })
    }

    private static func visit(_ path: String, relative: String, entering: (String, stat) throws -> Void,
                              leaving: (String, stat) throws -> Void) rethrows {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        try entering(relative, info)
        guard info.st_mode & S_IFMT == S_IFDIR else { return }
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() {
            try visit(path + "/" + name, relative: relative.isEmpty ? name : relative + "/" + name, entering: entering, leaving: leaving)
        }
        try leaving(relative, info)
    }

    /// The space a tree takes on disk, as `du` counts it: allocated blocks, each inode once.
    static func diskUsage(_ root: String) -> Int64 {
        var seen = Set<[UInt64]>()
        var bytes: Int64 = 0
        walk(root) { _, info in
            if info.st_nlink > 1, info.st_mode & S_IFMT != S_IFDIR, !seen.insert([UInt64(info.st_dev), UInt64(info.st_ino)]).inserted { return }
            bytes += Int64(info.st_blocks) * 512
        }
        return bytes
    }
}
