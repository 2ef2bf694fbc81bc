import FarmEngine
import CCurl
import Foundation

public struct HTTPError: Error, CustomStringConvertible, LocalizedError {
    public let url: String
    public let status: Int?
    public let message: String
    /// Worth another try: a server error (5xx) or a connection that failed or broke off.
    public let retryable: Bool
    /// The server answered a resumed request with the whole file: start again from nothing.
    public var rangeIgnored = false
    /// The body passed the size the caller allowed; the transfer was stopped there.
    public var tooLarge = false

    public init(url: String, status: Int?, message: String, retryable: Bool, rangeIgnored: Bool = false) {
        self.url = url
        self.status = status
        self.message = message
        self.retryable = retryable
        self.rangeIgnored = rangeIgnored
    }

    public var description: String {
        if let status { return "\(url): HTTP \(status)\(message.isEmpty ? "" : ": \(message)")" }
        return "\(url): \(message)"
    }

    public var errorDescription: String? { description }
}

/// The only file that calls libcurl: a GET into a file descriptor or memory, a HEAD, a PUT from
/// a file descriptor, each with timeouts.
enum HTTPClient {
    private static let setup: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    private final class Sink {
        /// -1: the body goes to `memory`.
        let descriptor: Int32
        let handle: UnsafeMutableRawPointer
        let offset: Int64
        let limit: Int64?
        var written: Int64 = 0
        var failed: Int32 = 0
        var tooLarge = false
        var memory = Data()
        init(descriptor: Int32, handle: UnsafeMutableRawPointer, offset: Int64, limit: Int64?) {
            self.descriptor = descriptor
            self.handle = handle
            self.offset = offset
            self.limit = limit
        }

        /// How many of `count` new bytes may still be written: the file (the resumed part
        /// included) may grow to `limit` + 1 bytes, which proves the body too large.
        func allowed(_ count: Int) -> Int {
            guard let limit else { return count }
            var status = 0
            farm_curl_response_code(handle, &status)
            // A 200 to a resumed request is the whole file again, so the partial part does not count.
            let start = status == 200 ? 0 : offset
            let room = limit + 1 - start - written
            if Int64(count) < room { return count }
            tooLarge = true
            return Int(max(room, 0))
        }
    }

    /// False only when the server says it does not have `url` (404 or 410; a missing file:// file).
    /// A timeout or a server error proves nothing, so it counts as "has it". HEAD, no body.
    static func exists(_ url: String, connectTimeout: Int = 20) -> Bool {
        _ = setup
        guard let handle = curl_easy_init() else { return true }
        defer { curl_easy_cleanup(handle) }
        configure(handle, url: url, connectTimeout: connectTimeout)
        farm_curl_setopt_long(handle, CURLOPT_NOBODY, 1)
        farm_curl_setopt_long(handle, CURLOPT_TIMEOUT, 60)
        let code = curl_easy_perform(handle)
        var status = 0
        farm_curl_response_code(handle, &status)
        if code == CURLE_HTTP_RETURNED_ERROR { return status != 404 && status != 410 }
        return code != CURLE_FILE_COULDNT_READ_FILE
    }

