import FarmEngine
import FarmKit
import Foundation

/// `farm-bench capture [--manifest manifest.yml] [--cache DIR] [--release R] [--memory 256] [--runs 3]
/// [--compress auto|on|off] [--shaped RATE]`: the same lab VM captured by `farm capture` and by
/// Margarita Shotgun 0.4.1 (the peer, installed by scripts/install-margaritashotgun), both reading
/// the same farm-published repository over HTTP with signature checking on, one after the other
/// in each run (the order alternates). Each run also measures the channel's own limit: the lab's
/// LiME streamed through a bare `ssh -L` forward into a plain socket reader (Python, to nothing).
///
/// `--shaped 20mbit` runs it all in a private network namespace (`unshare -n`) whose loopback,
/// where QEMU's user-net forward and every reader live, is limited by `tc` (tbf); farm runs
/// with `--compress on` there unless `--compress` says otherwise, and the channel is not measured.
///
/// The kernel's LiME is built, signed and published into a scratch project with its own keys;
/// `farm lab up` boots the kernel; Margarita Shotgun logs in with an RSA key (the only kind it
/// loads) that the benchmark adds to the lab, and finds farm's repository key in the keyring of
/// a scratch HOME. Each capture is timed from start to exit, and both images are checked as LiME
/// files covering the lab's RAM before their sizes count.
func captureBenchmark(_ arguments: [String]) async throws {
    var manifestPath = "manifest.yml"
    var release: String?
    var memory = 256
    var runs = 3
    var cacheOption: String?
    var compress: String?
    var shaped: String?
    var insideShaped = false
    var rest = arguments[...]
    while let argument = rest.popFirst() {
        switch argument {
        case "--manifest": manifestPath = rest.popFirst() ?? manifestPath
        case "--release": release = rest.popFirst()
        case "--memory": memory = rest.popFirst().flatMap(Int.init) ?? memory
        case "--runs": runs = max(1, rest.popFirst().flatMap(Int.init) ?? runs)
        case "--cache": cacheOption = rest.popFirst()
        case "--compress": compress = rest.popFirst()
        case "--shaped": shaped = rest.popFirst()
        case "--inside-shaped": insideShaped = true
        default:
            FileHandle.standardError.write(Data(("usage: farm-bench capture [--manifest PATH] [--cache DIR] [--release R] [--memory MiB] [--runs N]"
                                                 + " [--compress auto|on|off] [--shaped RATE]\n").utf8))
            exit(2)
        }
    }
    if let shaped, !insideShaped {
        try runShaped(rate: shaped, arguments: arguments)
        return
    }
    let compression = compress ?? (shaped == nil ? "auto" : "on")
    let farm = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("farm").path
    let peers = ProcessInfo.processInfo.environment["FARM_PEERS"] ?? "/opt/farm-peers"
    let peer = peers + "/margaritashotgun/bin/margaritashotgun"
    guard access(peer, X_OK) == 0 else {
        print("Margarita Shotgun is not installed at \(peer); run scripts/install-margaritashotgun")
        exit(1)
    }
    let session = try Session(manifestPath: manifestPath, cacheDirectory: cacheOption, rules: FarmRules())
    let cache = URL(fileURLWithPath: session.cacheDirectory).standardizedFileURL.path
    let bookworm = session.manifest.kernels.filter {
        $0.distribution == "debian-12" && $0.release.hasSuffix("-amd64") && !$0.release.hasSuffix("-cloud-amd64") && !$0.release.hasSuffix("-rt-amd64")
    }
    let chosen = release.map { wanted in session.manifest.kernels.first { $0.release == wanted } }
        ?? bookworm.max { DebianVersion.less($0.version ?? "", $1.version ?? "") }
    guard let kernel = chosen else { print("no such kernel in \(manifestPath): \(release ?? "newest bookworm amd64")"); exit(1) }

    // A scratch project: this one kernel, the manifest's recipes, its own keys and repository.
    let work = NSTemporaryDirectory() + "farm-bench-capture-\(getpid())"
    try AtomicFile.makeDirectory(work + "/project")
    defer { try? FileManager.default.removeItem(atPath: work) }
    let manifest = work + "/project/manifest.yml"
    let original = try String(contentsOfFile: manifestPath, encoding: .utf8)
    try Data(ManifestWriter.replacing(section: "kernels", with: ManifestWriter.render(kernels: [kernel]), in: original).utf8)
        .write(to: URL(fileURLWithPath: manifest))
    try FileManager.default.copyItem(atPath: session.manifest.directory + "/recipes", toPath: work + "/project/recipes")
    func farmRun(_ arguments: [String], passing command: [String] = [], input: String? = nil) throws -> Executable.Result {
        try Executable.run(farm, arguments + ["--manifest", manifest, "--cache", cache] + command, input: input)
    }
    // Failures throw, so the lab, the server and the scratch directory are still cleaned up.
    func require(_ result: Executable.Result, _ what: String) throws {
        guard result.status != 0 else { return }
        throw BenchFailure("\(what) failed (exit \(result.status)):\n\(result.stdout)\(result.stderr)")
    }
    try require(try Executable.run(farm, ["keys", "init", "--manifest", manifest]), "farm keys init")
    try require(try farmRun(["build"]), "farm build")
    let repository = work + "/project/repo"

    let lab = "bench-capture-\(getpid())"
    try require(try farmRun(["lab", "up", kernel.release, "--name", lab, "--memory", String(memory)]), "farm lab up")
    defer { _ = try? farmRun(["lab", "down", lab]) }
    let booted = try Labs(cacheDirectory: cache).load(try LabName(lab)).unwrap("farm lab up left no lab '\(lab)'")

    // The repository over HTTP, as Margarita Shotgun needs it (farm reads the same URL).
    let port = try Labs.freePort()
    let server = Process()
    server.executableURL = URL(fileURLWithPath: try Executable.find("python3").unwrap("python3 is not installed"))
    server.arguments = ["-m", "http.server", "--bind", "127.0.0.1", String(port), "--directory", repository]
    server.standardOutput = FileHandle.nullDevice
    server.standardError = FileHandle.nullDevice
    try server.run()
    defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
    let url = "http://127.0.0.1:\(port)"
    for _ in 0..<100 where (try? Executable.run("/usr/bin/curl", ["-sf", "-o", "/dev/null", url + "/repodata/repomd.xml"]))?.status != 0 {
        usleep(100_000)
    }

    // Margarita Shotgun's way in: an RSA key in the lab, farm's repository key in its keyring.
    let peerHome = work + "/peer-home"
    try AtomicFile.makeDirectory(peerHome + "/.gnupg")
    chmod(peerHome + "/.gnupg", 0o700)
    defer { _ = try? Executable.run("/usr/bin/gpgconf", ["--homedir", peerHome + "/.gnupg", "--kill", "all"]) }
    try require(try Executable.run("/usr/bin/gpg", ["--homedir", peerHome + "/.gnupg", "--batch", "--quiet", "--import",
                                                work + "/project/keys/repo.asc"]), "gpg --import")
    let rsa = work + "/id_rsa"
    try require(try Executable.run(try Executable.find("ssh-keygen").unwrap("ssh-keygen is not installed"),
                               ["-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", "farm-bench", "-f", rsa]), "ssh-keygen")
    try require(try farmRun(["lab", "ssh", "--name", lab], passing: ["--", "cat >> /root/.ssh/authorized_keys"], input: rsa + ".pub"), "authorizing the RSA key")

    /// Bytes of a captured image, after checking it is LiME covering the lab's RAM.
    func checkedSize(of image: String, by who: String) throws -> Int {
        let covered = try LimeImage.ranges(of: image).reduce(UInt64(0)) { $0 + $1.size }
        guard covered > UInt64(memory - 16) << 20, covered <= UInt64(memory) << 20 else {
            throw BenchFailure("\(who)'s image covers \(covered) bytes of a \(memory) MiB lab")
        }
        return (try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int) ?? 0
    }
    /// farm's sidecars: the stream's own rate, the cipher and the compression of each run.
    var sidecars: [CaptureReport] = []
    func captureWithFarm(_ index: Int) throws -> (seconds: Double, bytes: Int) {
        let output = work + "/farm-\(index)"
        let start = ContinuousClock.now
        let result = try farmRun(["capture", "--lab", lab, "--repo", url, "--output", output, "--compress", compression])
        let elapsed = seconds(ContinuousClock.now - start)
        try require(result, "farm capture")
        let image = try FileManager.default.contentsOfDirectory(atPath: output).first { $0.hasSuffix(".lime") }.unwrap("farm wrote no image")
        defer { try? FileManager.default.removeItem(atPath: output) }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        sidecars.append(try decoder.decode(CaptureReport.self, from: Data(contentsOf: URL(fileURLWithPath: output + "/" + image + ".json"))))
        return (elapsed, try checkedSize(of: output + "/" + image, by: "farm"))
    }

    /// The channel's own limit: the published LiME loaded by hand, its port forwarded by a bare
    /// `ssh -L`, read by a Python socket loop into nothing; timed like farm's stream (from the
    /// forward's start to the last byte). Bytes per second.
    let module = repository + "/modules/lime-\(kernel.release).ko"
    func channelLimit() throws -> Double {
        try require(try farmRun(["lab", "ssh", "--name", lab], passing: ["--", "cat > /tmp/bench-lime.ko"], input: module), "uploading LiME")
        let port = Int.random(in: 20_000...60_000)
        try require(try farmRun(["lab", "ssh", "--name", lab], passing: [
            "--", "(insmod /tmp/bench-lime.ko 'path=tcp:\(port) format=lime localhostonly=1'; echo $? > /tmp/bench-lime.rc) </dev/null >/dev/null 2>&1 &"]),
                    "loading LiME")
        defer { _ = try? farmRun(["lab", "ssh", "--name", lab], passing: ["--", "sleep 1; rmmod lime; rm -f /tmp/bench-lime.ko /tmp/bench-lime.rc"]) }
        let listening = String(format: "0100007F:%04X", port)
        try require(try farmRun(["lab", "ssh", "--name", lab], passing: [
            "--", "i=0; while [ $i -lt 150 ]; do grep -q \(listening) /proc/net/tcp && exit 0; sleep 0.2; i=$((i+1)); done; exit 1"]), "LiME listening")
        let local = try Labs.freePort()
        let start = ContinuousClock.now
        let forward = try Executable.background(try Executable.find("ssh").unwrap("ssh is not installed"),
                                                booted.sshOptions + ["-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:\(local):127.0.0.1:\(port)", booted.destination])
        defer { forward.stop() }
        let reader = """
        import socket, sys, time
        deadline = time.time() + 30
        while True:
            try: c = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); break
            except OSError:
                if time.time() > deadline: raise
                time.sleep(0.1)
        total = 0
        buffer = bytearray(1 << 20)
        while True:
            n = c.recv_into(buffer)
            if n == 0: break
            total += n
        print(total)
        """
        let read = try Executable.run(try Executable.find("python3").unwrap("python3 is not installed"), ["-c", reader, String(local)])
        let elapsed = seconds(ContinuousClock.now - start)
        try require(read, "the socket reader")
        let bytes = Double(read.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        guard bytes > Double(memory - 16) * 1_048_576 else { throw BenchFailure("the channel carried \(bytes) bytes of a \(memory) MiB lab") }
        return bytes / elapsed
    }
    /// Margarita Shotgun's attempts that failed, and why (its capture is retried, up to 3 times).
    var peerFailures: [String] = []
    func captureWithPeer(_ index: Int) throws -> (seconds: Double, bytes: Int) {
        let output = work + "/peer-\(index)"
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = peerHome
        environment["PYTHONWARNINGS"] = "ignore"
        for _ in 0..<3 {
            try AtomicFile.makeDirectory(output)
            defer { try? FileManager.default.removeItem(atPath: output) }
            let console = (try? FileManager.default.attributesOfItem(atPath: booted.console)[.size] as? Int) ?? 0
            let start = ContinuousClock.now
            // It can hang after a failure: `timeout` ends its whole process group (its workers too).
            let result = try Executable.run("/usr/bin/timeout", ["--signal=KILL", shaped == nil ? "180" : "1200", peer, "--server", "127.0.0.1", "--port", String(booted.port),
                                                                 "--username", "root", "--key", rsa, "--repository", "--repository-url", url,
                                                                 "--filename", output + "/memory.lime"],
                                            environment: environment, directory: output)
            let elapsed = seconds(ContinuousClock.now - start)
            // It exits 0 whatever happened; its log says which hosts completed.
            if result.status == 0, (result.stdout + result.stderr).contains("completed: 1"), FileManager.default.fileExists(atPath: output + "/memory.lime") {
                return (elapsed, try checkedSize(of: output + "/memory.lime", by: "Margarita Shotgun"))
            }
            // Why, in the lab's words (dropbear logs to the console), else in its own.
            let added = (try? Data(contentsOf: URL(fileURLWithPath: booted.console)).dropFirst(console)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let reason = added.split(separator: "\n").last { $0.contains("Exit (root)") && !$0.contains("Disconnect received") && !$0.contains("Exited normally") }
                ?? (result.stdout + result.stderr).split(separator: "\n").last { $0.contains("CRITICAL") || $0.contains("ERROR") }
                ?? "exit \(result.status)"
            peerFailures.append(String(reason).trimmingCharacters(in: .whitespaces))
            // Undo what it left: its own cleanup runs `pkill`, which the lab's busybox lacks.
            _ = try farmRun(["lab", "ssh", "--name", lab], passing: ["--", "killall insmod; sleep 1; rmmod lime; rm -f /tmp/lime.ko; true"])
        }
        throw BenchFailure("Margarita Shotgun failed 3 times in a row:\n" + peerFailures.suffix(3).joined(separator: "\n"))
    }

    print("farm-bench capture: \(kernel.release) lab (\(booted.accelerator), \(memory) MiB), repository over HTTP with signatures checked, \(runs) run(s) each,"
          + " farm --compress \(compression)" + (shaped.map { ", loopback shaped to \($0) (tc tbf in a private network namespace)" } ?? ""))
    print("load before: " + ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines))
    func mib(_ bytes: Int) -> Double { Double(bytes) / 1_048_576 }
    var farmRuns: [(seconds: Double, bytes: Int)] = []
    var peerRuns: [(seconds: Double, bytes: Int)] = []
    var channelRuns: [Double] = []
    for index in 0..<runs {
        if shaped == nil {
            channelRuns.append(try channelLimit())
            print(String(format: "run %d  channel (LiME, bare ssh -L, socket reader) %5.2f MiB/s", index + 1, channelRuns[index] / 1_048_576))
        }
        if index % 2 == 0 {
            farmRuns.append(try captureWithFarm(index))
            peerRuns.append(try captureWithPeer(index))
        } else {
            peerRuns.append(try captureWithPeer(index))
            farmRuns.append(try captureWithFarm(index))
        }
        let (f, p) = (farmRuns[index], peerRuns[index])
        let sidecar = sidecars[index]
        print(String(format: "run %d  farm capture %6.2f s (%.1f MiB, %5.2f MiB/s; stream %5.2f MiB/s, %@, %.1f MiB streamed, cipher %@)   margaritashotgun %6.2f s (%.1f MiB, %5.2f MiB/s)",
                     index + 1, f.seconds, mib(f.bytes), mib(f.bytes) / f.seconds, sidecar.bytesPerSecond / 1_048_576, sidecar.compression,
                     mib(Int(sidecar.streamed)), sidecar.cipher ?? "?", p.seconds, mib(p.bytes), mib(p.bytes) / p.seconds))
    }
    print("farm's compression choice: " + Set(sidecars.map(\.compressionReason)).sorted().joined(separator: "; "))
    let farmSeconds = median(farmRuns.map(\.seconds)), peerSeconds = median(peerRuns.map(\.seconds))
    let farmRate = mib(farmRuns[0].bytes) / farmSeconds, peerRate = mib(peerRuns[0].bytes) / peerSeconds
    if !peerFailures.isEmpty {
        print("Margarita Shotgun failed \(peerFailures.count) attempt(s), retried; the lab's dropbear said:")
        for failure in peerFailures { print("  " + failure) }
    }
    print(String(format: "median  farm capture %.2f s, %.2f MiB/s   Margarita Shotgun 0.4.1 %.2f s, %.2f MiB/s   throughput ratio farm/peer %.2fx",
                 farmSeconds, farmRate, peerSeconds, peerRate, farmRate / peerRate))
    if !channelRuns.isEmpty {
        let channel = median(channelRuns), stream = median(sidecars.map(\.bytesPerSecond))
        print(String(format: "median  channel %.2f MiB/s   farm's stream %.2f MiB/s = %.0f%% of the channel   farm's whole capture = %.0f%% of the channel",
                     channel / 1_048_576, stream / 1_048_576, 100 * stream / channel, 100 * farmRate * 1_048_576 / channel))
    }
    print("load after: " + ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines))
}

