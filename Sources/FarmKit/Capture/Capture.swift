import FarmEngine
import Foundation

/// Set by SIGINT/SIGTERM: a capture stops streaming and cleans up.
nonisolated(unsafe) private var interrupted: sig_atomic_t = 0

/// One host to capture, reached with the OpenSSH client (so the user's ssh config, agent and
/// known_hosts apply; host keys are checked, never accepted blindly).
public struct CaptureTarget: Sendable, CustomStringConvertible {
    public var user: String?
    public var host: String
    public var port: Int?
    public var identity: String?
    public var sshOptions: [String]

    /// `[user@]host[:port]`.
    public init(parsing text: String, identity: String? = nil, sshOptions: [String] = []) throws {
        var rest = Substring(text)
        if let at = rest.lastIndex(of: "@") {
            user = String(rest[..<at])
            rest = rest[rest.index(after: at)...]
            // ssh would read it as an option (-oProxyCommand=...), whatever separates it.
            guard let user, !user.isEmpty, !user.hasPrefix("-") else {
                throw FarmError("'\(text)': the user before '@' must be a name, not empty or starting with '-'")
            }
        }
        if let colon = rest.lastIndex(of: ":"), !rest.hasPrefix("[") {
            guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
                throw FarmError("'\(text)': the port after ':' is not a number from 1 to 65535")
            }
            self.port = port
            rest = rest[..<colon]
        }
        guard !rest.isEmpty, !rest.hasPrefix("-") else { throw FarmError("'\(text)' names no host ([user@]host[:port])") }
        host = String(rest)
        self.identity = identity
        self.sshOptions = sshOptions
    }

    /// A lab of farm's own (`farm capture --lab`): its port, key and known_hosts.
    public init(lab: Lab, sshOptions: [String] = []) throws {
        try self.init(parsing: "\(lab.destination):\(lab.port)", identity: lab.identity, sshOptions: sshOptions + lab.hostKeyOptions)
    }

    public var description: String { (user.map { $0 + "@" } ?? "") + host + (port.map { ":\($0)" } ?? "") }

    var arguments: [String] {
        // ssh keeps the first value it is given for an option: the user's come first.
        var arguments = sshOptions.flatMap { ["-o", $0] }
        if let port { arguments += ["-p", "\(port)"] }
        if let identity { arguments += ["-i", identity, "-o", "IdentitiesOnly=yes"] }
        arguments += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=10"]
        return arguments
    }

    var destination: String { (user.map { $0 + "@" } ?? "") + host }
}

/// Whether LiME deflates its stream (`compress=1`, which farm inflates while receiving): it
/// trades the host's CPU for the link, so it pays only on a link slower than the host deflates.
public enum CaptureCompression: String, Sendable, CaseIterable {
    /// Compress when a probe of the SSH channel is slower than `Capture.compressBelow`.
    case auto
    case on
    case off
}

/// What one capture produced.
public struct CaptureReport: Sendable, Codable {
    public var host: String
    public var release: String
    public var machine: String
    public var image: String
    public var size: UInt64
    public var sha256: String
    public var module: String
    public var moduleSHA256: String
    public var repository: String
    public var ranges: [LimeImage.Range]
    public var started: Date
    public var seconds: Double
    public var bytesPerSecond: Double
    /// The SSH cipher and MAC the client and the host agreed on (`ssh -v`), e.g.
    /// `chacha20-poly1305@openssh.com <implicit>`; nil when ssh did not say.
    public var cipher: String?
    /// `zlib` (LiME's `compress=1`, inflated here) or `none`.
    public var compression: String
    /// Why: the `--compress` choice, and for `auto` the probe's rate against the threshold.
    public var compressionReason: String
    /// Bytes that crossed the link (fewer than `size` when compressed).
    public var streamed: UInt64
    /// Who captured (`--operator`, else the local user) and for which case (`--case`).
    public var `operator`: String
    public var `case`: String?
    public var farmVersion: String
    /// The host's `uname -n` and `/proc/version`.
    public var hostname: String
    public var procVersion: String
    /// The host key the first connection checked against known_hosts, from `ssh -v`
    /// (`ssh-ed25519 SHA256:...`); nil when ssh did not say.
    public var hostKey: String?
    /// When farm's first SSH connection to the host began; `started` is when memory began to
    /// stream and `ended` when its last byte arrived (UTC, ISO 8601 in the sidecar).
    public var contacted: Date
    public var ended: Date
    /// The host's lockdown mode and `sig_enforce`, read before the module was uploaded.
    public var moduleLoading: ModuleLoadPolicy
    /// The Volatility 3 symbol table written beside the image, or null.
    public var symbols: SymbolTableResult
    /// Why `symbols` is null.
    public var symbolsMissing: String?
    /// true when the repository's symbols did not check out (the image is still good).
    public var symbolsRefused: Bool?

