import FarmEngine
@testable import FarmKit
import Foundation
import SyntheticKinds
import Testing

/// The kinds `SyntheticKinds` shares through a remote cache, as FarmKit shares bundle,
/// toolchain, compile and sign; fetch and publish are not shared.
private let sharedKinds: Set<String> = ["synthetic-bundle", "synthetic-toolchain", "synthetic-compile", "synthetic-sign"]

private func kind(_ name: String) -> String { String(name.prefix { $0 != ":" }) }

/// Two machines (two local caches) and one real cache server: Debian's nginx with WebDAV PUT.
@Suite("Remote cache", .enabled(if: NginxServer.installed, "needs nginx (apt-get install nginx-light)"))
struct RemoteCacheTests {
    let scratch: Scratch
    let server: NginxServer

    init() throws {
        scratch = try Scratch()
        server = try NginxServer(directory: scratch.file("server"))
    }

    func machine(_ name: String, kernels: Int = 3) throws -> SyntheticProject {
        try SyntheticProject(try Scratch("\(name)"), kernels: kernels)
    }

    /// The outputs of every recorded task of the given kinds: task name to output name to bytes.
    func outputs(of project: SyntheticProject) throws -> [String: [String: Data]] {
        let cache = try BuildCache(directory: project.cache, access: .readOnly)
        defer { cache.close() }
        var result: [String: [String: Data]] = [:]
        for name in try project.session().plan([]).nodes.map(\.name) where sharedKinds.contains(kind(name)) {
            let record = try #require(try cache.findRecords(name).first, "no record of \(name)")
            for output in record.outputs { result[name, default: [:]][output.name] = try cache.objects.read(output.digest) }
        }
        return result
    }

    @Test func aSecondMachineTakesSharedResultsFromTheServerWithTheSameBytes() async throws {
        let first = try machine("first")
        let (built, firstLog) = try await first.build(remoteCache: .init(url: server.url))
        #expect(built.succeeded && built.remote == 0)
        #expect(firstLog.warnings.isEmpty, "\(firstLog.warnings)")
        #expect(server.files.contains { $0.hasPrefix("ac/") } && server.files.contains { $0.hasPrefix("cas/") }, "\(server.files)")

        let second = try machine("second")
        let (summary, log) = try await second.build(remoteCache: .init(url: server.url))
        #expect(summary.succeeded)
        #expect(log.warnings.isEmpty, "\(log.warnings)")
        let ranShared = log.built.filter { sharedKinds.contains(kind($0)) }
        #expect(ranShared.isEmpty, "ran although the server had them: \(ranShared.sorted())")
        // Every task that reads the packages came from the server, so none was downloaded.
        #expect(!log.built.contains { $0.hasPrefix("synthetic-fetch:") }, "downloaded for nothing: \(log.built.sorted())")
        #expect(firstLog.built.contains { $0.hasPrefix("synthetic-fetch:") })
        #expect(log.fetched.count == summary.remote && summary.remote == firstLog.built.filter { sharedKinds.contains(kind($0)) }.count)
        #expect(try outputs(of: second) == outputs(of: first))

        // Recorded locally: without the stamp's shortcut, the next build finds every result in its
        // own store, asks the server nothing and writes nothing to its database.
        UpToDateStamp.removeAll(cacheDirectory: second.cache)
        let requests = server.requests.count
        let (again, againLog) = try await second.build(remoteCache: .init(url: server.url))
        #expect(!again.unchangedSinceStamp)
        #expect(again.built == 0 && again.remote == 0 && againLog.fetched.isEmpty)
        #expect(again.databaseWrites == 0)
        #expect(server.requests.count == requests, "\(server.requests.dropFirst(requests).map { "\($0.method) \($0.path)" })")
    }

