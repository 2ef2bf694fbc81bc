import FarmEngine
import Foundation

/// Makes a directory hold a publication so that a reader sees the old repository or the new one,
/// never a mix. `repodata/` is a symbolic link to `.revisions/<revision>/`, which holds one
/// publication's `repomd.xml`, its signature and its manifest: a new publication's files are
/// written into a new revision directory and the link is replaced by one rename(2), so the pair
/// `repomd.xml` + `repomd.xml.sig` changes as one (two renames in a row are not one: a kill
/// between them left a new `repomd.xml` beside the old signature). New modules and signatures are
/// written first under `modules/`, each by rename; a path there never changes its bytes. Files
/// already there with the right bytes are left alone (incremental). What neither this publication
/// nor the one before it names is removed afterwards, and the new revision also holds the previous
/// manifest, so a reader still holding the previous `repomd.xml` finds its files.
public enum Publisher {
    public struct Report: Sendable, Equatable {
        public var written: [String] = []
        public var unchanged = 0
        public var removed: [String] = []
        /// The revision directory `repodata` now points to, when this install switched it.
        public var switchedTo: String?
        /// Whether a `repodata/` directory of the old layout was turned into a revision.
        public var migrated = false
    }

    /// Where revision directories live, relative to the repository.
    public static let revisionsDirectory = ".revisions"
    static let repodata = "repodata"
    /// `.revisions/previous` names the revision before the current one, kept for readers that
    /// resolved `repodata` before the switch.
    static let previousLink = "previous"

    /// Writes `publication` into `directory`. Cheap when the directory already matches.
    @discardableResult
    public static func install(_ publication: PublicationFiles, objects: ContentStore, into directory: String) throws -> Report {
        try AtomicFile.makeDirectory(directory)
        // One publisher at a time, locked on the directory itself (no lock file among the published ones).
        let lock = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard lock >= 0 else { throw FileSystemError.io(operation: "open", path: directory, errno: errno) }
        defer { close(lock) }
        flock(lock, LOCK_EX)
        // Under the lock, every temporary file is a killed publisher's.
        removeTemporaryFiles(in: directory)

        let previous = Set(referencedPaths(in: directory))
        var report = Report()
        let (meta, rest) = (publication.files.filter(\.isRepodata), publication.files.filter { !$0.isRepodata })
        for file in rest {
            try RepositoryFormat.checkRelative(file.path, name: "publication")
            if try put(file, at: directory + "/" + file.path, objects: objects) {
                report.written.append(file.path)
            } else {
                report.unchanged += 1
            }
        }
        try installRevision(meta, of: publication, objects: objects, into: directory, report: &report)
        removeStaleRevisions(in: directory)
        // Only a new publication retires files: those that neither it nor the one before names.
        if !report.written.isEmpty {
            report.removed = try removeUnreferenced(in: directory, keeping: previous.union(publication.files.map(\.path)))
        }
        return report
    }

    /// The files `install` would write, without writing anything (for `farm build -n`).
    public static func pending(_ publication: PublicationFiles, in directory: String) -> [String] {
        publication.files.filter { !holds(directory + "/" + $0.path, $0) }.map(\.path)
            + (currentRevision(in: directory) == .legacyDirectory ? [repodata + " (made a link to a revision)"] : [])
    }

    enum CurrentRevision: Equatable {
        case none
        /// `repodata/` is a directory, as farm wrote it before revisions.
        case legacyDirectory
        case link(String)
    }

