import FarmEngine
import Foundation

/// A package refused or not extracted: which package, which entry, why.
public struct ExtractionError: Error, CustomStringConvertible, LocalizedError {
    /// The package file, with its name and version when they were read.
    public let package: String
    public let entry: String?
    public let problem: String

    public var description: String {
        if let entry { return "package \(package): entry '\(entry)': \(problem)" }
        return "package \(package): \(problem)"
    }

    public var errorDescription: String? { description }
}

/// Unpacks a Debian or RPM package's files into a staging directory, refusing any entry that
/// could write outside it. Several packages can go into one staging directory.
public enum PackageExtractor {
    public enum Format: String, Sendable {
        case deb
        case rpm
    }

    public struct Summary: Sendable {
        public var format: Format
        /// From a .deb's control file; nil for an rpm.
        public var name: String?
        public var version: String?
        public var entries: Int
        public var bytes: Int64
    }

    public static let entryLimit: Int64 = 2 << 30
    public static let packageLimit: Int64 = 8 << 30

    /// Extracts `package` into `stagingRoot` (created if missing), telling the format by magic bytes.
    @discardableResult
    public static func extract(package path: String, into stagingRoot: String) throws -> Summary {
        let format = try detectFormat(path)
        try AtomicFile.makeDirectory(stagingRoot)
        return try unpack(package: path, format: format, into: try Staging(root: stagingRoot))
    }

    /// Reads `package` into `tree` in memory, with every check `extract` makes and the same
    /// overlay rules (a later package's file replaces an earlier one's), without writing a file.
    @discardableResult
    public static func read(package path: String, into tree: ExtractedTree) throws -> Summary {
        try unpack(package: path, format: try detectFormat(path), into: tree)
    }

    /// Reads `packages` into `tree` in their order, as `read(package:into:)` one after the other
    /// would, with the .debs' payloads decompressed at the same time: xz takes most of the time.
    public static func read(packages paths: [String], into tree: ExtractedTree) throws -> [Summary] {
        nonisolated(unsafe) var decoded = [Result<Decoded, any Error>?](repeating: nil, count: paths.count)
        decoded.withUnsafeMutableBufferPointer { buffer in
            nonisolated(unsafe) let buffer = buffer
            DispatchQueue.concurrentPerform(iterations: paths.count) { index in
                buffer[index] = Result { try decode(paths[index]) }
            }
        }
        var summaries: [Summary] = []
        for (index, path) in paths.enumerated() {
            let result = decoded[index]!
            // A placed payload's memory goes back before the next one is read.
            decoded[index] = nil
            switch try result.get() {
            case .rpm:
                summaries.append(try read(package: path, into: tree))
            case let .deb(control, payloads):
                let placer = Placer(destination: tree, package: path)
                if let name = control.name { placer.package = "\(path) (\(name) \(control.version ?? "without version"))" }
                for (member, payload) in payloads {
                    try placer.extractAll(from: Archive.Reader(data: payload, name: "\(path): \(member)"))
                }
                summaries.append(Summary(format: .deb, name: control.name, version: control.version, entries: placer.entries, bytes: placer.bytes))
            }
        }
        return summaries
    }

    private enum Decoded {
        case rpm
        /// The control file's fields and each `data.tar` member's name and decompressed bytes.
        case deb(control: (name: String?, version: String?), payloads: [(String, Data)])
    }

    private static func decode(_ path: String) throws -> Decoded {
        guard try detectFormat(path) == .deb else { return .rpm }
        let reader = try Archive.Reader(path: path)
        var control: (name: String?, version: String?) = (nil, nil)
        var payloads: [(String, Data)] = []
        while let member = try reader.next() {
            if member.path.hasPrefix("control.tar") {
                control = try readControl(Archive.Reader(currentEntryOf: reader))
            } else if member.path.hasPrefix("data.tar") {
                let compressed = try reader.readData(limit: Int(packageLimit))
                let name = "\(path): \(member.path)", limit = Int(packageLimit) + (1 << 30)
                // xz, nearly every .deb's, on every core; the rest through libarchive.
                payloads.append((member.path, member.path.hasSuffix(".xz")
                    ? try LZMA.decompressXZ(compressed, name: name, limit: limit)
                    : try Archive.decompress(compressed, name: name, limit: limit)))
            }
        }
        guard !payloads.isEmpty else {
            let package = control.name.map { "\(path) (\($0) \(control.version ?? "without version"))" } ?? path
            throw ExtractionError(package: package, entry: nil,
                                  problem: "it has no data.tar member, so it is not a Debian binary package; check the package list")
        }
        return .deb(control: control, payloads: payloads)
    }