    @Test func aTamperedObjectOnTheServerIsRefusedByNameAndItsTaskRunsHere() async throws {
        let first = try machine("first", kernels: 2)
        try await first.build(remoteCache: .init(url: server.url))
        let compile = "synthetic-compile:\(SyntheticProject.release(0))"
        let module = try #require(try outputs(of: first)[compile]?["module"])
        let tampered = server.root + "/cas/" + SHA256.hash(module).hex
        try Data("a module someone swapped\n".utf8).write(to: URL(fileURLWithPath: tampered))

        let second = try machine("second", kernels: 2)
        let (summary, log) = try await second.build(remoteCache: .init(url: server.url))
        #expect(summary.succeeded)
        #expect(log.warnings.count == 1, "\(log.warnings)")
        #expect(log.warnings.first?.contains("\(server.url)/cas/\(SHA256.hash(module).hex): refused") == true, "\(log.warnings)")
        #expect(log.built.contains(compile))
        // The rest still came from the server, the sign of that kernel too (same module, same key).
        #expect(log.fetched.contains("synthetic-sign:\(SyntheticProject.release(0))"))
        #expect(try outputs(of: second) == outputs(of: first))
        let store = try BuildCache(directory: second.cache, access: .readOnly)
        defer { store.close() }
        #expect(!store.objects.isPresent(SHA256.hash("a module someone swapped\n")))
        // The module built here replaced the swapped object on the server.
        #expect(FileManager.default.contents(atPath: tampered) == module)
    }

    /// Its password is not shown.
    @Test func aServerThatIsNotThereGivesOneWarningAndALocalBuild() async throws {
        let nowhere = "127.0.0.1:\(NginxServer.freePort())/cache"
        let project = try machine("nowhere")
        let (summary, log) = try await project.build(remoteCache: .init(url: "http://farm:s3cret@" + nowhere))
        #expect(summary.succeeded && summary.built == summary.total)
        #expect(log.warnings.count == 1, "\(log.warnings)")
        #expect(log.warnings.first?.contains("remote cache http://farm:***@\(nowhere) cannot be used") == true, "\(log.warnings)")
        #expect(log.warnings.allSatisfy { !$0.contains("s3cret") }, "\(log.warnings)")
    }

    @Test func aServerAnsweringWithErrorsGivesOneWarningAndALocalBuild() async throws {
        let broken = try NginxServer(directory: scratch.file("broken"), failing: true)
        let project = try machine("broken")
        let (summary, log) = try await project.build(remoteCache: .init(url: broken.url))
        #expect(summary.succeeded && summary.built == summary.total)
        #expect(log.warnings.count == 1 && log.warnings[0].contains("\(broken.url)/ac/") && log.warnings[0].contains("HTTP 503"), "\(log.warnings)")
        #expect(broken.requests.allSatisfy { $0.status == 503 } && broken.requests.count <= 3, "\(broken.requests.map { "\($0.method) \($0.path)" })")
    }

    /// A server that takes connections and never answers holds the build up once, for the
    /// result timeout, then the build goes on without it.
    @Test(.timeLimit(.minutes(1)))
    func aServerThatNeverAnswersIsDroppedAfterItsTimeout() async throws {
        let silent = try PythonServer(serving: """
        held = []
        while True:
            held.append(s.accept()[0])
        """)
        let project = try machine("silent", kernels: 1)
        let clock = ContinuousClock.now
        let (summary, log) = try await project.build(remoteCache: .init(url: "http://127.0.0.1:\(silent.port)"))
        let elapsed = (ContinuousClock.now - clock).components.seconds
        #expect(summary.succeeded && summary.built == summary.total)
        #expect(log.warnings.count == 1 && log.warnings[0].contains("127.0.0.1:\(silent.port)"), "\(log.warnings)")
        // Held up once, not once per shared task (four here): under two timeouts, however loaded
        // the machine (a CI run beside other suites took 18 s for the 10 s timeout and the build).
        #expect(elapsed < 2 * Int64(HTTPRemoteCache.resultTimeout), "\(elapsed) s")
    }

    @Test func aServerStoppedMidBuildGivesOneWarningAndTheRestIsBuiltHere() async throws {
        let first = try machine("first", kernels: 4)
        try await first.build(remoteCache: .init(url: server.url))
        let server = self.server
        let stopped = Stopped()
        // Stopped at the first result it served: every later request is refused.
        let log = EventLog { event in
            if case .fetched = event, stopped.first() { server.stop() }
        }
        let second = try machine("second", kernels: 4)
        let (summary, _) = try await second.build(remoteCache: .init(url: server.url), log: log)
        #expect(summary.succeeded)
        #expect(summary.remote >= 1 && summary.built > 0, "remote \(summary.remote), built \(summary.built)")
        #expect(log.warnings.count == 1, "\(log.warnings)")
        #expect(log.warnings.first?.contains("remote cache \(server.url) cannot be used") == true, "\(log.warnings)")
        #expect(try outputs(of: second) == outputs(of: first))
    }

