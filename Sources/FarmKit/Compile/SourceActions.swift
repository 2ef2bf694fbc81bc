import CGit2
import Foundation

/// Task kind `source` for `source: {dir: PATH}`: the directory's files as a reproducible tarball
/// (output `tree`). Keyed by content: the plan hashes every file, so an edit rebuilds and a touch
/// does not. `.git` is left out.
public struct SourceDirectoryAction: TaskAction {
    public let recipe: String
    public let directory: String
    public let content: Digest

    public init(recipe: String, directory: String) throws {
        self.recipe = recipe
        self.directory = directory
        content = try SourceDirectoryAction.digest(of: try SourceDirectoryAction.entries(of: directory), in: directory)
    }

    public var kind: String { "source" }
    public var version: Int { 1 }
    // The path is not a parameter: the same files elsewhere are the same source.
    public var parameters: [(name: String, value: String)] { [("content", content.hex)] }

    enum Entry { case directory(String), file(String, executable: Bool), link(String, target: String) }

    static func entries(of root: String) throws -> [Entry] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw PlanError("the recipe's source directory \(root) does not exist")
        }
        var entries: [Entry] = []
        func walk(_ relative: String) throws {
            let names = try FileManager.default.contentsOfDirectory(atPath: relative.isEmpty ? root : root + "/" + relative).sorted()
            for name in names where !(relative.isEmpty && name == ".git") {
                let path = relative.isEmpty ? name : relative + "/" + name
                var info = stat()
                guard lstat(root + "/" + path, &info) == 0 else { throw FileSystemError.io(operation: "stat", path: root + "/" + path, errno: errno) }
                switch info.st_mode & S_IFMT {
                case S_IFDIR: entries.append(.directory(path)); try walk(path)
                case S_IFREG: entries.append(.file(path, executable: info.st_mode & 0o111 != 0))
                case S_IFLNK: entries.append(.link(path, target: try FileManager.default.destinationOfSymbolicLink(atPath: root + "/" + path)))
                default: throw PlanError("\(root)/\(path): a source directory holds files, directories and links only")
                }
            }
        }
        try walk("")
        return entries
    }

    static func digest(of entries: [Entry], in root: String) throws -> Digest {
        var listing = ""
        for entry in entries {
            switch entry {
            case let .directory(path): listing += "d \(path)\n"
            case let .file(path, executable):
                guard let data = FileManager.default.contents(atPath: root + "/" + path) else {
                    throw PlanError("\(root)/\(path): cannot read this source file")
                }
                listing += "\(executable ? "x" : "f") \(SHA256.hash(data).hex) \(path)\n"
            case let .link(path, target): listing += "l \(path) -> \(target)\n"
            }
        }
        return SHA256.hash(listing)
    }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run {
            let entries = try SourceDirectoryAction.entries(of: directory)
            guard try SourceDirectoryAction.digest(of: entries, in: directory) == content else {
                throw CompileError(message: "\(directory) changed while farm was building; run the build again")
            }
            let output = context.workDirectory + "/source.tgz"
            let writer = try Archive.Writer(tarGzipAt: output)
            for entry in entries {
                switch entry {
                case let .directory(path): try writer.addDirectory(path, mode: 0o755)
                case let .file(path, executable): try writer.addFile(path, mode: executable ? 0o755 : 0o644, from: directory + "/" + path)
                case let .link(path, target): try writer.addSymlink(path, target: target)
                }
            }
            try writer.finish()
            context.log.append("\(directory): \(entries.count) entries, content \(content.short)\n")
            return ["tree": try context.store(file: output)]
        }
    }
}

public struct GitSourceError: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// Task kind `source` for `source: {git: URL, commit: ID}`: the commit's tree, fetched with
/// libgit2 into `cache/git/`, as a reproducible tarball (output `tree`). The same tree gives the
/// same tarball bytes whichever commit or URL it came from, so compile keys follow the tree.
public struct SourceGitAction: TaskAction {
    public let recipe: String
    public let url: String
    public let commit: String

    public init(recipe: String, url: String, commit: String) {
        self.recipe = recipe
        self.url = url
        self.commit = commit
    }