    private static func unpack(package path: String, format: Format, into destination: some ExtractionDestination) throws -> Summary {
        let placer = Placer(destination: destination, package: path)
        let reader = try Archive.Reader(path: path)
        switch format {
        case .rpm:
            // libarchive strips rpm's lead and header and reads the cpio payload.
            try placer.extractAll(from: reader)
            return Summary(format: .rpm, name: nil, version: nil, entries: placer.entries, bytes: placer.bytes)
        case .deb:
            var control: (name: String?, version: String?) = (nil, nil)
            var sawData = false
            while let member = try reader.next() {
                if member.path.hasPrefix("control.tar") {
                    control = try readControl(Archive.Reader(currentEntryOf: reader))
                    if let name = control.name {
                        placer.package = "\(path) (\(name) \(control.version ?? "without version"))"
                    }
                } else if member.path.hasPrefix("data.tar") {
                    try placer.extractAll(from: Archive.Reader(currentEntryOf: reader))
                    sawData = true
                }
            }
            guard sawData else {
                throw ExtractionError(package: placer.package, entry: nil,
                                      problem: "it has no data.tar member, so it is not a Debian binary package; check the package list")
            }
            return Summary(format: .deb, name: control.name, version: control.version, entries: placer.entries, bytes: placer.bytes)
        }
    }

    /// The regular files of a package whose names (`usr/src/...`, no leading `./`) pass `wanted`,
    /// in the package's order, read by streaming the payload: nothing is written to disk. A wanted
    /// file over `limit` bytes is refused.
    public static func readFiles(package path: String, limit: Int, where wanted: (String) -> Bool) throws -> [(name: String, data: Data)] {
        var files: [(name: String, data: Data)] = []
        func collect(_ reader: Archive.Reader) throws {
            while let entry = try reader.next() {
                var name = Substring(entry.path)
                while name.hasPrefix("./") { name = name.dropFirst(2) }
                guard entry.type == .regular, wanted(String(name)) else { continue }
                files.append((String(name), try reader.readData(limit: limit)))
            }
        }
        let format = try detectFormat(path)
        let reader = try Archive.Reader(path: path)
        switch format {
        case .rpm:
            try collect(reader)
        case .deb:
            while let member = try reader.next() {
                if member.path.hasPrefix("data.tar") { try collect(Archive.Reader(currentEntryOf: reader)) }
            }
        }
        return files
    }

    private static func detectFormat(_ path: String) throws -> Format {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileSystemError.io(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        var magic = [UInt8](repeating: 0, count: 8)
        let count = Glibc.read(fd, &magic, 8)
        if count == 8, magic == Array("!<arch>\n".utf8) { return .deb }
        // RPM's lead starts with these four bytes (rpm's lib/rpmlead.c).
        if count >= 4, magic[0..<4] == [0xED, 0xAB, 0xEE, 0xDB] { return .rpm }
        throw ExtractionError(package: path, entry: nil,
                              problem: "neither a .deb (ar archive) nor an .rpm by its first bytes; check that the right file was fetched")
    }

    private static func readControl(_ reader: Archive.Reader) throws -> (name: String?, version: String?) {
        while let entry = try reader.next() {
            guard entry.path == "./control" || entry.path == "control" else { continue }
            let text = String(decoding: try reader.readData(limit: 1 << 20), as: UTF8.self)
            func field(_ name: String) -> String? {
                text.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                    .map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) }
            }
            return (field("Package"), field("Version"))
        }
        return (nil, nil)
    }
}