    /// `remote-cache:` in the manifest, read only as `--remote-cache-read-only` says.
    @Test func readOnlyNeverWritesToTheServer() async throws {
        let project = try machine("reader")
        let text = try String(contentsOfFile: project.manifestPath, encoding: .utf8)
        try Data((text + "remote-cache: \(server.url)/\n").utf8).write(to: URL(fileURLWithPath: project.manifestPath))
        let (summary, log) = try await project.build(remoteCache: .init(readOnly: true))
        #expect(summary.succeeded && summary.built == summary.total)
        #expect(log.warnings.isEmpty, "\(log.warnings)")
        let methods = Set(server.requests.map(\.method))
        #expect(methods == ["GET"], "\(server.requests.map { "\($0.method) \($0.path)" })")
        #expect(server.files.isEmpty, "\(server.files)")
    }

    /// The same manifest without the flag writes: the read-only test above is not read-only by accident.
    @Test func theManifestsRemoteCacheIsUsedAndWrittenWithoutTheFlag() async throws {
        let project = try machine("writer", kernels: 1)
        let text = try String(contentsOfFile: project.manifestPath, encoding: .utf8)
        try Data((text + "remote-cache: \(server.url)\n").utf8).write(to: URL(fileURLWithPath: project.manifestPath))
        let (summary, _) = try await project.build()
        #expect(summary.succeeded)
        #expect(server.requests.contains { $0.method == "PUT" && $0.path.hasPrefix("/ac/") && $0.status == 201 })
    }

    /// `--remote-cache URL` and `--remote-cache-read-only` as `farm build` takes them (the test
    /// driver passes them to the same `Session.build`), with the JSON events a machine reads.
    @Test func theFlagsFromTheCommandLine() throws {
        let first = try machine("first", kernels: 1), second = try machine("second", kernels: 1)
        let writer = try runProcess(Products.driver, ["--manifest", first.manifestPath, "--cache", first.cache, "--remote-cache", server.url])
        #expect(writer.status == 0, "\(writer.stderr)")
        let puts = server.requests.filter { $0.method == "PUT" }.count
        #expect(puts > 0)
        let reader = try runProcess(Products.driver, ["--manifest", second.manifestPath, "--cache", second.cache,
                                                      "--remote-cache", server.url, "--remote-cache-read-only"])
        #expect(reader.status == 0, "\(reader.stderr)")
        #expect(reader.tasks("fetched").contains("synthetic-compile:\(SyntheticProject.release(0))"), "\(reader.stdout)")
        #expect(reader.tasks("built").allSatisfy { !sharedKinds.contains(kind($0)) }, "\(reader.stdout)")
        #expect(server.requests.filter { $0.method == "PUT" }.count == puts)
        let completed = try #require(reader.events.last)
        #expect(completed["event"] as? String == "completed" && (completed["remote"] as? Int ?? 0) > 0, "\(completed)")

        let nowhere = "http://127.0.0.1:\(NginxServer.freePort())"
        let third = try machine("third", kernels: 1)
        let alone = try runProcess(Products.driver, ["--manifest", third.manifestPath, "--cache", third.cache, "--remote-cache", nowhere])
        #expect(alone.status == 0, "\(alone.stderr)")
        let warnings = alone.events.filter { $0["event"] as? String == "warning" }.compactMap { $0["message"] as? String }
        #expect(warnings.count == 1 && warnings[0].contains(nowhere), "\(warnings)")
    }

