import FarmEngine
import Foundation

/// Turns the extracted header packages of one kernel into `bundle-<release>.tgz` in
/// kernel-packer's layout, byte for byte the same for the same packages. The layout depends on
/// the distro: Debian's kbuild, arch and common packages (`usr/src/linux-headers-<release>`), or
/// RHEL's one kernel-devel (`redhat`: `usr/src/kernels/<release>` and nothing else of the package).
public enum BundleBuilder {
    /// What the build changed on the way, for the task's log.
    public struct Report: Sendable {
        public var entries = 0
        /// `path -> new target (was old target)` for every absolute symlink made relative.
        public var relativized: [String] = []
        public var rewrittenMakefiles: [String] = []
        /// `path -> target` for every symlink that led nowhere in the bundle's tree.
        public var removedLinks: [String] = []
        /// What of the staging directory is not in the bundle: top-level names other than `usr`
        /// and `lib`; for `redhat`, every path outside the kernel's tree.
        public var dropped: [String] = []
    }

    private enum Node {
        case directory
        case file(source: String, executable: Bool)
        case contents(Data, executable: Bool)
        case symlink(String)
    }

    /// How the tar is stored: gzip for a bundle; plain for comparing two builds' trees byte for byte.
    public enum Compression: Sendable {
        /// gzip at level 6 compressed on every core, one member per fixed block (`Deflate.GzipWriter`).
        case gzip
        case none
    }

    /// Builds `output` from the packages read into `packages` (in their order), without a file
    /// on disk but the output.
    @discardableResult
    public static func build(packages: ExtractedTree, release: String, distro: String, checksum: String,
                             output: String, compression: Compression = .gzip) throws -> Report {
        var report = Report()
        var tree: [String: Node] = [:]
        tree.reserveCapacity(packages.nodes.count)
        var topLevel = Set<String>()
        for (path, node) in packages.nodes {
            let top = path.prefix { $0 != "/" }
            guard top == "usr" || top == "lib" else {
                topLevel.insert(String(top))
                continue
            }
            switch node {
            case .directory: tree[path] = .directory
            case let .file(file): tree[path] = .contents(file.data, executable: file.mode & 0o111 != 0)
            case let .symlink(target): tree[path] = .symlink(target)
            }
        }
        report.dropped = topLevel.sorted()
        return try finish(tree: tree, report: report, origin: "the kernel's packages", release: release, distro: distro,
                          checksum: checksum, output: output, compression: compression)
    }

    /// Builds `output` from `stagingRoot`; the staging directory is read, never changed. The bundle
    /// task reads its packages in memory (`build(packages:)`); this is the staged way, kept so tests
    /// can show both give the same tar.
    @discardableResult
    public static func build(stagingRoot: String, release: String, distro: String, checksum: String,
                             output: String, compression: Compression = .gzip) throws -> Report {
        var report = Report()
        var tree: [String: Node] = [:]
        for name in try listDirectory(stagingRoot).sorted() {
            if name == "usr" || name == "lib" {
                try walk(stagingRoot, relative: name, into: &tree)
            } else {
                report.dropped.append(name)
            }
        }
        return try finish(tree: tree, report: report, origin: stagingRoot, release: release, distro: distro,
                          checksum: checksum, output: output, compression: compression)
    }