/// Where a package's checked entries go: a staging directory on disk or a tree in memory. Paths
/// are components below the package root, already free of absolute names and `..`; a
/// destination throws `Refusal` for what its own state makes unsafe (a path through a symlink).
protocol ExtractionDestination: AnyObject {
    func makeDirectory(_ path: ArraySlice<String>) throws
    func writeFile(_ path: [String], mode: UInt32, from reader: Archive.Reader) throws
    func makeSymlink(_ path: [String], target: String) throws
    /// `target` is an earlier regular file; with `data`, the entry's bytes replace the shared file's.
    func makeHardlink(_ path: [String], to target: [String], named targetName: String, data: Bool, from reader: Archive.Reader) throws
}

/// A destination's reason to refuse an entry; the placer names the package and the entry.
struct Refusal: Error {
    let problem: String
    init(_ problem: String) { self.problem = problem }
}

/// The checks every destination shares: names, links leaving the root, entry types, sizes.
private final class Placer<Destination: ExtractionDestination> {
    let destination: Destination
    var package: String
    var entries = 0
    var bytes: Int64 = 0

    init(destination: Destination, package: String) {
        self.destination = destination
        self.package = package
    }

    func extractAll(from reader: Archive.Reader) throws {
        while let entry = try reader.next() {
            do {
                try place(entry, from: reader)
            } catch let refusal as Refusal {
                throw refuse(entry.path, refusal.problem)
            }
        }
    }

    private func refuse(_ entry: String, _ problem: String) -> ExtractionError {
        ExtractionError(package: package, entry: entry,
                        problem: problem + "; the package was refused: it is malformed or hostile, check where it came from")
    }

    /// The components of an entry name or hardlink target relative to the package root.
    private func components(of name: String, entry: String) throws -> [String] {
        var rest = Substring(name)
        while rest.hasPrefix("./") { rest = rest.dropFirst(2) }
        if rest.hasPrefix("/") { throw refuse(entry, "'\(name)' is an absolute path") }
        let parts = rest.split(separator: "/").map(String.init).filter { $0 != "." }
        if parts.contains("..") { throw refuse(entry, "'\(name)' has a '..' component") }
        return parts
    }

    private func place(_ entry: Archive.Entry, from reader: Archive.Reader) throws {
        let path = try components(of: entry.path, entry: entry.path)
        entries += 1
        guard entry.size <= PackageExtractor.entryLimit else {
            throw refuse(entry.path, "it is \(entry.size) bytes, over the \(PackageExtractor.entryLimit >> 30) GiB limit for one entry")
        }
        bytes += entry.size
        guard bytes <= PackageExtractor.packageLimit else {
            throw refuse(entry.path, "the package passes \(PackageExtractor.packageLimit >> 30) GiB in total here")
        }
        if path.isEmpty {
            guard entry.type == .directory else { throw refuse(entry.path, "it names the package root but is not a directory") }
            return
        }
        switch entry.type {
        case let .other(kind):
            throw refuse(entry.path, "it is a \(kind), which a package of files has no business holding")
        case .directory:
            try destination.makeDirectory(path[...])
        case .regular:
            try destination.writeFile(path, mode: entry.mode, from: reader)
        case .symlink:
            guard let target = entry.symlinkTarget, !target.isEmpty else { throw refuse(entry.path, "the symlink has no target") }
            try checkContained(target, linkDirectory: path.dropLast(), entry: entry.path)
            try destination.makeSymlink(path, target: target)
        case .hardlink:
            let targetPath = try components(of: entry.hardlinkTarget ?? "", entry: entry.path)
            guard !targetPath.isEmpty else { throw refuse(entry.path, "the hardlink has no target") }
            // cpio (rpm's payload) stores a hardlinked file's data with its last name.
            try destination.makeHardlink(path, to: targetPath, named: entry.hardlinkTarget ?? "", data: entry.size > 0, from: reader)
        }
    }

    /// A symlink's target must stay inside the package root: an absolute target counts from the
    /// root (it is where the package would point once installed), a relative one from the link's
    /// directory.
    private func checkContained(_ target: String, linkDirectory: ArraySlice<String>, entry: String) throws {
        var depth = target.hasPrefix("/") ? 0 : linkDirectory.count
        for part in target.split(separator: "/") where part != "." {
            if part == ".." {
                depth -= 1
                if depth < 0 { throw refuse(entry, "its symlink target '\(target)' leads outside the package root") }
            } else {
                depth += 1
            }
        }
    }
}