    static func currentRevision(in directory: String) -> CurrentRevision {
        let path = directory + "/" + repodata
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
            return .link((target as NSString).lastPathComponent)
        }
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue ? .legacyDirectory : .none
    }

    /// Writes the publication's `repodata/` files into a revision directory and points `repodata` at it.
    static func installRevision(_ files: [PublicationFiles.File], of publication: PublicationFiles, objects: ContentStore,
                                into directory: String, report: inout Report) throws {
        let current = currentRevision(in: directory)
        let live = directory + "/" + repodata
        if case .link = current, files.allSatisfy({ holds(directory + "/" + $0.path, $0) }) {
            report.unchanged += files.count
            return
        }
        let repomd = files.first { $0.path == RepositoryFormat.repomdPath }
        var name = "\(publication.revision)-\(repomd?.digest.hex.prefix(16) ?? "none")"
        // Never rewrite the live revision in place: a damaged one is replaced by a new directory.
        if current == .link(name) { name += "-\(UInt32.random(in: 0...UInt32.max))" }
        let revisions = directory + "/" + revisionsDirectory
        let revision = revisions + "/" + name
        try AtomicFile.makeDirectory(revision)
        for file in files {
            let name = String(file.path.dropFirst(repodata.count + 1))
            try RepositoryFormat.checkRelative(name, name: "publication")
            _ = try put(file, at: revision + "/" + name, objects: objects)
        }
        // A reader holding the previous repomd.xml fetches its manifest through the new link.
        if let (index, _) = try? currentPublication(in: directory) {
            for location in [index.location] + (index.symbols.map { [$0.location] } ?? []) where location.hasPrefix(repodata + "/") {
                let name = String(location.dropFirst(repodata.count + 1))
                let (source, target) = (live + "/" + name, revision + "/" + name)
                if !FileManager.default.fileExists(atPath: target), link(source, target) != 0 {
                    try? FileManager.default.copyItem(atPath: source, toPath: target)
                }
            }
        }
        AtomicFile.syncDirectory(revision)
        AtomicFile.syncDirectory(revisions)

        if case let .link(old) = current { try pointLink(revisions + "/" + previousLink, at: old) }
        let fresh = directory + "/.tmp-\(getpid())-" + repodata
        unlink(fresh)
        guard symlink(revisionsDirectory + "/" + name, fresh) == 0 else {
            throw FileSystemError.io(operation: "symlink", path: fresh, errno: errno)
        }
        if current == .legacyDirectory {
            try migrate(live, replacingWith: fresh, revisions: revisions)
            report.migrated = true
        } else {
            try AtomicFile.rename(fresh, to: live)
        }
        AtomicFile.syncDirectory(directory)
        report.switchedTo = name
        // For readers, every file behind the link is new, even when a killed run had written it.
        report.written += files.map(\.path)
    }

    /// Turns the old layout's `repodata/` directory into a revision and puts the link in its place.
    /// renameat2's RENAME_EXCHANGE swaps the directory and the link in one step, so a reader never
    /// misses `repomd.xml`; where the file system cannot exchange, the directory is moved aside and
    /// the link renamed in right after it (two renames: a reader may miss `repomd.xml` in between
    /// for that one publication, which is better than a mixed pair).
    static func migrate(_ live: String, replacingWith link: String, revisions: String) throws {
        let old = "legacy-\(Int(Date().timeIntervalSince1970))"
        if exchange(link, live) {
            try AtomicFile.rename(link, to: revisions + "/" + old)
        } else {
            try AtomicFile.rename(live, to: revisions + "/" + old)
            try AtomicFile.rename(link, to: live)
        }
        try pointLink(revisions + "/" + previousLink, at: old)
    }

    /// renameat2(2) with RENAME_EXCHANGE. glibc has it, but Swift's Glibc module does not declare
    /// it (it is behind _GNU_SOURCE), so it is looked up by name.
    static func exchange(_ first: String, _ second: String) -> Bool {
        typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
        guard let symbol = dlsym(nil, "renameat2") else { return false }
        let renameExchange: UInt32 = 1 << 1
        return unsafeBitCast(symbol, to: RenameAt2.self)(AT_FDCWD, first, AT_FDCWD, second, renameExchange) == 0
    }

    /// Replaces the link at `path` by one to `name` (a sibling), atomically.
    static func pointLink(_ path: String, at name: String) throws {
        let fresh = (path as NSString).deletingLastPathComponent + "/.tmp-\(getpid())-" + (path as NSString).lastPathComponent
        unlink(fresh)
        guard symlink(name, fresh) == 0 else { throw FileSystemError.io(operation: "symlink", path: fresh, errno: errno) }
        try AtomicFile.rename(fresh, to: path)
    }

    /// Removes revision directories that are neither current nor previous: older ones, and those a
    /// killed publisher made but never switched to.
    static func removeStaleRevisions(in directory: String) {
        let revisions = directory + "/" + revisionsDirectory
        var keep: Set<String> = [previousLink]
        if case let .link(current) = currentRevision(in: directory) { keep.insert(current) }
        if let previous = try? FileManager.default.destinationOfSymbolicLink(atPath: revisions + "/" + previousLink) {
            keep.insert(previous)
        }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: revisions)) ?? [] where !keep.contains(entry) {
            try? FileManager.default.removeItem(atPath: revisions + "/" + entry)
        }
    }

    /// Removes `.tmp-*` files (and links) a killed publisher left: at the top, under `modules/`
    /// and in revision directories.
    static func removeTemporaryFiles(in directory: String) {
        var places = [directory, directory + "/" + revisionsDirectory]
        places += ((try? FileManager.default.contentsOfDirectory(atPath: places[1])) ?? []).map { places[1] + "/" + $0 }
        if let walker = FileManager.default.enumerator(atPath: directory + "/modules") {
            places.append(directory + "/modules")
            while let entry = walker.nextObject() as? String {
                var isDirectory: ObjCBool = false
                let path = directory + "/modules/" + entry
                if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { places.append(path) }
            }
        }
        for place in places {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: place)) ?? []
            where entry.hasPrefix(".tmp-") {
                // A directory too: the old layout's repodata/ when a kill came mid-migration.
                try? FileManager.default.removeItem(atPath: place + "/" + entry)
            }
        }
    }

    /// Makes `target` hold `file`'s bytes (temp + fsync + rename); false when it already did.
    static func put(_ file: PublicationFiles.File, at target: String, objects: ContentStore) throws -> Bool {
        if holds(target, file) { return false }
        let parent = (target as NSString).deletingLastPathComponent
        try AtomicFile.makeDirectory(parent)
        let temporary = parent + "/.tmp-\(getpid())-" + (target as NSString).lastPathComponent
        unlink(temporary)
        try FileManager.default.copyItem(atPath: try objects.verifiedPath(of: file.digest), toPath: temporary)
        chmod(temporary, 0o644)
        // The bytes reach the disk before the name does: a crash must not leave a named, empty file.
        let descriptor = open(temporary, O_RDONLY | O_CLOEXEC)
        if descriptor >= 0 {
            fsync(descriptor)
            close(descriptor)
        }
        try AtomicFile.rename(temporary, to: target)
        AtomicFile.syncDirectory(parent)
        return true
    }

    /// Whether the file at `path` already has the publication's bytes.
    static func holds(_ path: String, _ file: PublicationFiles.File) -> Bool {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              (attributes[.size] as? NSNumber)?.int64Value == file.size,
              let (digest, _) = try? SHA256.hash(fileAt: path) else { return false }
        return digest == file.digest
    }

    /// The files the directory's current `repomd.xml` leads to (its manifest, modules and
    /// signatures), read without checking signatures: only to know what readers may still fetch.
    static func referencedPaths(in directory: String) -> [String] {
        guard let (index, modules) = try? currentPublication(in: directory) else { return [] }
        let tables = currentTables(in: directory, index: index)
        return [index.location] + modules.flatMap { [$0.location, $0.signature] }
            + (index.symbols.map { [$0.location] } ?? []) + tables.flatMap { [$0.location, $0.signature] }
    }

    /// The symbol tables the current `repomd.xml` lists, unverified (as `referencedPaths`).
    static func currentTables(in directory: String, index: RepositoryIndex? = nil) -> [SymbolTableEntry] {
        guard let index = index ?? (try? currentPublication(in: directory))?.0, let symbols = index.symbols,
              let gzipped = FileManager.default.contents(atPath: directory + "/" + symbols.location),
              let data = try? Archive.decompress(gzipped) else { return [] }
        return (try? RepositoryFormat.parseSymbols(data, name: symbols.location)) ?? []
    }

    static func currentPublication(in directory: String) throws -> (RepositoryIndex, [RepositoryModule])? {
        guard let repomd = FileManager.default.contents(atPath: directory + "/" + RepositoryFormat.repomdPath) else { return nil }
        let index = try RepositoryFormat.parseRepomd(repomd, name: RepositoryFormat.repomdPath)
        guard let gzipped = FileManager.default.contents(atPath: directory + "/" + index.location) else { return nil }
        return (index, try RepositoryFormat.parsePrimary(try Archive.decompress(gzipped), name: index.location))
    }

    /// The published modules by file name: where each is and its checksum.
    static func currentModules(in directory: String) -> [String: RepositoryModule] {
        guard let (_, modules) = try? currentPublication(in: directory) else { return [:] }
        return Dictionary(modules.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Where a module goes: where it already is when published with these bytes; else
    /// `modules/<name>` unless that path holds other bytes (a rebuilt module for a published
    /// kernel), which then go to `modules/<checksum>/<name>`, leaving the published file as it is.
    static func location(for name: String, checksum: String, published: [String: RepositoryModule], directory: String) -> String {
        if let module = published[name], module.checksum == checksum { return module.location }
        return stableLocation(name, under: "modules", checksum: checksum, directory: directory)
    }

    /// `<top>/<name>`, unless that path holds other bytes (a path never changes its bytes once
    /// published): then `<top>/<checksum>/<name>`.
    static func stableLocation(_ name: String, under top: String, checksum: String, directory: String) -> String {
        let plain = top + "/" + name
        let existing = directory + "/" + plain
        guard FileManager.default.fileExists(atPath: existing) else { return plain }
        if let (digest, _) = try? SHA256.hash(fileAt: existing), digest.hex == checksum { return plain }
        return "\(top)/\(checksum)/\(name)"
    }

    /// Removes files under `modules/` and `symbols/` that `keep` does not name, and emptied directories (the
    /// revision directories are retired whole).
    static func removeUnreferenced(in directory: String, keeping keep: Set<String>) throws -> [String] {
        var removed: [String] = []
        for top in ["modules", "symbols"] {
            guard let walker = FileManager.default.enumerator(atPath: directory + "/" + top) else { continue }
            var directories: [String] = []
            while let entry = walker.nextObject() as? String {
                let relative = top + "/" + entry
                let path = directory + "/" + relative
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
                if isDirectory.boolValue {
                    directories.append(path)
                } else if !keep.contains(relative), !(entry as NSString).lastPathComponent.hasPrefix(".tmp-") {
                    unlink(path)
                    removed.append(relative)
                }
            }
            for path in directories.sorted(by: >) { rmdir(path) }
        }
        return removed.sorted()
    }

    /// `gzip -n -9`: no name or time in the header, so the same manifest gives the same bytes.
    static func gzip(_ file: String) throws -> String {
        guard let gzip = Executable.find("gzip") else {
            throw FarmError.toolMissing(tool: "gzip", package: "gzip", purpose: "publishing the repository manifest")
        }
        let result = try Executable.run(gzip, ["-n", "-9", "-k", "-f", file])
        guard result.status == 0 else { throw FarmError("gzip failed on \(file): \(result.stderr)") }
        return file + ".gz"
    }
}

extension PublicationFiles.File {
    /// Whether the file belongs in a revision directory (behind the `repodata` link).
    var isRepodata: Bool { path.hasPrefix(Publisher.repodata + "/") }
}