    /// What every transfer shares: redirects followed, no signals, HTTP errors as failures (an
    /// error page must never land in the file being downloaded, and then be resumed from).
    private static func configure(_ handle: UnsafeMutableRawPointer, url: String, connectTimeout: Int) {
        farm_curl_setopt_string(handle, CURLOPT_URL, url)
        farm_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 1)
        farm_curl_setopt_long(handle, CURLOPT_MAXREDIRS, 5)
        farm_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
        farm_curl_setopt_long(handle, CURLOPT_FAILONERROR, 1)
        farm_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, connectTimeout)
        farm_curl_setopt_string(handle, CURLOPT_USERAGENT, "farm/\(FarmVersion.current)")
    }

    /// GETs `url` and appends the body to `descriptor`, asking the server to start at `offset`.
    /// Returns the HTTP status and the number of bytes written. With `limit`, a file that would
    /// pass `limit` bytes (counting `offset`) stops the transfer with a `tooLarge` error: a mirror
    /// streaming without end must not fill the disk.
    static func get(_ url: String, into descriptor: Int32, offset: Int64 = 0, limit: Int64? = nil,
                    connectTimeout: Int = 20, stallSeconds: Int = 60) throws -> (status: Int, written: Int64) {
        _ = setup
        guard let handle = curl_easy_init() else {
            throw HTTPError(url: url, status: nil, message: "libcurl could not start a transfer", retryable: false)
        }
        defer { curl_easy_cleanup(handle) }
        let sink = Sink(descriptor: descriptor, handle: handle, offset: offset, limit: limit)
        return try receive(url, handle: handle, into: sink, connectTimeout: connectTimeout, stallSeconds: stallSeconds)
    }

    /// GETs a small body (at most `limit` bytes) into memory; nil when the server does not have
    /// `url` (404 or 410). `timeout` bounds the whole transfer.
    static func get(_ url: String, limit: Int64, connectTimeout: Int, timeout: Int) throws -> Data? {
        _ = setup
        guard let handle = curl_easy_init() else {
            throw HTTPError(url: url, status: nil, message: "libcurl could not start a transfer", retryable: false)
        }
        defer { curl_easy_cleanup(handle) }
        farm_curl_setopt_long(handle, CURLOPT_TIMEOUT, timeout)
        let sink = Sink(descriptor: -1, handle: handle, offset: 0, limit: limit)
        do {
            _ = try receive(url, handle: handle, into: sink, connectTimeout: connectTimeout, stallSeconds: timeout)
        } catch let error as HTTPError where error.status == 404 || error.status == 410 {
            return nil
        }
        return sink.memory
    }

    /// HEAD: whether the server has `url` (false on 404 or 410); any other failure throws.
    static func has(_ url: String, connectTimeout: Int, timeout: Int) throws -> Bool {
        _ = setup
        guard let handle = curl_easy_init() else {
            throw HTTPError(url: url, status: nil, message: "libcurl could not start a transfer", retryable: false)
        }
        defer { curl_easy_cleanup(handle) }
        configure(handle, url: url, connectTimeout: connectTimeout)
        farm_curl_setopt_long(handle, CURLOPT_NOBODY, 1)
        farm_curl_setopt_long(handle, CURLOPT_TIMEOUT, timeout)
        let code = curl_easy_perform(handle)
        var status = 0
        farm_curl_response_code(handle, &status)
        if code == CURLE_OK { return true }
        if code == CURLE_HTTP_RETURNED_ERROR, status == 404 || status == 410 { return false }
        throw failure(url, code: code, status: status)
    }

    /// What a PUT sends: `size` bytes read from a file descriptor, or bytes in memory.
    enum Body {
        case file(Int32, size: Int64)
        case data(Data)
    }

    private final class Source {
        let body: Body
        var sent = 0
        var failed: Int32 = 0
        init(_ body: Body) { self.body = body }

        func read(into buffer: UnsafeMutablePointer<CChar>, count: Int) -> Int {
            switch body {
            case let .file(descriptor, _):
                while true {
                    let n = Glibc.read(descriptor, buffer, count)
                    if n >= 0 { return n }
                    if errno == EINTR { continue }
                    failed = errno
                    return Int(CURL_READFUNC_ABORT)
                }
            case let .data(data):
                let n = min(count, data.count - sent)
                data.withUnsafeBytes { raw in
                    UnsafeMutableRawPointer(buffer).copyMemory(from: raw.baseAddress! + sent, byteCount: n)
                }
                sent += n
                return n
            }
        }
    }

    /// PUTs `body` to `url`. A transfer that stalls for `stallSeconds` is dropped.
    static func put(_ url: String, body: Body, connectTimeout: Int, stallSeconds: Int) throws {
        _ = setup
        guard let handle = curl_easy_init() else {
            throw HTTPError(url: url, status: nil, message: "libcurl could not start a transfer", retryable: false)
        }
        defer { curl_easy_cleanup(handle) }
        let source = Source(body)
        let size: Int64 = switch body {
        case let .file(_, size): size
        case let .data(data): Int64(data.count)
        }
        let context = Unmanaged.passRetained(source)
        defer { context.release() }
        configure(handle, url: url, connectTimeout: connectTimeout)
        farm_curl_setopt_long(handle, CURLOPT_UPLOAD, 1)
        farm_curl_setopt_off(handle, CURLOPT_INFILESIZE_LARGE, curl_off_t(size))
        farm_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1024)
        farm_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, stallSeconds)
        farm_curl_setopt_pointer(handle, CURLOPT_READDATA, context.toOpaque())
        farm_curl_setopt_read(handle) { buffer, size, count, context in
            guard let buffer, let context else { return 0 }
            return Unmanaged<Source>.fromOpaque(context).takeUnretainedValue().read(into: buffer, count: size * count)
        }
        let code = curl_easy_perform(handle)
        var status = 0
        farm_curl_response_code(handle, &status)
        if source.failed != 0 {
            throw HTTPError(url: url, status: nil, message: "reading the upload failed: \(String(cString: strerror(source.failed)))", retryable: false)
        }
        guard code == CURLE_OK else { throw failure(url, code: code, status: status) }
    }

    /// The error for a transfer that did not succeed: an HTTP status, or libcurl's reason.
    private static func failure(_ url: String, code: CURLcode, status: Int) -> HTTPError {
        if code == CURLE_HTTP_RETURNED_ERROR {
            return HTTPError(url: url, status: status, message: "", retryable: status >= 500)
        }
        let message = String(cString: curl_easy_strerror(code))
        let transient: Set<CURLcode> = [CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_RECV_ERROR, CURLE_SEND_ERROR,
                                        CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING, CURLE_COULDNT_RESOLVE_HOST, CURLE_SSL_CONNECT_ERROR,
                                        CURLE_HTTP2, CURLE_HTTP2_STREAM]
        return HTTPError(url: url, status: status == 0 ? nil : status, message: message, retryable: transient.contains(code))
    }

    private static func receive(_ url: String, handle: UnsafeMutableRawPointer, into sink: Sink,
                                connectTimeout: Int, stallSeconds: Int) throws -> (status: Int, written: Int64) {
        let offset = sink.offset, limit = sink.limit
        let context = Unmanaged.passRetained(sink)
        defer { context.release() }

        configure(handle, url: url, connectTimeout: connectTimeout)
        // A transfer that stalls below 1 KiB/s for this long is dropped; large packages may take
        // long, so there is no limit on the whole transfer.
        farm_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1024)
        farm_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, stallSeconds)
        if offset > 0 { farm_curl_setopt_off(handle, CURLOPT_RESUME_FROM_LARGE, curl_off_t(offset)) }
        farm_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context.toOpaque())
        farm_curl_setopt_write(handle) { data, size, count, context in
            guard let data, let context else { return 0 }
            let sink = Unmanaged<Sink>.fromOpaque(context).takeUnretainedValue()
            let total = sink.allowed(size * count)
            if sink.descriptor < 0 {
                sink.memory.append(UnsafeRawPointer(data).assumingMemoryBound(to: UInt8.self), count: total)
                sink.written += Int64(total)
                return sink.tooLarge ? 0 : total
            }
            var offset = 0
            while offset < total {
                let n = write(sink.descriptor, data + offset, total - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    sink.failed = errno
                    return 0
                }
                offset += n
            }
            sink.written += Int64(total)
            // Fewer bytes than libcurl handed over make it stop with CURLE_WRITE_ERROR.
            return sink.tooLarge ? 0 : total
        }
        let code = curl_easy_perform(handle)
        var status = 0
        farm_curl_response_code(handle, &status)
        if sink.failed != 0 {
            throw HTTPError(url: url, status: nil, message: "writing the download failed: \(String(cString: strerror(sink.failed)))", retryable: false)
        }
        if sink.tooLarge, let limit {
            var error = HTTPError(url: url, status: status == 0 ? nil : status, message: "the server sent more than \(limit) bytes", retryable: false)
            error.tooLarge = true
            throw error
        }
        guard code == CURLE_OK else {
            if code == CURLE_HTTP_RETURNED_ERROR, status == 416, offset > 0 {
                // Nothing left to send: the partial file may already be whole; the checksum decides.
                return (416, 0)
            }
            if code == CURLE_HTTP_RETURNED_ERROR {
                throw HTTPError(url: url, status: status, message: status == 404 ? "not found on this mirror; 'farm crawl' refreshes the pins" : "",
                                retryable: status >= 500)
            }
            if code == CURLE_RANGE_ERROR {
                throw HTTPError(url: url, status: status, message: "the server does not resume downloads", retryable: true, rangeIgnored: true)
            }
            throw failure(url, code: code, status: status)
        }
        // file:// transfers have no HTTP status: a success is a whole body, or the requested range.
        if status == 0 { status = offset > 0 ? 206 : 200 }
        return (status, sink.written)
    }
}