/// A package's files held in memory as they would be extracted, several packages overlaid in
/// order: the bundle task's input, so 30,000 small files never touch the disk.
public final class ExtractedTree: ExtractionDestination {
    /// A regular file: hardlinked names share one, as they share an inode on disk.
    public final class File {
        public fileprivate(set) var data: Data
        /// Permission bits as extraction sets them (the entry's, plus owner read and write).
        public fileprivate(set) var mode: UInt32

        init(data: Data, mode: UInt32) {
            self.data = data
            self.mode = mode
        }
    }

    public enum Node {
        case directory
        case file(File)
        case symlink(String)
    }

    /// Paths relative to the package root (`usr/src/...`), the root itself not included.
    public private(set) var nodes: [String: Node] = [:]
    /// The directory the last entry went into, known to exist: archives list a directory's
    /// entries together. Nothing here removes or replaces a directory, so it stays true.
    private var lastDirectory: ArraySlice<String>?

    public init() {}

    func makeDirectory(_ path: ArraySlice<String>) throws {
        try directory(path)
    }

    func writeFile(_ path: [String], mode: UInt32, from reader: Archive.Reader) throws {
        let key = try placeable(path)
        nodes[key] = .file(File(data: try contents(reader), mode: mode & 0o777 | 0o600))
    }

    func makeSymlink(_ path: [String], target: String) throws {
        let key = try placeable(path)
        nodes[key] = .symlink(target)
    }

    func makeHardlink(_ path: [String], to target: [String], named targetName: String, data: Bool, from reader: Archive.Reader) throws {
        try walk(target.dropLast(), create: false)
        guard case let .file(file)? = nodes[target.joined(separator: "/")] else {
            throw Refusal("its hardlink target '\(targetName)' is not a regular file extracted before it")
        }
        let key = try placeable(path)
        nodes[key] = .file(file)
        if data { file.data = try contents(reader) }
    }

    /// The current entry's bytes, a sparse entry's trailing hole included (its size is the file's).
    private func contents(_ reader: Archive.Reader) throws -> Data {
        var data = try reader.readData(limit: Int(PackageExtractor.entryLimit))
        if data.count < Int(reader.currentEntrySize) { data.append(Data(count: Int(reader.currentEntrySize) - data.count)) }
        return data
    }

    /// The key of a file or symlink about to be placed at `path`, its parent made, refusing to
    /// replace a directory (as unlinking one fails on disk).
    private func placeable(_ path: [String]) throws -> String {
        try directory(path.dropLast())
        let key = path.joined(separator: "/")
        if case .directory? = nodes[key] { throw Refusal("a directory of that name was extracted before it") }
        return key
    }

    private func directory(_ path: ArraySlice<String>) throws {
        if let lastDirectory, lastDirectory == path { return }
        try walk(path, create: true)
        lastDirectory = path
    }

    /// Follows `path` from the root, creating missing directories if asked, refusing symlinks
    /// and files on the way, as the staging directory's `O_NOFOLLOW` walk does.
    private func walk(_ path: ArraySlice<String>, create: Bool) throws {
        var walked = ""
        for part in path {
            walked += walked.isEmpty ? part : "/" + part
            switch nodes[walked] {
            case .directory?: continue
            case nil:
                guard create else { throw FileSystemError.io(operation: "open directory", path: walked, errno: ENOENT) }
                nodes[walked] = .directory
            case .symlink?: throw Refusal("its path goes through '\(walked)', which is a symlink")
            case .file?: throw Refusal("its path goes through '\(walked)', which is not a directory")
            }
        }
    }
}

/// Writes entries below one directory descriptor. Every path is walked component by component
/// with O_NOFOLLOW, so no symlink (planted by this package or an earlier one) is ever followed.
private final class Staging: ExtractionDestination {
    private let root: Int32
    /// The directory the last entry went into: archives list a directory's entries together, and
    /// walking every path from the root cost more than the extraction itself. Safe to keep because
    /// nothing here removes or replaces a directory.
    private var cached: (path: ArraySlice<String>, fd: Int32)?