    /// The sidecar's bytes: sorted keys, times in UTC as ISO 8601.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}

/// `farm capture`: per host, the module for its kernel from a verified repository, LiME loaded
/// over SSH, memory streamed home through an SSH forward, the image checked; and the host left
/// as it was, also on failure or Ctrl-C.
public struct Capture: Sendable {
    public let repository: RepositorySource
    /// The repository key the user trusts; nil with `--gpg-no-verify` (checksums are still checked).
    public let fingerprint: String?
    public let output: String
    /// How long LiME may send nothing, before its first byte or after any other, before the capture fails.
    public var stall: Double = 60
    public var compression: CaptureCompression = .auto
    /// `auto` compresses when the probe finds the channel slower than this (1.25 MiB/s, ~10
    /// Mbit/s): half the slowest deflate measured, a 256 MiB lab under QEMU's TCG on a loaded
    /// 2-core machine (2.4 MiB/s of memory; 9.7 quiet), because in that lab the probe (a session
    /// channel) read as little as half the rate of LiME's forwarded stream (1.7 against 5.6 MiB/s).
    /// Below it compressing cannot lose; above it a real CPU (tens of MiB/s) may still win, which
    /// `--compress on` takes.
    public static let compressBelow: Double = 1.25 * 1_048_576
    /// Bytes the `auto` probe sends through the channel.
    static let probeBytes = 4 << 20
    public let progress: @Sendable (String) -> Void
    /// Recorded in the sidecar; `CaptureLabel.validated` by the command.
    public var operatorName: String = CaptureLabel.localOperator()
    public var caseID: String?

    public init(repository: RepositorySource, fingerprint: String?, output: String, progress: @escaping @Sendable (String) -> Void) {
        self.repository = repository
        self.fingerprint = fingerprint
        self.output = output
        self.progress = progress
    }

    /// Makes SIGINT and SIGTERM stop a capture (which then cleans up) instead of killing farm.
    public static func catchInterrupts() {
        signal(SIGINT) { _ in interrupted = 1 }
        signal(SIGTERM) { _ in interrupted = 1 }
    }

    public static var wasInterrupted: Bool { interrupted != 0 }


    func sshPath() throws -> String {
        guard let ssh = Executable.find("ssh") else { throw FarmError.toolMissing(tool: "ssh", package: "openssh-client", purpose: "farm capture") }
        return ssh
    }

    /// `verbose`: `ssh -v`, whose debug lines name the negotiated cipher and the host key; on a
    /// connection of its own (`ControlPath=none`: after the user's options, which ssh keeps
    /// first), since a shared master connection makes no key exchange and names neither.
    func ssh(_ target: CaptureTarget, _ command: String, input: String? = nil, timeout: Int = 60, verbose: Bool = false) throws -> Executable.Result {
        try Executable.run(try sshPath(), (verbose ? ["-v"] : []) + target.arguments + (verbose ? ["-o", "ControlPath=none"] : [])
                           + ["--", target.destination, command],
                           input: input, timeout: Double(timeout))
    }

    func checked(_ target: CaptureTarget, _ what: String, _ command: String, input: String? = nil, timeout: Int = 60) throws -> String {
        try checkedResult(target, what, command, input: input, timeout: timeout).stdout
    }