    /// kernel-packer's layout from the packages' merged tree (`origin` names it in messages).
    private static func finish(tree initialTree: [String: Node], report initialReport: Report, origin: String, release: String,
                               distro: String, checksum: String, output: String, compression: Compression) throws -> Report {
        let version = try versionParts(release)
        var report = initialReport
        var tree = initialTree
        let headers = headersDirectory(distro: distro, release: release)
        guard case .directory = tree[headers] else {
            throw FarmError(message: "\(origin): the packages hold no directory \(headers); "
                              + "check that the kernel's package list has the headers of release \(release)")
        }
        if distro == "redhat" {
            // As kernel-packer's repackage_redhat: the kernel's tree only (a kernel-devel may also
            // carry files elsewhere, such as another release's tree or a build link of its own).
            let ancestors = Set((1..<headers.split(separator: "/").count).map { headers.split(separator: "/").prefix($0).joined(separator: "/") })
            for path in tree.keys where !ancestors.contains(path) && path != headers && !path.hasPrefix(headers + "/") {
                let parent = (path as NSString).deletingLastPathComponent
                if parent.isEmpty || ancestors.contains(parent) { report.dropped.append(path) }
                tree[path] = nil
            }
            report.dropped.sort()
        }

        for (path, node) in tree {
            guard case let .symlink(target) = node, target.hasPrefix("/") else { continue }
            let relative = relativeTarget(target, linkPath: path)
            tree[path] = .symlink(relative)
            report.relativized.append("\(path) -> \(relative) (was \(target))")
        }

        // kernel-packer's layout: the build link is there and relative whatever the packages held
        // (Debian's arch headers package points it at /usr/src by absolute path).
        let modules = "lib/modules/\(release)"
        for directory in ["lib", "lib/modules", modules] {
            switch tree[directory] {
            case nil: tree[directory] = .directory
            case .directory?: break
            default: throw FarmError(message: "\(origin)/\(directory): expected a directory for the bundle's build link; the packages are not laid out as \(distro)'s")
            }
        }
        tree[modules + "/build"] = .symlink("../../../" + headers)

        for (path, node) in tree where path.hasPrefix("usr/src/") && path.hasSuffix("/Makefile") {
            let data: Data, executable: Bool
            switch node {
            case let .file(source, isExecutable):
                guard let contents = FileManager.default.contents(atPath: source) else {
                    throw FileSystemError.io(operation: "read", path: source, errno: errno == 0 ? EIO : errno)
                }
                (data, executable) = (contents, isExecutable)
            case let .contents(contents, isExecutable):
                (data, executable) = (contents, isExecutable)
            default:
                continue
            }
            if let rewritten = rewriteIncludes(data) {
                tree[path] = .contents(rewritten, executable: executable)
                report.rewrittenMakefiles.append(path)
            }
        }

        // Removing one broken link can break a link that led through it, so until none is left.
        var removedAny = true
        while removedAny {
            removedAny = false
            for (path, node) in tree {
                guard case let .symlink(target) = node else { continue }
                if try resolve(path, in: tree) == nil {
                    tree[path] = nil
                    report.removedLinks.append("\(path) -> \(target)")
                    removedAny = true
                }
            }
        }
        report.relativized.sort()
        report.rewrittenMakefiles.sort()
        report.removedLinks.sort()

        // Directory names end in "/" as tar stores them, so the order below is the archive's order.
        var entries: [(name: String, node: Node)] = tree.map { path, node in
            if case .directory = node { return ("./" + path + "/", node) }
            return ("./" + path, node)
        }
        let meta: [(String, String)] = [
            ("BUNDLE_CHECKSUM", checksum), ("BUNDLE_DISTRO", distro), ("BUNDLE_UNAME", release),
            ("BUNDLE_VERSION", version.0), ("BUNDLE_MAJOR", version.1), ("BUNDLE_MINOR", version.2),
            ("BUNDLE_BUILD_DIR", "./" + headers),
        ]
        for (name, value) in meta {
            entries.append(("./" + name, .contents(Data(value.utf8), executable: false)))
        }
        // Byte order of the names, compared as byte arrays (a tenth of comparing the Strings' UTF-8 views).
        let keys = entries.map { Array($0.name.utf8) }
        let order = keys.indices.sorted { a, b in
            keys[a].withUnsafeBufferPointer { x in
                keys[b].withUnsafeBufferPointer { y in
                    let common = memcmp(x.baseAddress!, y.baseAddress!, min(x.count, y.count))
                    return common != 0 ? common < 0 : x.count < y.count
                }
            }
        }
        entries = order.map { entries[$0] }

        // The tar's blocks are compressed on the other cores while the next ones are written.
        let gzip = compression == .gzip ? Deflate.GzipWriter() : nil
        let writer = try Archive.Writer(tarInMemoryNamed: output, gzip: gzip)
        for (name, node) in entries {
            switch node {
            case .directory:
                try writer.addDirectory(name, mode: 0o755)
            case let .file(source, executable):
                try writer.addFile(name, mode: executable ? 0o755 : 0o644, from: source)
            case let .contents(data, executable):
                try writer.addFile(name, mode: executable ? 0o755 : 0o644, contents: data)
            case let .symlink(target):
                try writer.addSymlink(name, target: target)
            }
        }
        try writer.finish()
        // The store syncs what it keeps; the work directory is scratch.
        try AtomicFile.write(Data(try gzip?.finish() ?? writer.bytes), to: output, sync: false)
        report.entries = entries.count
        return report
    }

    /// Where the headers are in the bundle, as `BUNDLE_BUILD_DIR` names them: RHEL's kernel-devel
    /// holds `usr/src/kernels/<release>`, Debian's and Ubuntu's `usr/src/linux-headers-<release>`.
    public static func headersDirectory(distro: String, release: String) -> String {
        distro == "redhat" ? "usr/src/kernels/\(release)" : "usr/src/linux-headers-\(release)"
    }