    public var kind: String { "source" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("git", url), ("commit", commit)] }
    public var resource: ResourceClass { .network }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run { try export(context) }
    }

    private func check(_ code: Int32, _ what: String) throws {
        guard code < 0 else { return }
        let detail = git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? "error \(code)"
        throw GitSourceError(message: "git source \(url) (recipe \(recipe)): \(what) failed: \(detail)")
    }

    private func export(_ context: TaskContext) throws -> [String: Digest] {
        git_libgit2_init()
        defer { git_libgit2_shutdown() }
        let repositories = (context.objects.root as NSString).deletingLastPathComponent + "/git"
        try AtomicFile.makeDirectory(repositories)
        let path = repositories + "/" + SHA256.hash(url).hex.prefix(16)
        var repository: OpaquePointer?
        if git_repository_open_bare(&repository, path) < 0 {
            try check(git_repository_init(&repository, path, 1), "creating \(path)")
        }
        defer { git_repository_free(repository) }

        var oid = git_oid()
        try check(git_oid_fromstr(&oid, commit), "reading the commit id \(commit)")
        var commitObject: OpaquePointer?
        if git_commit_lookup(&commitObject, repository, &oid) < 0 {
            context.log.append("fetching \(url)\n")
            var remote: OpaquePointer?
            try check(git_remote_create_anonymous(&remote, repository, url), "opening the remote")
            defer { git_remote_free(remote) }
            var options = git_fetch_options()
            try check(git_fetch_options_init(&options, UInt32(GIT_FETCH_OPTIONS_VERSION)), "setting up the fetch")
            let refspecs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
            var pointers = refspecs.map { strdup($0) }
            defer { pointers.forEach { free($0) } }
            try pointers.withUnsafeMutableBufferPointer { buffer in
                var array = git_strarray(strings: buffer.baseAddress, count: buffer.count)
                try check(git_remote_fetch(remote, &array, &options, nil), "fetching")
            }
            guard git_commit_lookup(&commitObject, repository, &oid) == 0 else {
                throw GitSourceError(message: "git source \(url) (recipe \(recipe)): no commit \(commit) on any branch or tag; check 'commit:' in the recipe")
            }
        }
        defer { git_commit_free(commitObject) }
        var tree: OpaquePointer?
        try check(git_commit_tree(&tree, commitObject), "reading the commit's tree")
        defer { git_tree_free(tree) }
        var treeID = [CChar](repeating: 0, count: 41)
        git_oid_tostr(&treeID, 41, git_tree_id(tree))
        context.log.append("commit \(commit), tree \(String(cString: treeID))\n")

        let output = context.workDirectory + "/source.tgz"
        let writer = try Archive.Writer(tarGzipAt: output)
        try write(tree: tree, prefix: "", repository: repository, into: writer, log: context.log)
        try writer.finish()
        return ["tree": try context.store(file: output)]
    }

    /// The tree's entries in git's (name) order, recursively.
    private func write(tree: OpaquePointer?, prefix: String, repository: OpaquePointer?, into writer: Archive.Writer, log: TaskLog) throws {
        for index in 0..<git_tree_entrycount(tree) {
            guard let entry = git_tree_entry_byindex(tree, index) else { continue }
            let path = prefix + String(cString: git_tree_entry_name(entry))
            let mode = git_tree_entry_filemode(entry)
            switch mode {
            case GIT_FILEMODE_TREE:
                try writer.addDirectory(path, mode: 0o755)
                var subtree: OpaquePointer?
                try check(git_tree_lookup(&subtree, repository, git_tree_entry_id(entry)), "reading \(path)")
                defer { git_tree_free(subtree) }
                try write(tree: subtree, prefix: path + "/", repository: repository, into: writer, log: log)
            case GIT_FILEMODE_BLOB, GIT_FILEMODE_BLOB_EXECUTABLE, GIT_FILEMODE_LINK:
                var blob: OpaquePointer?
                try check(git_blob_lookup(&blob, repository, git_tree_entry_id(entry)), "reading \(path)")
                defer { git_blob_free(blob) }
                let data = Data(bytes: git_blob_rawcontent(blob), count: Int(git_blob_rawsize(blob)))
                if mode == GIT_FILEMODE_LINK {
                    try writer.addSymlink(path, target: String(decoding: data, as: UTF8.self))
                } else {
                    try writer.addFile(path, mode: mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0o755 : 0o644, contents: data)
                }
            default:
                log.append("left out \(path): a submodule (farm does not fetch submodules)\n")
            }
        }
    }
}