    func checkedResult(_ target: CaptureTarget, _ what: String, _ command: String, input: String? = nil, timeout: Int = 60,
                       verbose: Bool = false) throws -> Executable.Result {
        let result = try ssh(target, command, input: input, timeout: timeout, verbose: verbose)
        guard result.status == 0 else {
            let detail = result.stderr.split(separator: "\n").filter { !$0.hasPrefix("debug") }.joined(separator: "\n")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            throw FarmError("\(target): \(what) failed (ssh exit \(result.status))\(detail.isEmpty ? "" : ": " + detail)")
        }
        return result
    }

    /// The cipher and MAC from `ssh -v`'s `kex: server->client cipher: C MAC: M compression: none`.
    static func cipher(sshDebug: String) -> String? {
        guard let line = sshDebug.split(whereSeparator: \.isNewline).first(where: { $0.contains("kex: server->client cipher: ") }) else { return nil }
        let words = line.split(separator: " ")
        guard let c = words.firstIndex(of: "cipher:"), c + 1 < words.count else { return nil }
        let mac = words.firstIndex(of: "MAC:").flatMap { $0 + 1 < words.count ? words[$0 + 1] : nil }
        return String(words[c + 1]) + (mac.map { " " + $0 } ?? "")
    }

    /// Plain bytes per second the SSH channel carries from the host to here: zeros from `head`,
    /// timed here from the first chunk to the last, so the session's start does not count.
    func probeChannel(_ target: CaptureTarget) throws -> Double {
        var first: ContinuousClock.Instant?
        var last = ContinuousClock.now
        var bytes = 0, firstBytes = 0
        let termination = try Executable.run(try sshPath(), target.arguments + ["--", target.destination, "head -c \(Capture.probeBytes) /dev/zero"],
                                             environment: nil) { chunk in
            if first == nil { first = .now; firstBytes = chunk.count }
            last = .now
            bytes += chunk.count
        }
        guard termination.status == 0, bytes >= Capture.probeBytes, let first else {
            throw FarmError("\(target): probing the SSH channel's rate failed (ssh exit \(termination.status), \(bytes) bytes);"
                               + " pass --compress on or off to skip the probe")
        }
        let elapsed = last - first
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Double(bytes - firstBytes) / max(seconds, 0.001)
    }

    /// Whether to pass `compress=1`, and why.
    func decideCompression(_ target: CaptureTarget, module: RepositoryModule, moduleBytes: Data) throws -> (Bool, String) {
        let info = try? ModuleInfo.parse(moduleBytes, file: repository.name(module.location))
        let supported = info?.fields.contains { $0.key == "parmtype" && $0.value.hasPrefix("compress:") } ?? false
        let missing = "\(repository.name(module.location)) has no 'compress' parameter (LiME has one only when the kernel has CONFIG_ZLIB_DEFLATE=y)"
        switch compression {
        case .off:
            return (false, "--compress off")
        case .on:
            guard supported else { throw FarmError("\(target): --compress on, but \(missing); capture with --compress off") }
            return (true, "--compress on")
        case .auto:
            guard supported else { return (false, "auto: " + missing) }
            let rate = try probeChannel(target)
            let verdict = rate < Capture.compressBelow ? "below" : "at or above"
            return (rate < Capture.compressBelow,
                    String(format: "auto: the SSH channel carried %.1f MiB/s in a %d MiB probe, %@ %.1f MiB/s (the slowest host's deflate rate)",
                           rate / 1_048_576, Capture.probeBytes >> 20, verdict, Capture.compressBelow / 1_048_576))
        }
    }

