import FarmEngine
import Foundation

/// The most bytes a download may bring, and what that bound is, for the error message.
public struct SizeLimit: Sendable {
    public var bytes: Int64
    public var what: String

    public init(bytes: Int64, what: String) {
        self.bytes = bytes
        self.what = what
    }

    public static func pinned(_ size: Int64) -> SizeLimit { SizeLimit(bytes: size, what: "the pinned size of \(size) bytes") }
}

/// Downloads with retries (backoff on 5xx and broken connections), resumes partial files, and
/// checks size and sha256 before anything is used. Every download has a size bound, so a mirror
/// that streams without end cannot fill the disk.
public struct Downloader: Sendable {
    public var attempts = 5
    public var firstDelay: Duration = .milliseconds(500)

    public init(attempts: Int = 5, firstDelay: Duration = .milliseconds(500)) {
        self.attempts = attempts
        self.firstDelay = firstDelay
    }

    /// Downloads `url` to `path`, continuing from a partial file already there. A body that would
    /// make the file pass `limit` stops the transfer and removes the file. Blocking: call it
    /// through `Blocking.run`.
    public func download(_ url: String, to path: String, limit: SizeLimit, log: TaskLog? = nil) throws {
        var delay = firstDelay
        var lastError: HTTPError?
        for attempt in 1...attempts {
            if attempt > 1 {
                log?.append("retrying \(url) in \(delay) (attempt \(attempt) of \(attempts)): \(lastError.map { "\($0)" } ?? "")\n")
                Thread.sleep(forTimeInterval: delay.seconds)
                delay *= 2
            }
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw FileSystemError.io(operation: "open", path: path, errno: errno) }
            var existing = Int64(lseek(fd, 0, SEEK_END))
            if existing > limit.bytes {
                // Longer than the file can be: not a prefix of it.
                ftruncate(fd, 0)
                lseek(fd, 0, SEEK_SET)
                existing = 0
            }
            do {
                defer { close(fd) }
                let (status, written) = try HTTPClient.get(url, into: fd, offset: existing, limit: limit.bytes)
                switch status {
                case 200 where existing > 0 && written > 0:
                    // Answered with the whole file after the partial one: start over from nothing.
                    ftruncate(fd, 0)
                    lastError = HTTPError(url: url, status: status, message: "the server does not resume; fetching again from the start", retryable: true)
                    continue
                case 200, 206:
                    if existing > 0 { log?.append("resumed \(url) at byte \(existing)\n") }
                    return
                case 416 where existing > 0:
                    // Range not satisfiable: the partial file is already complete (or bad); the
                    // checksum decides.
                    return
                default:
                    throw HTTPError(url: url, status: status, message: status == 404 ? "not found on the mirror; run 'farm crawl' to refresh the pins" : "", retryable: false)
                }
            } catch let error as HTTPError where error.retryable {
                if error.rangeIgnored { truncate(path, 0) }
                lastError = error
            } catch let error as HTTPError where error.tooLarge {
                unlink(path)
                throw FarmError(message: "\(url): the server sent more than \(limit.what); the download was stopped there and"
                                    + " its partial file removed. The mirror serves another file or is broken: try another mirror, or"
                                    + " run 'farm crawl' if the pin is stale")
            }
        }
        throw lastError ?? HTTPError(url: url, status: nil, message: "download failed", retryable: false)
    }

    /// Downloads a pinned file from the first URL that works and checks it. On a mismatch the file
    /// is deleted and the error names the URL, the expected and the actual digest and size.
    public func fetchPinned(urls: [String], to path: String, sha256: Digest, size: Int64, log: TaskLog? = nil) throws {
        var failures: [String] = []
        for url in urls {
            do {
                try download(url, to: path, limit: .pinned(size), log: log)
            } catch {
                failures.append("\(error)")
                unlink(path)
                continue
            }
            let (actual, actualSize) = try SHA256.hash(fileAt: path)
            if actual == sha256, actualSize == size {
                log?.append("fetched \(url) (\(size) bytes, sha256 \(sha256))\n")
                return
            }
            unlink(path)
            throw FarmError(message: "\(url): checksum mismatch: expected sha256 \(sha256.hex) (\(size) bytes), got \(actual.hex) (\(actualSize) bytes); nothing was stored. The mirror or the pin is wrong: run 'farm crawl' to refresh the pins")
        }
        throw FarmError(message: failures.joined(separator: "; "))
    }
}
