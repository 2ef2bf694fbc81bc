import Foundation

/// Makes a directory hold a publication: new modules, signatures and manifest first, then
/// `repomd.xml` and its signature, each by rename, so a reader sees the old repository or the
/// new one. Files already there with the right bytes are left alone (incremental), and what
/// neither this publication nor the one before it names is removed afterwards (a reader still
/// holding the previous `repomd.xml` finds its files).
public enum Publisher {
    public struct Report: Sendable, Equatable {
        public var written: [String] = []
        public var unchanged = 0
        public var removed: [String] = []
    }

    /// Writes `publication` into `directory`. Cheap when the directory already matches.
    @discardableResult
    public static func install(_ publication: PublicationFiles, objects: ContentStore, into directory: String) throws -> Report {
        try AtomicFile.makeDirectory(directory)
        // One publisher at a time, locked on the directory itself (no lock file among the published ones).
        let lock = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard lock >= 0 else { throw FileSystemError.io(operation: "open", path: directory, errno: errno) }
        defer { close(lock) }
        flock(lock, LOCK_EX)

        let previous = Set(referencedPaths(in: directory))
        var report = Report()
        let last: Set<String> = [RepositoryFormat.repomdPath, RepositoryFormat.repomdSignaturePath]
        let ordered = publication.files.filter { !last.contains($0.path) } + publication.files.filter { last.contains($0.path) }
        for file in ordered {
            try RepositoryFormat.checkRelative(file.path, name: "publication")
            let target = directory + "/" + file.path
            if holds(target, file) {
                report.unchanged += 1
                continue
            }
            let parent = (target as NSString).deletingLastPathComponent
            try AtomicFile.makeDirectory(parent)
            let temporary = parent + "/.tmp-\(getpid())-" + (target as NSString).lastPathComponent
            unlink(temporary)
            try FileManager.default.copyItem(atPath: try objects.verifiedPath(of: file.digest), toPath: temporary)
            chmod(temporary, 0o644)
            try AtomicFile.rename(temporary, to: target)
            AtomicFile.syncDirectory(parent)
            report.written.append(file.path)
        }
        // Only a new publication retires files: those that neither it nor the one before names.
        if !report.written.isEmpty {
            report.removed = try removeUnreferenced(in: directory, keeping: previous.union(publication.files.map(\.path)))
        }
        return report
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
        return [index.location] + modules.flatMap { [$0.location, $0.signature] }
    }

    static func currentPublication(in directory: String) throws -> (RepositoryIndex, [RepositoryModule])? {
        guard let repomd = FileManager.default.contents(atPath: directory + "/" + RepositoryFormat.repomdPath) else { return nil }
        let index = try RepositoryFormat.parseRepomd(repomd, name: RepositoryFormat.repomdPath)
        try RepositoryFormat.checkRelative(index.location, name: RepositoryFormat.repomdPath)
        guard let gzipped = FileManager.default.contents(atPath: directory + "/" + index.location) else { return nil }
        let modules = try RepositoryFormat.parsePrimary(try Archive.decompress(gzipped), name: index.location)
        for module in modules {
            try RepositoryFormat.checkRelative(module.location, name: index.location)
            try RepositoryFormat.checkRelative(module.signature, name: index.location)
        }
        return (index, modules)
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
        let plain = "modules/" + name
        let existing = directory + "/" + plain
        guard FileManager.default.fileExists(atPath: existing) else { return plain }
        if let (digest, _) = try? SHA256.hash(fileAt: existing), digest.hex == checksum { return plain }
        return "modules/\(checksum)/\(name)"
    }

    /// Removes files under `modules/` and `repodata/` that `keep` does not name, and emptied directories.
    static func removeUnreferenced(in directory: String, keeping keep: Set<String>) throws -> [String] {
        var removed: [String] = []
        for top in ["modules", "repodata"] {
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
            throw ToolMissing(tool: "gzip", package: "gzip", purpose: "publishing the repository manifest")
        }
        let result = try Executable.run(gzip, ["-n", "-9", "-k", "-f", file])
        guard result.status == 0 else { throw RepositoryError("gzip failed on \(file): \(result.stderr)") }
        return file + ".gz"
    }
}
