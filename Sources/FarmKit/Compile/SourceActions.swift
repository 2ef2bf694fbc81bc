import FarmEngine
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
            throw FarmError.badInput("the recipe's source directory \(root) does not exist")
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
                default: throw FarmError.badInput("\(root)/\(path): a source directory holds files, directories and links only")
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
                    throw FarmError.badInput("\(root)/\(path): cannot read this source file")
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
                throw FarmError(message: "\(directory) changed while farm was building; run the build again")
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
        try await Blocking.run {
            do {
                return try export(context)
            } catch let error as GitError {
                throw FarmError(message: "git source \(url) (recipe \(recipe)): \(error.operation) failed: \(error.detail)")
            }
        }
    }

    private func export(_ context: TaskContext) throws -> [String: Digest] {
        let repositories = (context.objects.root as NSString).deletingLastPathComponent + "/git"
        try AtomicFile.makeDirectory(repositories)
        let repository = try Git.Repository(bareAt: repositories + "/" + SHA256.hash(url).hex.prefix(16))
        var found = try repository.commit(commit)
        if found == nil {
            context.log.append("fetching \(url)\n")
            try repository.fetchBranchesAndTags(from: url)
            found = try repository.commit(commit)
        }
        guard let found else {
            throw FarmError(message: "git source \(url) (recipe \(recipe)): no commit \(commit) on any branch or tag; check 'commit:' in the recipe")
        }
        let tree = try found.tree()
        context.log.append("commit \(commit), tree \(tree.id)\n")

        let output = context.workDirectory + "/source.tgz"
        let writer = try Archive.Writer(tarGzipAt: output)
        try tree.walk { path, entry in
            switch entry {
            case .directory: try writer.addDirectory(path, mode: 0o755)
            case let .file(data, executable): try writer.addFile(path, mode: executable ? 0o755 : 0o644, contents: data)
            case let .symlink(target): try writer.addSymlink(path, target: target)
            case .submodule: context.log.append("left out \(path): a submodule (farm does not fetch submodules)\n")
            }
        }
        try writer.finish()
        return ["tree": try context.store(file: output)]
    }
}
