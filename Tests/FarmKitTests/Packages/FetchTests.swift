import FarmEngine
import FarmKit
import Foundation
import Testing

@Suite("Fetching pinned packages")
struct FetchTests {
    /// A build of one kernel whose packages come from a file:// mirror.
    func project(_ scratch: Scratch, pin: (String) throws -> PackageReference) throws -> (manifest: String, mirror: String) {
        let mirror = scratch.file("mirror")
        try FileManager.default.createDirectory(atPath: mirror + "/pool", withIntermediateDirectories: true)
        let package = try pin(mirror)
        let manifest = try scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          local: {kind: apt, mirror: "file://\(mirror)", suites: [testsuite]}
        kernels:
          - release: 6.1.0-1-amd64
            upstream: local
            packages:
              - {url: \(package.url), sha256: \(package.sha256.hex), size: \(package.size)}

        """)
        return (manifest, mirror)
    }

    func build(_ manifest: String) async throws -> (BuildSummary, EventLog) {
        let log = EventLog()
        let session = try Session(manifestPath: manifest, cacheDirectory: nil, rules: FarmRules())
        return (try await session.build(patterns: [], options: BuildOptions(), reporter: log), log)
    }

    @Test func checksumMismatchFailsAndStoresNothing() async throws {
        let scratch = try Scratch()
        let wrong = SHA256.hash("not these bytes")
        let (manifest, mirror) = try project(scratch) { mirror in
            try Data("package bytes\n".utf8).write(to: URL(fileURLWithPath: mirror + "/pool/a.deb"))
            return PackageReference(url: "pool/a.deb", sha256: wrong, size: 14)
        }
        let (summary, log) = try await build(manifest)
        #expect(summary.failed == 1)
        let error = try #require(log.failed["fetch:a.deb"]?.error)
        #expect(error.contains("file://\(mirror)/pool/a.deb: checksum mismatch: expected sha256 \(wrong.hex)"), "\(error)")
        #expect(error.contains("got \(SHA256.hash(Data("package bytes\n".utf8)).hex)"))
        #expect(error.contains("nothing was stored"))
        let cache = scratch.file("project/cache")
        #expect(!FileManager.default.fileExists(atPath: ContentStore.path(in: cache + "/cas", of: SHA256.hash(Data("package bytes\n".utf8)))))
        #expect(!FileManager.default.fileExists(atPath: cache + "/cas/tmp/partial-\(wrong.hex)"))
    }

    @Test func resumesAPartialDownloadAndNeverFetchesAStoredPackageAgain() async throws {
        let scratch = try Scratch()
        let bytes = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let digest = SHA256.hash(bytes)
        let (manifest, mirror) = try project(scratch) { mirror in
            try bytes.write(to: URL(fileURLWithPath: mirror + "/pool/b.deb"))
            return PackageReference(url: "pool/b.deb", sha256: digest, size: Int64(bytes.count))
        }
        // What a killed fetch left behind: the first half.
        let temporary = scratch.file("project/cache/cas/tmp")
        try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true)
        try bytes.prefix(100_000).write(to: URL(fileURLWithPath: temporary + "/partial-\(digest.hex)"))

        let (summary, _) = try await build(manifest)
        #expect(summary.built == 1)
        let session = try Session(manifestPath: manifest, cacheDirectory: nil, rules: FarmRules())
        let (_, logText) = try session.log("fetch:b.deb")
        #expect(logText.contains("resumed file://\(mirror)/pool/b.deb at byte 100000"), "\(logText)")
        let cache = try session.openCache()
        #expect(try cache.objects.read(digest) == bytes)
        cache.close()

        // The mirror loses the file and the task's record is gone: the store still has the
        // package under its pin, so nothing is downloaded.
        unlink(mirror + "/pool/b.deb")
        try FileManager.default.removeItem(atPath: scratch.file("project/cache/farm.sqlite"))
        let (again, _) = try await build(manifest)
        #expect(again.built == 1)
        #expect(try session.log("fetch:b.deb").text.contains("already in the store"))
    }
}

/// An HTTP server on 127.0.0.1 that answers 503 to the first `failures` requests, then serves
/// files from a directory (with ranges, as mirrors do), and under `/endless/` streams zeros
/// without end, as a broken mirror did. It stops when the test ends.
final class FlakyServer {
    let process = Process()
    let port: Int

    init(directory: String, failures: Int, scratch: Scratch) throws {
        let script = try scratch.write("server.py", """
        import http.server, sys, os
        left = [int(sys.argv[2])]
        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                if left[0] > 0:
                    left[0] -= 1
                    self.send_error(503, "try later")
                    return
                if self.path.startswith("/endless/"):
                    self.send_response(200)
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(bytes(1 << 16))
                    except OSError:
                        return
                path = self.translate_path(self.path)
                data = open(path, "rb").read()
                start = self.headers.get("Range", "bytes=0-")[len("bytes="):].split("-")[0]
                if int(start) > 0:
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %s-%d/%d" % (start, len(data) - 1, len(data)))
                    data = data[int(start):]
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            def log_message(self, *args):
                pass
        os.chdir(sys.argv[1])
        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """)
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script, directory, String(failures)]
        process.standardOutput = output
        // Its own stderr: an inherited one would keep the test runner's pipe open.
        process.standardError = FileHandle.nullDevice
        try process.run()
        let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        guard let port = Int(line.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw TestFailure("the test server did not start: \(line)") }
        self.port = port
    }

    func stop() {
        if process.isRunning {
            // SIGKILL: a child spawned by Foundation may start with SIGTERM blocked.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

extension FetchTests {
    @Test func retriesAfterServerErrors() throws {
        let scratch = try Scratch()
        try FileManager.default.createDirectory(atPath: scratch.file("www"), withIntermediateDirectories: true)
        let bytes = Data("a package\n".utf8)
        try bytes.write(to: URL(fileURLWithPath: scratch.file("www/c.deb")))
        let server = try FlakyServer(directory: scratch.file("www"), failures: 2, scratch: scratch)
        defer { server.stop() }
        let log = TaskLog()
        try Downloader(attempts: 4, firstDelay: .milliseconds(100))
            .fetchPinned(urls: ["http://127.0.0.1:\(server.port)/c.deb"], to: scratch.file("c.deb"), sha256: SHA256.hash(bytes),
                         size: Int64(bytes.count), log: log)
        #expect(log.text.components(separatedBy: "retrying").count - 1 == 2, "\(log.text)")
        #expect(log.text.contains("HTTP 503"))
        #expect(FileManager.default.contents(atPath: scratch.file("c.deb")) == bytes)

        // More failures than attempts: the error names the URL and the status.
        let stubborn = try FlakyServer(directory: scratch.file("www"), failures: 10, scratch: scratch)
        defer { stubborn.stop() }
        let url = "http://127.0.0.1:\(stubborn.port)/c.deb"
        let error = #expect(throws: FarmError.self) {
            try Downloader(attempts: 2, firstDelay: .milliseconds(50))
                .fetchPinned(urls: [url], to: scratch.file("d.deb"), sha256: SHA256.hash(bytes), size: Int64(bytes.count))
        }
        #expect(error?.description.contains("\(url): HTTP 503") == true, "\(String(describing: error))")
    }
}

extension FetchTests {
    @Test(.timeLimit(.minutes(1)))
    func aMirrorStreamingWithoutEndIsCutOffAtThePinnedSizeAndLeavesNothing() async throws {
        let scratch = try Scratch()
        try FileManager.default.createDirectory(atPath: scratch.file("www"), withIntermediateDirectories: true)
        let server = try FlakyServer(directory: scratch.file("www"), failures: 0, scratch: scratch)
        defer { server.stop() }
        let pin = SHA256.hash("the real package")
        let manifest = try scratch.write("project/manifest.yml", """
        farm: 1
        upstreams:
          local: {kind: apt, mirror: "http://127.0.0.1:\(server.port)", suites: [testsuite]}
        kernels:
          - release: 6.1.0-1-amd64
            upstream: local
            packages:
              - {url: endless/e.deb, sha256: \(pin.hex), size: 300000}

        """)
        let started = ContinuousClock.now
        let (summary, log) = try await build(manifest)
        #expect(ContinuousClock.now - started < .seconds(20))
        #expect(summary.failed == 1)
        let error = try #require(log.failed["fetch:e.deb"]?.error)
        #expect(error.contains("http://127.0.0.1:\(server.port)/endless/e.deb: the server sent more than the pinned size of 300000 bytes"),
                "\(error)")

        let cache = scratch.file("project/cache")
        #expect(!FileManager.default.fileExists(atPath: cache + "/cas/tmp/partial-\(pin.hex)"))
        // The store holds the failed task's log and nothing else.
        let session = try Session(manifestPath: manifest, cacheDirectory: nil, rules: FarmRules())
        let opened = try session.openCache()
        defer { opened.close() }
        let record = try #require(try opened.findRecords("fetch:e.deb").first)
        #expect(opened.objects.allObjects().map(\.digest) == [record.log].compactMap { $0 })
    }

    @Test func aResumedDownloadCountsItsPartialFileAgainstThePin() throws {
        let scratch = try Scratch()
        try FileManager.default.createDirectory(atPath: scratch.file("www"), withIntermediateDirectories: true)
        // The mirror's file is 500 bytes longer than the pin says.
        try Data(count: 100_500).write(to: URL(fileURLWithPath: scratch.file("www/f.deb")))
        let server = try FlakyServer(directory: scratch.file("www"), failures: 0, scratch: scratch)
        defer { server.stop() }
        // A partial file already holding 99,000 of the 100,000 pinned bytes leaves room for 1,000
        // more; the 1,500 the server sends pass the pin.
        let partial = scratch.file("partial")
        try Data(count: 99_000).write(to: URL(fileURLWithPath: partial))
        let url = "http://127.0.0.1:\(server.port)/f.deb"
        let error = #expect(throws: FarmError.self) {
            try Downloader(attempts: 1).download(url, to: partial, limit: .pinned(100_000))
        }
        #expect(error?.description.contains("\(url): the server sent more than the pinned size of 100000 bytes") == true,
                "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: partial))
    }

    @Test func anInReleaseThatNeverEndsIsCutOffAt64MiB() throws {
        let scratch = try Scratch()
        try FileManager.default.createDirectory(atPath: scratch.file("www"), withIntermediateDirectories: true)
        let server = try FlakyServer(directory: scratch.file("www"), failures: 0, scratch: scratch)
        defer { server.stop() }
        let archive = AptArchive(baseURL: "http://127.0.0.1:\(server.port)/endless", keyrings: [])
        let error = #expect(throws: FarmError.self) {
            try archive.packages(suite: "bookworm", component: "main", architecture: "amd64", workDirectory: scratch.path)
        }
        let url = "http://127.0.0.1:\(server.port)/endless/dists/bookworm/InRelease"
        #expect(error?.description.contains("\(url): the server sent more than the 64 MiB farm allows for an InRelease file") == true,
                "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("bookworm-InRelease")))
    }
}

