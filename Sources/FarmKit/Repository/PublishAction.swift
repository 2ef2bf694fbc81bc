import FarmEngine
import Foundation

/// What a publication consists of: every file of the repository, by path, as a CAS object.
/// The publish task stores it (output `files`); `Publisher.install` makes a directory match it.
public struct PublicationFiles: Sendable, Codable, Equatable {
    public struct File: Sendable, Codable, Equatable {
        public var path: String
        public var digest: Digest
        public var size: Int64
    }
    public var revision: Int
    public var files: [File]

    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> PublicationFiles {
        try JSONDecoder().decode(PublicationFiles.self, from: data)
    }
}

/// Task kind `publish`: the repository of every module that was signed. Inputs: `module.<release>`
/// (the sign tasks' `module` and `signature`), optional, so under `-k` a kernel that failed is
/// left out instead of stopping the publication. Output `files`: the publication, which
/// `Publisher.install` writes to the directory. The task itself makes `primary.xml.gz`,
/// `repomd.xml` and its OpenPGP signature; it reads the directory only to keep each published
/// module's path stable (a module's bytes never change under a path once published).
public struct PublishAction: TaskAction {
    public let directory: String
    /// `uname -m` per kernel release.
    public let machines: [String: String]
    /// The published file name per recipe (`lime-{release}.ko`); the recipe's name is the module's `type`.
    public let outputs: [String: String]
    /// The signed modules it publishes, each an optional input under its `role`.
    public let modules: [Module]
    /// Modules not published because another upstream's kernel has the same release, for the log.
    public let shadowed: [String]
    public let repositoryKey: RepositoryKey
    public let repositoryKeyPaths: RepositoryKey.Paths
    /// The symbol tables it publishes, each an optional input (a profile task's `table` and `banner`).
    public var tables: [Table] = []
    /// The repository's public base URL: with it, `symbols/banners.json` for `vol --remote-isf-url`.
    public var baseURL: String?

    /// One kernel's symbol table: what a profile task made, published as `symbols/linux/<file>`.
    public struct Table: Sendable, Hashable {
        public let kernel: KernelName
        /// `<family>_<release>_<package version>_<arch>.json.xz`
        public let file: String
        public let family: String
        /// `uname -m`.
        public let machine: String
        public init(kernel: KernelName, file: String, family: String, machine: String) {
            self.kernel = kernel
            self.file = file
            self.family = family
            self.machine = machine
        }
        public var role: String { "profile." + kernel.description }
    }

    /// One recipe's module for one kernel: what a sign task made.
    public struct Module: Sendable, Hashable {
        public let recipe: String
        public let kernel: KernelName
        public init(recipe: String, kernel: KernelName) {
            self.recipe = recipe
            self.kernel = kernel
        }
        /// The input's role, made from the module and never read back.
        public var role: String { "module." + FarmTask.sign(recipe: recipe, kernel: kernel).label }
    }

    public init(directory: String, machines: [String: String], outputs: [String: String], modules: [Module], shadowed: [String] = [],
                repositoryKey: RepositoryKey, repositoryKeyPaths: RepositoryKey.Paths) {
        self.directory = directory
        self.machines = machines
        self.outputs = outputs
        self.modules = modules
        self.shadowed = shadowed
        self.repositoryKey = repositoryKey
        self.repositoryKeyPaths = repositoryKeyPaths
    }