    /// What bazel-remote and Bazel read: the `ac` body decodes, with protoc and the proto's field
    /// numbers, as an ActionResult whose outputs and stdout are the task's outputs and log.
    @Test(.enabled(if: Executable.find("protoc") != nil, "needs protoc (apt-get install protobuf-compiler)"))
    func theResultEntryIsAnActionResultNamingTheOutputsAndTheLog() async throws {
        let project = try machine("protoc", kernels: 1)
        try await project.build(remoteCache: .init(url: server.url))
        let cache = try BuildCache(directory: project.cache, access: .readOnly)
        defer { cache.close() }
        let record = try #require(try cache.latestRecord(kind: "synthetic-compile", label: SyntheticProject.release(0)))
        let module = try #require(record.output("module"))
        let log = try #require(record.log)
        let entry = server.root + "/ac/" + record.key.hex

        let proto = try scratch.write("reapi/remote_execution.proto", """
        syntax = "proto3";
        package build.bazel.remote.execution.v2;
        message Digest { string hash = 1; int64 size_bytes = 2; }
        message OutputFile { string path = 1; Digest digest = 2; reserved 3; bool is_executable = 4; bytes contents = 5; }
        message ExecutedActionMetadata { string worker = 1; }
        message ActionResult {
          reserved 1;
          repeated OutputFile output_files = 2;
          int32 exit_code = 4;
          bytes stdout_raw = 5;
          Digest stdout_digest = 6;
          bytes stderr_raw = 7;
          Digest stderr_digest = 8;
          ExecutedActionMetadata execution_metadata = 9;
        }

        """)
        let decoded = try Executable.run("/bin/sh", ["-c", "protoc -I \(scratch.file("reapi")) --decode=build.bazel.remote.execution.v2.ActionResult \(proto) < \(entry)"])
        #expect(decoded.status == 0, "\(decoded.stderr)")
        let logSize = try #require(cache.objects.size(of: log))
        #expect(decoded.stdout == """
        output_files {
          path: "module"
          digest {
            hash: "\(module.digest.hex)"
            size_bytes: \(module.size)
          }
        }
        stdout_digest {
          hash: "\(log.hex)"
          size_bytes: \(logSize)
        }
        execution_metadata {
          worker: "farm \(FarmVersion.current)"
        }

        """)
        // And farm's reader reads it back as it was written.
        let result = try #require(try ActionResult(decoding: try Data(contentsOf: URL(fileURLWithPath: entry))).result())
        #expect(result == RemoteResult(outputs: ["module": .init(digest: module.digest, size: module.size)], log: .init(digest: log, size: logSize)))
    }
}

/// Which of the product's kinds go to a remote cache: those slow to make and the same on every
/// machine; downloads and directory sources are not shared.
@Test func theProductSharesBundlesToolchainsCompilesTypesAndProfiles() throws {
    let scratch = try Scratch()
    let manifest = try ProfilePlanTests().project(scratch, profiles: true)
    let graph = try Session(manifestPath: manifest, cacheDirectory: scratch.file("cache"), rules: FarmRules()).plan([])
    var shared: [String: Bool] = [:]
    for node in graph.nodes where !(node.action is UnbuildableAction) { shared[node.kind] = node.action.sharedRemotely }
    #expect(shared == ["fetch": false, "source": false, "bundle": true, "toolchain": true, "compile": true, "types": true, "profile": true])
}

/// True the first time only.
private final class Stopped: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func first() -> Bool {
        lock.withLock {
            defer { done = true }
            return !done
        }
    }
}

@Suite("ActionResult encoding")
struct ActionResultTests {
    /// Hand-made bytes, since malformed input is what they are for.
    @Test(arguments: [
        ([0x12, 0x05, 0x0A], "runs past the end"),                      // output_files longer than the message
        ([0x20], "runs past the end"),                                  // exit_code without its varint
        ([0x12, 0x02, 0x0A, 0x00], "has no digest"),                    // an output file without a digest
        ([0x32, 0x04, 0x0A, 0x02, 0x61, 0x62], "is not a lowercase sha256"), // stdout_digest with hash "ab"
        ([0x0F], "wire type 7"),
    ] as [([UInt8], String)])
    func malformedEntriesAreRefusedWithTheReason(_ bytes: [UInt8], _ reason: String) {
        let error = #expect(throws: (any Error).self) { try ActionResult(decoding: Data(bytes)).result() }
        #expect(error.map { "\($0)" }?.contains(reason) == true, "\(String(describing: error))")
    }

    @Test func aFailedRunIsNoResultAndUnknownFieldsAreSkipped() throws {
        let digest = RemoteResult.Object(digest: SHA256.hash("x"), size: 1)
        var failed = ActionResult(outputFiles: [.init(path: "module", digest: digest)], exitCode: -2, stdoutDigest: nil, worker: nil)
        #expect(try ActionResult(decoding: failed.encoded).exitCode == -2)
        #expect(try ActionResult(decoding: failed.encoded).result() == nil)
        failed.exitCode = 0
        // Field 15 (a fixed64) and field 3 (a message) farm does not know, before the known ones.
        let unknown = Data([0x79, 1, 2, 3, 4, 5, 6, 7, 8, 0x1A, 0x01, 0x00]) + failed.encoded
        #expect(try ActionResult(decoding: unknown) == failed)
    }
}
