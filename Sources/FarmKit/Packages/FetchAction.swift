import FarmEngine
import Foundation

/// Downloads one pinned package into the CAS. Its key is the pin (file name, sha256, size), not
/// the URL: moving to another mirror refetches nothing, and since the CAS names objects by
/// sha256, a package already there is never downloaded again.
public struct FetchAction: TaskAction {
    public let file: String
    public let sha256: Digest
    public let size: Int64
    /// Where to get it, in order; not part of the key. Empty when no mirror could be worked out,
    /// and then `reason` says why.
    public let urls: [String]
    public let reason: String?

    public init(package: PackageReference, urls: [String], reason: String? = nil) {
        file = (package.url as NSString).lastPathComponent
        sha256 = package.sha256
        size = package.size
        self.urls = urls
        self.reason = reason
    }

    public var kind: String { "fetch" }
    public var version: Int { 1 }
    public var parameters: [(name: String, value: String)] { [("file", file), ("sha256", sha256.hex), ("size", String(size))] }
    public var resource: ResourceClass { .network }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        if context.objects.isPresent(sha256), (try? context.objects.verifiedPath(of: sha256)) != nil {
            context.log.append("\(file) is already in the store (sha256 \(sha256)); not downloaded\n")
            return ["package": sha256]
        }
        guard !urls.isEmpty else { throw FarmError(message: reason ?? "no mirror is known for \(file)") }
        let objects = context.objects
        let (urls, sha256, size, file, log) = (self.urls, self.sha256, self.size, self.file, context.log)
        return try await Blocking.run {
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