/// Runs this benchmark again inside `unshare -n`, its loopback (where QEMU's user-net forward,
/// farm, Margarita Shotgun and the repository server all meet) limited to `rate` by `tc`'s tbf.
/// Skips, saying why, where that cannot be done.
func runShaped(rate: String, arguments: [String]) throws {
    guard let unshare = Executable.find("unshare"), let tc = Executable.find("tc"), let ip = Executable.find("ip") else {
        print("farm-bench capture --shaped: skipped: needs unshare (util-linux), tc and ip (iproute2)")
        return
    }
    // tbf, not netem (a kernel may lack sch_netem); with loopback's MTU at Ethernet's, so a
    // 32 KiB bucket holds whole packets.
    let shape = "\(ip) link set lo mtu 1500 up && \(tc) qdisc add dev lo root tbf rate \(rate) burst 32kb latency 400ms"
    let probe = try Executable.run(unshare, ["-n", "--", "/bin/sh", "-c", shape])
    guard probe.status == 0 else {
        print("farm-bench capture --shaped: skipped: cannot shape a private network namespace's loopback (needs root or user namespaces,"
              + " and sch_tbf): \(probe.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        return
    }
    let script = shape + " && exec \"$0\" \"$@\""
    let termination = try Executable.run(unshare, ["-n", "--", "/bin/sh", "-c", script, CommandLine.arguments[0], "capture"] + arguments + ["--inside-shaped"],
                                         environment: nil) { FileHandle.standardOutput.write($0) }
    if termination.status != 0 { throw BenchFailure("the shaped run failed (exit \(termination.status))") }
}

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