    /// Captures every target, `parallel` at a time; results in the targets' order.
    public func run(_ targets: [CaptureTarget], parallel: Int) -> [Result<CaptureReport, any Error>] {
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var rows: [Int: Result<CaptureReport, any Error>] = [:]
        }
        let results = Results()
        // Each capture blocks its own thread from start to cleanup: the ssh children it starts
        // die with that thread (their parent-death signal), never before the capture is done.
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = max(1, parallel)
        for (index, target) in targets.enumerated() {
            queue.addOperation {
                let result = Result { try self.run(target) }
                results.lock.withLock { results.rows[index] = result }
            }
        }
        queue.waitUntilAllOperationsAreFinished()
        return targets.indices.map { results.rows[$0] ?? .failure(FarmError("\(targets[$0]): not captured")) }
    }

    /// One host: its memory, then the symbol table for its kernel, then the sidecar.
    public func run(_ target: CaptureTarget) throws -> CaptureReport {
        var report = try acquire(target)
        var outcome = fetchSymbols(procVersion: report.procVersion, machine: report.machine, image: report.image)
        if case let .missing(reason) = outcome {
            // No published table: one from the running kernel's own BTF, when it exposes it.
            let banner = report.procVersion.trimmingCharacters(in: CharacterSet(charactersIn: "\n\0"))
            do {
                if let table = try hostTable(target, banner: banner, release: report.release) {
                    outcome = .written(CaptureSymbols(source: "host", location: "host", file: table.path, sha256: table.sha256,
                                                      command: volCommand(image: report.image)))
                } else {
                    outcome = .missing(reason + "; the host has no /sys/kernel/btf/vmlinux to make one from")
                }
            } catch {
                outcome = .missing(reason + "; making one from the host's BTF failed: \(error)")
            }
        }
        switch outcome {
        case let .written(symbols):
            report.symbols = .written(symbols)
        case let .missing(reason):
            report.symbolsMissing = reason
        case let .refused(reason):
            report.symbolsMissing = reason
            report.symbolsRefused = true
        }
        try AtomicFile.write(try report.encoded(), to: report.image + ".json", mode: 0o600)
        return report
    }

