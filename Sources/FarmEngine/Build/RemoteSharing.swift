import Foundation

/// The builder's side of a remote cache. A task the local store lacks is looked up there; its
/// objects are copied into the local store once their bytes match their digests, and the result
/// is recorded locally, so the next build finds it without asking. A task that ran here is offered
/// to the cache. The first time the cache cannot be reached it is dropped for the rest of the
/// build with one warning: a remote cache only ever saves work, it never fails a build.
final class RemoteSharing: @unchecked Sendable {
    let cache: any RemoteCache
    private let store: BuildCache
    private let reporter: any BuildReporter
    private let lock = NSLock()
    private var dropped = false
    /// Objects the cache served with other bytes than their names say: offered again when this
    /// build makes them, whether the cache says it has them or not.
    private var refused = Set<Digest>()

    init(cache: any RemoteCache, store: BuildCache, reporter: any BuildReporter) {
        self.cache = cache
        self.store = store
        self.reporter = reporter
    }

    private var usable: Bool { lock.withLock { !dropped } }

    var offering: Bool { cache.writable && usable }

    /// The task's outputs, taken from the remote cache into the local store and recorded; nil when
    /// the cache has no usable result (the task then runs here).
    func take(_ node: BuildGraph.Node, definition: TaskDefinition) -> [String: Digest]? {
        guard usable else { return nil }
        do {
            guard let result = try cache.result(forKey: definition.key) else { return nil }
            var outputs: [TaskRecord.Output] = []
            for (name, object) in result.outputs.sorted(by: { $0.key < $1.key }) {
                guard let size = try copy(object, for: node) else { return nil }
                outputs.append(TaskRecord.Output(name: name, digest: object.digest, size: size))
            }
            if let log = result.log { guard try copy(log, for: node) != nil else { return nil } }
            try store.save(TaskRecord(key: definition.key, kind: node.kind, label: node.label, definition: definition.encoded,
                                      outputs: outputs, log: result.log?.digest, started: Date(), duration: 0,
                                      status: 0, error: nil, farmVersion: FarmVersion.current))
            return Dictionary(uniqueKeysWithValues: outputs.map { ($0.name, $0.digest) })
        } catch {
            failed(error, doing: "\(node.name) runs here")
            return nil
        }
    }

    /// Puts one object into the local store from the cache; its size, or nil (with a warning) when
    /// the cache served other bytes than its name says.
    private func copy(_ object: RemoteResult.Object, for node: BuildGraph.Node) throws -> Int64? {
        if let size = store.objects.size(of: object.digest) { return size }
        let file = store.objects.temporaryPath("remote")
        defer { unlink(file) }
        try cache.download(object.digest, size: object.size, to: file)
        let (actual, size) = try store.objects.adopt(file, expecting: object.digest)
        guard actual == object.digest else {
            lock.withLock { _ = refused.insert(object.digest) }
            reporter.report(.warning("\(cache.location(of: object.digest)): refused, its content hashes to \(actual.hex), not to its name;"
                                     + " \(node.name) runs here (the cache server should be checked)"))
            return nil
        }
        return size
    }

    /// Offers the result of a task that ran here: objects the cache lacks first, then the result
    /// (a cache that checks results may refuse one whose objects it does not have).
    func offer(_ result: RemoteResult, forKey key: Digest, of task: String) {
        guard offering else { return }
        do {
            for object in Array(result.outputs.values) + (result.log.map { [$0] } ?? []) {
                let repair = lock.withLock { refused.contains(object.digest) }
                guard try repair || !cache.has(object.digest) else { continue }
                try cache.upload(object.digest, size: object.size, from: store.objects.path(of: object.digest))
            }
            try cache.store(result, forKey: key)
        } catch {
            failed(error, doing: "\(task) is not shared")
        }
    }

    /// A cache that cannot be reached is dropped, with one warning for the build; a bad entry is
    /// named and only its task is affected.
    private func failed(_ error: any Error, doing consequence: String) {
        guard let failure = error as? RemoteCacheFailure, failure.unreachable else {
            reporter.report(.warning("\(error); \(consequence)"))
            return
        }
        let first = lock.withLock {
            defer { dropped = true }
            return !dropped
        }
        guard first else { return }
        reporter.report(.warning("remote cache \(cache.location) cannot be used: \(failure.message);"
                                 + " this build goes on without it, running here what the local cache lacks (check the server and the URL)"))
    }
}