    /// The first three numbers of the release, as kernel-packer's `bundle_meta` takes them
    /// (6.1.0-47-amd64 gives 6, 1, 0).
    static func versionParts(_ release: String) throws -> (String, String, String) {
        guard !release.isEmpty, !release.contains("/"), release != ".", release != ".." else {
            throw FarmError(message: "'\(release)' is not a kernel release; expected something like 6.1.0-47-amd64")
        }
        let parts = release.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        if parts.count == 3 {
            let third = parts[2].prefix { $0.isASCII && $0.isNumber }
            if [parts[0], parts[1], third].allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } }) {
                return (String(parts[0]), String(parts[1]), String(third))
            }
        }
        throw FarmError(message: "kernel release '\(release)' does not start with three numbers (like 6.1.0-47-amd64); "
                          + "BUNDLE_VERSION, BUNDLE_MAJOR and BUNDLE_MINOR need them")
    }

    /// The relative target equivalent to an absolute one, counted from the link's directory. Only
    /// the leading part before any `..` is shortened: what follows may pass through symlinks.
    static func relativeTarget(_ target: String, linkPath: String) -> String {
        let directory = linkPath.split(separator: "/").dropLast().map(String.init)
        let parts = target.split(separator: "/").map(String.init).filter { $0 != "." }
        var common = 0
        while common < directory.count, common < parts.count, parts[common] != "..", parts[common] == directory[common] {
            common += 1
        }
        let up = Array(repeating: "..", count: directory.count - common)
        let relative = (up + parts[common...]).joined(separator: "/")
        return relative.isEmpty ? "." : relative
    }

    /// Debian's arch headers Makefile includes the common tree's Makefile by absolute path;
    /// collector passes BUILD_ROOT, as kernel-packer's `sed 's|^include /|include $(BUILD_ROOT)/|'` expects.
    static func rewriteIncludes(_ data: Data) -> Data? {
        let prefix = Array("include /".utf8)
        guard data.range(of: Data(prefix)) != nil else { return nil }
        let replacement = Array("include $(BUILD_ROOT)/".utf8)
        var output = [UInt8]()
        output.reserveCapacity(data.count + 64)
        var changed = false
        var lineStart = true
        var index = data.startIndex
        while index < data.endIndex {
            if lineStart, data[index...].starts(with: prefix) {
                output.append(contentsOf: replacement)
                index += prefix.count
                changed = true
                lineStart = false
                continue
            }
            let byte = data[index]
            output.append(byte)
            lineStart = byte == UInt8(ascii: "\n")
            index += 1
        }
        return changed ? Data(output) : nil
    }

    /// Where a symlink leads in the bundle's tree, its root standing for `/`; nil when it leads to
    /// nothing (a missing name, a file used as a directory, or a loop).
    private static func resolve(_ link: String, in tree: [String: Node]) throws -> String? {
        var resolved = link.split(separator: "/").dropLast().map(String.init)
        guard case let .symlink(first) = tree[link] else { return link }
        var pending = Array(first.split(separator: "/", omittingEmptySubsequences: false).reversed().map(String.init))
        if first.hasPrefix("/") { resolved = [] }
        var hops = 1
        while let part = pending.popLast() {
            if part.isEmpty || part == "." { continue }
            if part == ".." {
                guard !resolved.isEmpty else {
                    throw FarmError(message: "symlink \(link) leads above the bundle's root; the packages are malformed or hostile")
                }
                resolved.removeLast()
                continue
            }
            let path = (resolved + [part]).joined(separator: "/")
            switch tree[path] {
            case nil:
                return nil
            case .directory?:
                resolved.append(part)
            case .file?, .contents?:
                guard pending.allSatisfy({ $0 == "." }) else { return nil }
                resolved.append(part)
            case let .symlink(target)?:
                // Linux's limit on symlinks followed in one lookup (MAXSYMLINKS).
                hops += 1
                if hops > 40 { return nil }
                if target.hasPrefix("/") { resolved = [] }
                pending.append(contentsOf: target.split(separator: "/", omittingEmptySubsequences: false).reversed().map(String.init))
            }
        }
        return resolved.joined(separator: "/")
    }

    private static func listDirectory(_ path: String) throws -> [String] {
        guard let handle = opendir(path) else { throw FileSystemError.io(operation: "open directory", path: path, errno: errno) }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    private static func walk(_ root: String, relative: String, into tree: inout [String: Node]) throws {
        let path = root + "/" + relative
        var info = stat()
        guard lstat(path, &info) == 0 else { throw FileSystemError.io(operation: "stat", path: path, errno: errno) }
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            tree[relative] = .directory
            for name in try listDirectory(path) {
                try walk(root, relative: relative + "/" + name, into: &tree)
            }
        case S_IFREG:
            tree[relative] = .file(source: path, executable: info.st_mode & 0o111 != 0)
        case S_IFLNK:
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let count = readlink(path, &buffer, buffer.count - 1)
            guard count >= 0 else { throw FileSystemError.io(operation: "readlink", path: path, errno: errno) }
            tree[relative] = .symlink(String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self))
        default:
            throw FarmError(message: "\(path) is neither a file, a directory nor a symlink; a bundle holds nothing else")
        }
    }
}