    /// The image, checked, and the host left as it was.
    func acquire(_ target: CaptureTarget) throws -> CaptureReport {
        // 1. What the host runs, in one round trip. `ssh -v` names the cipher and the host key;
        // no shared master connection, so this one's key exchange (and its key) is seen.
        let contacted = Date()
        let first = try checkedResult(target, "reading the host's facts (uname, /proc/version, lockdown, /proc/iomem)", HostFacts.script,
                                      verbose: true)
        let cipher = Capture.cipher(sshDebug: first.stderr)
        let hostKey = HostFacts.hostKey(sshDebug: first.stderr)
        let facts = try HostFacts.parse(first.stdout, host: target.description)
        let (release, machine) = (facts.release, facts.machine)
        let sudo = facts.isRoot ? "" : "sudo -n "
        let ram = LimeImage.systemRAM(iomem: facts.iomem)
        guard !ram.isEmpty else { throw FarmError("\(target): /proc/iomem lists no System RAM (reading it needs root)") }
        progress("\(target): \(release) \(machine), \(ram.reduce(0) { $0 + $1.size } >> 20) MiB of System RAM")
        let loading = ModuleLoadPolicy(lockdown: facts.lockdown, sigEnforce: facts.sigEnforce)
        progress("\(target): \(loading.summary)")

        // 2. The module, checked before anything touches the host.
        let (module, moduleBytes) = try GnuPG.withScratch { scratch in try fetchModule(release: release, machine: machine, target: target, scratch: scratch) }
        let (compressed, compressionReason) = try decideCompression(target, module: module, moduleBytes: moduleBytes)
        progress("\(target): \(compressed ? "compressed (zlib)" : "not compressed") (\(compressionReason)); cipher \(cipher ?? "unknown")")
        let remote = "/tmp/farm-lime-\(UInt32.random(in: 0...UInt32.max)).ko"
        let port = Int.random(in: 20_000...60_000)
        var uploaded = false
        var forwarder: Executable.Background?
        defer {
            forwarder?.stop()
            if uploaded { cleanUp(target, remote: remote, port: port, sudo: sudo) }
        }

        // 3. Upload, checked on the host.
        try GnuPG.withScratch { scratch in
            let file = scratch + "/lime.ko"
            try moduleBytes.write(to: URL(fileURLWithPath: file))
            uploaded = true
            _ = try checked(target, "uploading the module", "umask 077; cat > \(remote.shellQuoted)", input: file)
        }
        let sum = try checked(target, "checking the upload", "sha256sum \(remote.shellQuoted)")
        guard sum.hasPrefix(module.checksum) else { throw FarmError("\(target): the uploaded module's sha256 is not the repository's") }

        // 4. insmod in the background (LiME's init only returns when the image is sent).
        let parameters = "path=tcp:\(port) format=lime localhostonly=1" + (compressed ? " compress=1" : "")
        let load = "(\(sudo)insmod \(remote.shellQuoted) \(parameters.shellQuoted); echo $? > \((remote + ".rc").shellQuoted)) "
            + "</dev/null >\((remote + ".log").shellQuoted) 2>&1 &"
        _ = try checked(target, "loading LiME", load)
        let listening = String(format: "0100007F:%04X 00000000:0000 0A", port)
        let wait = """
        i=0; while [ $i -lt 150 ]; do grep -q \(listening.shellQuoted) /proc/net/tcp && exit 0; \
        [ -e \((remote + ".rc").shellQuoted) ] && { cat \((remote + ".log").shellQuoted); exit 3; }; sleep 0.2; i=$((i+1)); done; exit 4
        """
        let waited = try ssh(target, wait, timeout: 60)
        guard waited.status == 0 else {
            let why = waited.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            throw FarmError("\(target): LiME did not start listening on port \(port)"
                               + (why.isEmpty ? "" : ": insmod said: \(why)") + (waited.status == 4 ? " (30 s)" : "")
                               + (loading.explainInsmod(why).map { "; " + $0 } ?? ""))
        }

        // 5. Forward the port to 127.0.0.1 here and stream.
        let localPort = try Labs.freePort()
        let process = try Executable.background(Executable.find("ssh")!, target.arguments + [
            "-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:\(localPort):127.0.0.1:\(port)", "--", target.destination])
        forwarder = process
        let started = Date()
        let stamp = ISO8601DateFormatter().string(from: started).replacingOccurrences(of: ":", with: "")
        try AtomicFile.makeDirectory(output)
        let image = output + "/\(target.host)-\(release)-\(stamp).lime"
        let expected = ram.reduce(UInt64(0)) { $0 + 32 + $1.size }
        let receiver = MemoryStream(port: localPort, target: target.description, stall: stall, progress: progress)
        let received = try receiver.receive(into: image + ".part", expected: expected, compressed: compressed) { process.isRunning }
        let ended = Date()
        let seconds = ended.timeIntervalSince(started)

        // 6. The image must be what the host's RAM says.
        let ranges = try LimeImage.ranges(of: image + ".part")
        guard ranges == ram else {
            throw FarmError("\(target): the image's ranges (\(ranges.count), \(received.bytes) bytes) are not the host's System RAM (\(ram.count) ranges);"
                               + " kept as \(image).part")
        }
        try AtomicFile.rename(image + ".part", to: image)
        let report = CaptureReport(host: target.description, release: release, machine: machine, image: image, size: received.bytes,
                                   sha256: received.sha256.hex, module: repository.name(module.location), moduleSHA256: module.checksum,
                                   repository: repository.location, ranges: ranges, started: started, seconds: seconds,
                                   bytesPerSecond: Double(received.bytes) / max(seconds, 0.001), cipher: cipher,
                                   compression: compressed ? "zlib" : "none", compressionReason: compressionReason, streamed: received.streamed,
                                   operator: operatorName, case: caseID, farmVersion: FarmVersion.current, hostname: facts.hostname,
                                   procVersion: facts.procVersion, hostKey: hostKey, contacted: contacted, ended: ended,
                                   moduleLoading: loading, symbols: .none)
        return report
    }

