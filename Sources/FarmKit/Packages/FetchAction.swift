import FarmEngine
import Foundation

/// Downloads one pinned package into the CAS. Its key is the pin (file name, sha256, size), not
/// the URL: moving to another mirror refetches nothing, and since the CAS names objects by
/// sha256, a package already there is never downloaded again. A package of a yum upstream with a
/// keyring also has its own RPM signature checked, so that keyring's digest is part of the key.
public struct FetchAction: TaskAction {
    public let file: String
    public let sha256: Digest
    public let size: Int64
    /// Where to get it, in order; not part of the key. Empty when no mirror could be worked out,
    /// and then `reason` says why.
    public let urls: [String]
    public let reason: String?
    /// The keyring an RPM's own signature is checked against, with its digest (nil when unreadable).
    public let keyring: (path: String, digest: Digest?)?
    /// A yum upstream's mirrorlist and the package's path under each of its base URLs, read when
    /// `urls` is empty; not part of the key.
    public let mirrorlist: (url: String, path: String)?

    public init(package: PackageReference, urls: [String], reason: String? = nil) {
        self.init(package: package, urls: urls, reason: reason, upstream: nil, manifestDirectory: ".")
    }

    /// The fetch of a package of `upstream`: for yum, with its keyring and mirrorlist.
    public init(package: PackageReference, urls: [String], reason: String?, upstream: Upstream?, manifestDirectory: String) {
        file = (package.url as NSString).lastPathComponent
        sha256 = package.sha256
        size = package.size
        self.urls = urls
        self.reason = reason
        if let upstream, upstream.kind == .yum, let path = upstream.keyring {
            let resolved = path.hasPrefix("/") ? path : manifestDirectory + "/" + path
            keyring = (resolved, try? SHA256.hash(fileAt: resolved).digest)
        } else {
            keyring = nil
        }
        if let upstream, upstream.kind == .yum, upstream.mirror.isEmpty, let list = upstream.mirrorlist {
            mirrorlist = (list, package.url)
        } else {
            mirrorlist = nil
        }
    }

    public var kind: String { "fetch" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] {
        var parameters = [("file", file), ("sha256", sha256.hex), ("size", String(size))]
        if let keyring { parameters.append(("rpm-keyring", keyring.digest?.hex ?? "unreadable " + keyring.path)) }
        return parameters
    }
    public var resource: ResourceClass { .network }
    /// The package's pin: what it downloads is known, so it is fetched only for a task that runs here.
    public var knownOutputs: [String: Digest]? { ["package": sha256] }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        let outputs = try await fetch(context)
        guard let keyring else { return outputs }
        guard keyring.digest != nil else {
            throw FarmError.badInput("\(keyring.path): cannot read the keyring the upstream names to check \(file)'s signature; fix 'keyring:' in the manifest")
        }
        let (objects, file, sha256, log, work) = (context.objects, file, sha256, context.log, context.workDirectory)
        try await Blocking.run {
            let path = try objects.verifiedPath(of: sha256)
            let checked = try RPMSignature.verify(packageAt: path, keyring: keyring.path, workDirectory: work, name: file)
            log.append("\(file): good \(checked) signature by a key of \(keyring.path)\n")
        }
        return outputs
    }

    private func fetch(_ context: TaskContext) async throws -> [String: Digest] {
        if context.objects.isPresent(sha256), (try? context.objects.verifiedPath(of: sha256)) != nil {
            context.log.append("\(file) is already in the store (sha256 \(sha256)); not downloaded\n")
            return ["package": sha256]
        }
        guard !urls.isEmpty || mirrorlist != nil else { throw FarmError(message: reason ?? "no mirror is known for \(file)") }
        let objects = context.objects
        let (givenURLs, sha256, size, file, log, mirrorlist, work) = (self.urls, self.sha256, self.size, self.file, context.log, self.mirrorlist, context.workDirectory)
        return try await Blocking.run {
            var urls = givenURLs
            if urls.isEmpty, let mirrorlist {
                let bases = try YumRepository(mirror: nil, mirrorlist: mirrorlist.url, keyring: nil).baseURLs(workDirectory: work, downloader: Downloader())
                urls = bases.map { $0 + "/" + mirrorlist.path }
            }
            // One partial file per pin, locked, so a killed fetch resumes and two farm processes
            // never write the same partial file.
            let partial = objects.temporaryDirectory + "/partial-\(sha256.hex)"
            let lock = open(partial + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard lock >= 0 else { throw FileSystemError.io(operation: "open", path: partial + ".lock", errno: errno) }
            defer { close(lock) }
            flock(lock, LOCK_EX)
            if objects.isPresent(sha256), (try? objects.verifiedPath(of: sha256)) != nil {
                log.append("\(file) arrived in the store meanwhile; not downloaded\n")
                return ["package": sha256]
            }
            try Downloader().fetchPinned(urls: urls, to: partial, sha256: sha256, size: size, log: log)
            let stored = try objects.adopt(partial).digest
            unlink(partial + ".lock")
            return ["package": stored]
        }
    }
}
