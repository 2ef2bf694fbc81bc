import FarmEngine
import CGit2
import Foundation

/// A libgit2 failure: what was being done and libgit2's own message.
struct GitError: Error, CustomStringConvertible {
    let operation: String
    let detail: String
    var description: String { "\(operation) failed: \(detail)" }
}

/// libgit2 behind thrown errors: a bare repository that fetches a remote's branches and tags, a
/// commit looked up by id, and the files of its tree. The only file that imports `CGit2`.
enum Git {
    /// A bare repository, open for as long as this object (or a commit or tree read from it) lives.
    final class Repository {
        fileprivate let pointer: OpaquePointer

        /// Opens the bare repository at `path`, creating it when there is none.
        init(bareAt path: String) throws {
            git_libgit2_init()
            var repository: OpaquePointer?
            if git_repository_open_bare(&repository, path) < 0 {
                do {
                    try check(git_repository_init(&repository, path, 1), "creating \(path)")
                } catch {
                    git_libgit2_shutdown()
                    throw error
                }
            }
            pointer = repository!
        }

        deinit {
            git_repository_free(pointer)
            git_libgit2_shutdown()
        }

        /// The commit with this (full hex) id, or nil when the repository does not hold it.
        func commit(_ id: String) throws -> Commit? {
            var oid = git_oid()
            try check(git_oid_fromstr(&oid, id), "reading the commit id \(id)")
            var commit: OpaquePointer?
            guard git_commit_lookup(&commit, pointer, &oid) == 0, let commit else { return nil }
            return Commit(commit, in: self)
        }

        /// Fetches every branch (as `refs/remotes/origin/*`) and tag of the repository at `url`.
        func fetchBranchesAndTags(from url: String) throws {
            var remote: OpaquePointer?
            try check(git_remote_create_anonymous(&remote, pointer, url), "opening the remote")
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
        }
    }

    final class Commit {
        private let repository: Repository
        private let pointer: OpaquePointer

        fileprivate init(_ pointer: OpaquePointer, in repository: Repository) {
            self.pointer = pointer
            self.repository = repository
        }

        deinit { git_commit_free(pointer) }

        func tree() throws -> Tree {
            var tree: OpaquePointer?
            try check(git_commit_tree(&tree, pointer), "reading the commit's tree")
            return Tree(tree!, in: repository)
        }
    }

    /// What a tree entry is, with a file's or link's contents.
    enum Entry {
        case directory
        case file(Data, executable: Bool)
        case symlink(target: String)
        case submodule
    }

    final class Tree {
        private let repository: Repository
        private let pointer: OpaquePointer

        fileprivate init(_ pointer: OpaquePointer, in repository: Repository) {
            self.pointer = pointer
            self.repository = repository
        }

        deinit { git_tree_free(pointer) }

        /// The tree's id in hex.
        var id: String {
            var text = [CChar](repeating: 0, count: 41)
            git_oid_tostr(&text, 41, git_tree_id(pointer))
            return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }

        /// Calls `visit` with every entry in git's (name) order, depth first (a directory before
        /// its entries), with its path from this tree's root.
        func walk(_ visit: (_ path: String, _ entry: Entry) throws -> Void) throws {
            try walk(pointer, prefix: "", visit)
        }

        private func walk(_ tree: OpaquePointer, prefix: String, _ visit: (String, Entry) throws -> Void) throws {
            for index in 0..<git_tree_entrycount(tree) {
                guard let entry = git_tree_entry_byindex(tree, index) else { continue }
                let path = prefix + String(cString: git_tree_entry_name(entry))
                let mode = git_tree_entry_filemode(entry)
                switch mode {
                case GIT_FILEMODE_TREE:
                    try visit(path, .directory)
                    var subtree: OpaquePointer?
                    try check(git_tree_lookup(&subtree, repository.pointer, git_tree_entry_id(entry)), "reading \(path)")
                    defer { git_tree_free(subtree) }
                    try walk(subtree!, prefix: path + "/", visit)
                case GIT_FILEMODE_BLOB, GIT_FILEMODE_BLOB_EXECUTABLE, GIT_FILEMODE_LINK:
                    var blob: OpaquePointer?
                    try check(git_blob_lookup(&blob, repository.pointer, git_tree_entry_id(entry)), "reading \(path)")
                    defer { git_blob_free(blob) }
                    let data = Data(bytes: git_blob_rawcontent(blob), count: Int(git_blob_rawsize(blob)))
                    if mode == GIT_FILEMODE_LINK {
                        try visit(path, .symlink(target: String(decoding: data, as: UTF8.self)))
                    } else {
                        try visit(path, .file(data, executable: mode == GIT_FILEMODE_BLOB_EXECUTABLE))
                    }
                default:
                    try visit(path, .submodule)
                }
            }
        }
    }

    /// libgit2 returns a negative code on failure and keeps the reason per thread.
    fileprivate static func check(_ code: Int32, _ operation: String) throws {
        guard code < 0 else { return }
        let detail = git_error_last().flatMap { $0.pointee.message.map { String(cString: $0) } } ?? "error \(code)"
        throw GitError(operation: operation, detail: detail)
    }
}