    init(root path: String) throws {
        root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw FileSystemError.io(operation: "open", path: path, errno: errno) }
    }

    deinit {
        if let cached { close(cached.fd) }
        close(root)
    }

    func makeDirectory(_ path: ArraySlice<String>) throws {
        _ = try directory(path)
    }

    func writeFile(_ path: [String], mode: UInt32, from reader: Archive.Reader) throws {
        let name = path[path.count - 1]
        let parent = try directory(path.dropLast())
        try clear(name, in: parent, path: path)
        let fd = openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystemError.io(operation: "create", path: path.joined(separator: "/"), errno: errno) }
        defer { close(fd) }
        try reader.writeData(to: fd)
        fchmod(fd, mode_t(mode & 0o777 | 0o600))
    }

    func makeSymlink(_ path: [String], target: String) throws {
        let name = path[path.count - 1]
        let parent = try directory(path.dropLast())
        try clear(name, in: parent, path: path)
        guard symlinkat(target, parent, name) == 0 else { throw FileSystemError.io(operation: "symlink", path: path.joined(separator: "/"), errno: errno) }
    }

    func makeHardlink(_ path: [String], to target: [String], named targetName: String, data: Bool, from reader: Archive.Reader) throws {
        let name = path[path.count - 1]
        let targetParent = try walk(target.dropLast(), create: false)
        defer { close(targetParent) }
        var info = stat()
        guard fstatat(targetParent, target[target.count - 1], &info, AT_SYMLINK_NOFOLLOW) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw Refusal("its hardlink target '\(targetName)' is not a regular file extracted before it")
        }
        let parent = try directory(path.dropLast())
        try clear(name, in: parent, path: path)
        guard linkat(targetParent, target[target.count - 1], parent, name, 0) == 0 else {
            throw FileSystemError.io(operation: "link", path: path.joined(separator: "/"), errno: errno)
        }
        if data {
            let fd = openat(parent, name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw FileSystemError.io(operation: "open", path: path.joined(separator: "/"), errno: errno) }
            defer { close(fd) }
            try reader.writeData(to: fd)
        }
    }

    /// The directory at `path` below the root, created if missing; the descriptor stays owned by
    /// the cache and is valid until the next call.
    private func directory(_ path: ArraySlice<String>) throws -> Int32 {
        if let cached, cached.path == path { return cached.fd }
        let fd = try walk(path, create: true)
        if let cached { close(cached.fd) }
        cached = (path, fd)
        return fd
    }

    /// Opens (creating if asked) the directory at `path` below the root, refusing symlinks on the
    /// way. The caller closes the descriptor.
    private func walk(_ path: ArraySlice<String>, create: Bool) throws -> Int32 {
        var current = dup(root)
        guard current >= 0 else { throw FileSystemError.io(operation: "dup", path: path.joined(separator: "/"), errno: errno) }
        var walked = ""
        for part in path {
            walked += walked.isEmpty ? part : "/" + part
            var next = openat(current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0, errno == ENOENT, create {
                if mkdirat(current, part, 0o755) != 0, errno != EEXIST {
                    let code = errno
                    close(current)
                    throw FileSystemError.io(operation: "mkdir", path: walked, errno: code)
                }
                next = openat(current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            if next < 0 {
                let code = errno
                var info = stat()
                let isLink = fstatat(current, part, &info, AT_SYMLINK_NOFOLLOW) == 0 && info.st_mode & S_IFMT == S_IFLNK
                close(current)
                if isLink { throw Refusal("its path goes through '\(walked)', which is a symlink") }
                if code == ENOTDIR { throw Refusal("its path goes through '\(walked)', which is not a directory") }
                throw FileSystemError.io(operation: "open directory", path: walked, errno: code)
            }
            close(current)
            current = next
        }
        return current
    }

    /// Removes a file or symlink an earlier entry or package left at `name`, as dpkg would replace it.
    private func clear(_ name: String, in parent: Int32, path: [String]) throws {
        guard unlinkat(parent, name, 0) != 0 else { return }
        switch errno {
        case ENOENT: return
        case EISDIR: throw Refusal("a directory of that name was extracted before it")
        case let code: throw FileSystemError.io(operation: "replace", path: path.joined(separator: "/"), errno: code)
        }
    }
}