    /// The module for this release and machine, its checksum (always) and signature (unless
    /// `--gpg-no-verify`) checked.
    func fetchModule(release: String, machine: String, target: CaptureTarget, scratch: String) throws -> (RepositoryModule, Data) {
        try withRepository { checker, verifier in
            let (_, modules) = try checker.index(using: verifier, scratch: scratch)
            guard let module = modules.first(where: { $0.version == release && $0.arch == machine }) else {
                let versions = Set(modules.map(\.version)).sorted()
                throw FarmError("\(target): \(repository) has no module for \(release) (\(machine)); it has \(versions.count) kernel(s)"
                                   + (versions.isEmpty ? "" : ", e.g. \(versions.suffix(3).joined(separator: ", "))")
                                   + "; build one with 'farm build' and publish it")
            }
            return (module, try checker.check(module, using: verifier, scratch: scratch))
        }
    }

    /// `body` with the repository's checker and, unless `--gpg-no-verify`, a verifier of the
    /// pinned key, which the repository's `REPO_SIGNING_KEY.asc` must hold: how the module and the
    /// symbol table are both read.
    func withRepository<T>(_ body: (RepositoryVerifier, GnuPG.Verifier?) throws -> T) throws -> T {
        guard let fingerprint else {
            return try body(RepositoryVerifier(source: repository, fingerprint: String(repeating: "0", count: 40)), nil)
        }
        let checker = RepositoryVerifier(source: repository, fingerprint: fingerprint)
        let key = try repository.require(RepositoryFormat.keyPath, because: "the repository's public key")
        return try checker.withVerifier(key) { try body(checker, $0) }
    }

    /// Unloads LiME (once its insmod has returned) and removes what was uploaded.
    func cleanUp(_ target: CaptureTarget, remote: String, port: Int, sudo: String) {
        // An insmod still waiting for a reader is released by a connection that closes at once.
        let script = """
        if [ ! -e \((remote + ".rc").shellQuoted) ]; then \
        { bash -c 'exec 3<>/dev/tcp/127.0.0.1/\(port)' || nc 127.0.0.1 \(port) </dev/null; } >/dev/null 2>&1; fi; \
        i=0; while [ $i -lt 50 ] && [ ! -e \((remote + ".rc").shellQuoted) ]; do sleep 0.2; i=$((i+1)); done; \
        if grep -q '^lime ' /proc/modules; then \(sudo)rmmod lime; fi; \
        rm -f \(remote.shellQuoted) \((remote + ".rc").shellQuoted) \((remote + ".log").shellQuoted)
        """
        let result = try? ssh(target, script, timeout: 60)
        if result?.status != 0 {
            progress("\(target): cleaning up may be incomplete (\(result?.stderr.trimmingCharacters(in: .whitespacesAndNewlines) ?? "ssh failed")):"
                     + " check with 'lsmod' and remove \(remote)")
        }
    }
}

extension CaptureTarget {
    /// `--config hosts.yml`: `hosts:` lists `[user@]host[:port]` strings or mappings with
    /// `host`, and optionally `identity` and `ssh-options`.
    public static func load(config path: String, identity: String?, sshOptions: [String]) throws -> [CaptureTarget] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ManifestError("cannot read the host list", file: path) }
        guard let root = try YAMLValue.parse(text, file: path) else { throw ManifestError("the host list is empty; it needs 'hosts:'", file: path) }
        let top = try root.mapping("the host list", allowed: ["hosts"])
        return try top.required("hosts").list("'hosts'").map { entry in
            if let host = try? entry.string("a host") {
                do { return try CaptureTarget(parsing: host, identity: identity, sshOptions: sshOptions) } catch { throw entry.fail("\(error)") }
            }
            let map = try entry.mapping("a host", allowed: ["host", "identity", "ssh-options"])
            let hostValue = try map.required("host")
            do {
                return try CaptureTarget(parsing: try hostValue.string("[user@]host[:port]"),
                                         identity: try map["identity"]?.string("a key file") ?? identity,
                                         sshOptions: sshOptions + (try map["ssh-options"]?.stringList("ssh options") ?? []))
            } catch let error as FarmError {
                throw hostValue.fail(error.message)
            }
        }
    }
}