    public var kind: String { "publish" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] {
        [("directory", directory), ("openpgp-key", repositoryKey.fingerprint)]
            + outputs.sorted { $0.key < $1.key }.map { ("output:" + $0.key, $0.value) }
            + machines.sorted { $0.key < $1.key }.map { ("machine:" + $0.key, $0.value) }
            + tables.map { ("table:" + $0.kernel.description, "\($0.file) \($0.family) \($0.machine)") }
            + (baseURL.map { [("base-url", $0)] } ?? [])
    }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run { try publish(context) }
    }

    private func publish(_ context: TaskContext) throws -> [String: Digest] {
        let published = Publisher.currentModules(in: directory)
        var modules: [RepositoryModule] = []
        var files: [PublicationFiles.File] = []
        func add(_ path: String, _ digest: Digest) throws {
            guard let size = context.objects.size(of: digest) else {
                throw FarmError("publish: \(path) (\(digest.short)) is not in the store")
            }
            files.append(.init(path: path, digest: digest, size: size))
        }
        var missing: [String] = []
        for entry in self.modules {
            let (recipe, release) = (entry.recipe, entry.kernel.release)
            // An optional input whose sign task failed under -k: left out.
            guard context.inputs[entry.role] != nil, let output = outputs[recipe] else {
                missing.append(FarmTask.sign(recipe: recipe, kernel: entry.kernel).label)
                continue
            }
            let module = try context.input(entry.role, "module"), signature = try context.input(entry.role, "signature")
            let name = output.replacingOccurrences(of: "{release}", with: release)
            let location = Publisher.location(for: name, checksum: module.hex, published: published, directory: directory)
            modules.append(RepositoryModule(type: recipe, name: name, arch: machines[release] ?? "x86_64", checksum: module.hex,
                                            version: release, location: location, signature: location + ".sig"))
            try add(location, module)
            try add(location + ".sig", signature)
        }
        guard !modules.isEmpty else {
            throw FarmError("no module was signed, so there is nothing to publish to \(directory); 'farm build -k' lists the failures")
        }
        for note in shadowed { context.log.append("not published: \(note); the repository names modules by release\n") }
        if !missing.isEmpty { context.log.append("left out (their modules did not build): \(missing.sorted().joined(separator: ", "))\n") }

        /// `repodata/<open_checksum>-<name>.gz`, gzipped as `gzip -n -9` does, added, and its repomd entry.
        func repodata(_ bytes: Data, named name: String) throws -> RepositoryIndex.Entry {
            let file = context.workDirectory + "/" + name
            try AtomicFile.write(bytes, to: file, sync: false)
            let gzipped = try context.store(file: try Publisher.gzip(file))
            let openChecksum = SHA256.hash(bytes).hex
            let location = "repodata/\(openChecksum)-\(name).gz"
            try add(location, gzipped)
            return .init(checksum: gzipped.hex, openChecksum: openChecksum, location: location,
                         size: Int(context.objects.size(of: gzipped) ?? 0), openSize: bytes.count)
        }
        let primary = try repodata(RepositoryFormat.primaryXML(modules), named: "primary.xml")

        let now = Int(Date().timeIntervalSince1970)
        var index = RepositoryIndex(revision: now, checksum: primary.checksum, openChecksum: primary.openChecksum, location: primary.location,
                                    timestamp: now, size: primary.size, openSize: primary.openSize)
        let entries = try publishTables(context, add: add)
        if !entries.isEmpty {
            index.symbols = try repodata(try RepositoryFormat.symbolsJSON(entries), named: "symbols.json")
            if let baseURL { try add("symbols/banners.json", try context.store(try RepositoryFormat.bannersJSON(entries, baseURL: baseURL))) }
        }
        let repomd = context.workDirectory + "/repomd.xml"
        try AtomicFile.write(RepositoryFormat.repomdXML(index), to: repomd, sync: false)
        try GnuPG.detachSign(file: repomd, output: repomd + ".sig", keyHome: repositoryKeyPaths.home, fingerprint: repositoryKey.fingerprint)

        guard let armored = FileManager.default.contents(atPath: repositoryKeyPaths.publicKey) else {
            throw FarmError.badInput("no public repository key at \(repositoryKeyPaths.publicKey); run 'farm keys init'")
        }
        try add(RepositoryFormat.keyPath, try context.store(armored))
        try add(RepositoryFormat.keyDescriptionPath, try context.store(try repositoryKey.encoded()))
        // repomd.xml and its signature come last: `install` writes files in this order.
        try add(RepositoryFormat.repomdPath, try context.store(file: repomd))
        try add(RepositoryFormat.repomdSignaturePath, try context.store(file: repomd + ".sig"))

        context.log.append("repository revision \(now): \(modules.count) module(s), \(entries.count) symbol table(s), primary \(primary.openChecksum.prefix(12))\n")
        let publication = PublicationFiles(revision: now, files: files)
        return ["files": try context.store(try publication.encoded())]
    }
}

extension PublishAction {
    /// Each table that was made, under a path that never changes its bytes, with an OpenPGP
    /// signature by the repository key (as a module has); kernels whose profile failed under `-k`
    /// are left out and named in the log.
    func publishTables(_ context: TaskContext, add: (String, Digest) throws -> Void) throws -> [SymbolTableEntry] {
        let published = Dictionary(Publisher.currentTables(in: directory).map { ($0.location, $0) }, uniquingKeysWith: { a, _ in a })
        var entries: [SymbolTableEntry] = []
        var missing: [String] = []
        for table in tables {
            guard context.inputs[table.role] != nil else {
                missing.append(table.kernel.description)
                continue
            }
            let digest = try context.input(table.role, "table")
            let banner = try context.objects.read(try context.input(table.role, "banner"))
            let location = Publisher.stableLocation(table.file, under: "symbols/linux", checksum: digest.hex, directory: directory)
            // A table already published with these bytes keeps its signature: re-signing every
            // table on every publication would rewrite every .sig for nothing.
            let signature: Digest
            if let old = published[location], old.checksum == digest.hex,
               let bytes = FileManager.default.contents(atPath: directory + "/" + old.signature), old.signature == location + ".sig" {
                signature = try context.store(bytes)
            } else {
                let file = context.workDirectory + "/" + table.file
                try FileManager.default.copyItem(atPath: try context.objects.verifiedPath(of: digest), toPath: file)
                try GnuPG.detachSign(file: file, output: file + ".sig", keyHome: repositoryKeyPaths.home, fingerprint: repositoryKey.fingerprint)
                signature = try context.store(file: file + ".sig")
            }
            try add(location, digest)
            try add(location + ".sig", signature)
            entries.append(SymbolTableEntry(release: table.kernel.release, arch: table.machine, family: table.family,
                                            banner: banner.base64EncodedString(), location: location, checksum: digest.hex,
                                            signature: location + ".sig"))
        }
        if !missing.isEmpty { context.log.append("symbol tables left out (their profiles did not build): \(missing.sorted().joined(separator: ", "))\n") }
        return entries
    }

    public var requirements: [Requirement] {
        [.tool("gpg", package: "gnupg", purpose: "signing the repository's repomd.xml"),
         .tool("gzip", package: "gzip", purpose: "publishing the repository manifest")]
    }
}
