import FarmEngine
import Foundation

/// A remote cache spoken to with Bazel's HTTP cache protocol: `GET`/`HEAD`/`PUT` of
/// `URL/ac/<task key>` (an `ActionResult`) and `URL/cas/<sha256>` (an object). bazel-remote
/// serves it, and so does any WebDAV server that takes `PUT` (nginx's `dav_methods PUT`).
/// Timeouts are short: a cache that does not answer quickly is worth less than the work it saves.
public struct HTTPRemoteCache: RemoteCache {
    /// The base URL requests go to, with its credentials (`http://user:password@host/`) if any.
    let url: String
    /// The base URL as messages show it: without a password.
    public let location: String
    public let writable: Bool

    static let connectTimeout = 5
    /// An `ac` entry is a few hundred bytes: the whole request gets this long.
    static let resultTimeout = 10
    static let largestResult: Int64 = 1 << 20
    /// An object's transfer is dropped after this long below 1 KiB/s.
    static let stallSeconds = 20

    /// `url` must be http or https (`RemoteCacheSetting.problem(with:)` says why not); a trailing `/` is dropped.
    public init(url: String, readOnly: Bool) {
        self.url = url.hasSuffix("/") ? String(url.dropLast()) : url
        var shown = URLComponents(string: self.url)
        if shown?.password != nil { shown?.password = "***" }
        location = shown?.string ?? self.url
        writable = !readOnly
    }

    func resultURL(_ key: Digest) -> String { "\(url)/ac/\(key.hex)" }

    func objectURL(_ digest: Digest) -> String { "\(url)/cas/\(digest.hex)" }

    public func location(of digest: Digest) -> String { "\(location)/cas/\(digest.hex)" }

    /// A message about this cache, its password left out.
    private func failure(_ message: String, unreachable: Bool) -> RemoteCacheFailure {
        RemoteCacheFailure(message.replacingOccurrences(of: url, with: location), unreachable: unreachable)
    }

    /// Any failure but a missing entry means the cache cannot be used now (refused, timed out, a
    /// server error, a refused write).
    private func unreachable(_ error: any Error) -> RemoteCacheFailure {
        failure("\(error)", unreachable: true)
    }

    public func result(forKey key: Digest) throws -> RemoteResult? {
        let address = resultURL(key)
        let body: Data?
        do {
            body = try HTTPClient.get(address, limit: HTTPRemoteCache.largestResult, connectTimeout: HTTPRemoteCache.connectTimeout,
                                      timeout: HTTPRemoteCache.resultTimeout)
        } catch let error as HTTPError where error.tooLarge {
            throw failure("\(address): more than \(HTTPRemoteCache.largestResult) bytes, not an ActionResult", unreachable: false)
        } catch {
            throw unreachable(error)
        }
        guard let body else { return nil }
        do {
            return try ActionResult(decoding: body).result()
        } catch {
            throw failure("\(address): not a usable ActionResult (\(error))", unreachable: false)
        }
    }

    public func download(_ digest: Digest, size: Int64, to file: String) throws {
        let address = objectURL(digest)
        let descriptor = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw FileSystemError.io(operation: "create", path: file, errno: errno) }
        defer { close(descriptor) }
        do {
            _ = try HTTPClient.get(address, into: descriptor, limit: size, connectTimeout: HTTPRemoteCache.connectTimeout,
                                   stallSeconds: HTTPRemoteCache.stallSeconds)
        } catch let error as HTTPError where error.status == 404 || error.status == 410 {
            throw failure("\(address): not found, though a result in the cache names it", unreachable: false)
        } catch let error as HTTPError where error.tooLarge {
            throw failure("\(address): longer than the \(size) bytes its result gives; refused", unreachable: false)
        } catch let error as HTTPError {
            throw unreachable(error)
        }
    }

    public func has(_ digest: Digest) throws -> Bool {
        do {
            return try HTTPClient.has(objectURL(digest), connectTimeout: HTTPRemoteCache.connectTimeout, timeout: HTTPRemoteCache.resultTimeout)
        } catch {
            throw unreachable(error)
        }
    }

    public func upload(_ digest: Digest, size: Int64, from file: String) throws {
        let descriptor = open(file, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileSystemError.io(operation: "open", path: file, errno: errno) }
        defer { close(descriptor) }
        do {
            try HTTPClient.put(objectURL(digest), body: .file(descriptor, size: size), connectTimeout: HTTPRemoteCache.connectTimeout,
                               stallSeconds: HTTPRemoteCache.stallSeconds)
        } catch {
            throw unreachable(error)
        }
    }

    public func store(_ result: RemoteResult, forKey key: Digest) throws {
        do {
            try HTTPClient.put(resultURL(key), body: .data(ActionResult(result).encoded), connectTimeout: HTTPRemoteCache.connectTimeout,
                               stallSeconds: HTTPRemoteCache.stallSeconds)
        } catch {
            throw unreachable(error)
        }
    }
}
