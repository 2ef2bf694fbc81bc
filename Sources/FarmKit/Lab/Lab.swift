import FarmEngine
import Foundation

/// A lab VM: one distribution kernel booted under QEMU with farm's initramfs, reachable by SSH on
/// a port of 127.0.0.1 with per-lab keys. Its state lives in `<cache>/labs/<name>/`: `lab.json`,
/// `qemu.pid`, `console.log`, the client key `id_ed25519` (0600), `known_hosts` and the initrd.
public struct Lab: Sendable, Codable {
    public var name: String
    public var release: String
    public var port: Int
    public var memoryMiB: Int
    /// `kvm` or `tcg`: what the VM runs on after the KVM attempt.
    public var accelerator: String
    public var started: Date
    public var directory: String

    public var identity: String { directory + "/id_ed25519" }
    public var knownHosts: String { directory + "/known_hosts" }
    public var pidFile: String { directory + "/qemu.pid" }
    public var console: String { directory + "/console.log" }
    /// QEMU's QMP socket, when the lab directory's path fits in a socket address.
    var monitor: QemuMonitor? {
        let path = directory + "/qmp.sock"
        return path.utf8.count <= QemuMonitor.maximumPathLength && !path.contains(",") ? QemuMonitor(socketPath: path) : nil
    }
    /// QEMU's status when QMP says the CPU no longer runs (`internal-error`, `shutdown`, ...).
    var stoppedStatus: String? {
        guard let status = monitor?.status(), status != "running", status != "prelaunch" else { return nil }
        return status
    }

    /// OpenSSH options that reach the lab with strict host key checking against its own known_hosts.
    public var sshOptions: [String] {
        ["-p", "\(port)", "-i", identity, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"] + hostKeyOptions.flatMap { ["-o", $0] }
    }

    /// The `-o` settings that make ssh trust this lab's host key and no other.
    public var hostKeyOptions: [String] {
        ["UserKnownHostsFile=\(knownHosts)", "GlobalKnownHostsFile=/dev/null", "StrictHostKeyChecking=yes", "LogLevel=ERROR"]
    }

    public var destination: String { "root@127.0.0.1" }

    /// The QEMU process, when it is alive (not a zombie, and really this lab's QEMU).
    public var pid: Int32? {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        return Lab.alive(pid, mentioning: directory) ? pid : nil
    }

    /// Every live QEMU whose command line names this lab's directory: also one whose pid file a
    /// killed farm never got to read.
    var qemuProcesses: [Int32] {
        ProcessTable.processes(mentioning: directory + "/").filter { $0.program.hasSuffix("qemu-system-x86_64") }.map(\.pid)
    }

    static func alive(_ pid: Int32, mentioning marker: String) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].prefix(1)
        guard state != "Z", state != "X" else { return false }
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return cmdline.range(of: Data(marker.utf8)) != nil
    }
}

/// The labs of one cache: `up`, `down`, `list`.
public struct Labs: Sendable {
    public let root: String

    public init(cacheDirectory: String) {
        // Absolute: a lab's key and known_hosts paths go into ssh options run from anywhere.
        let cache = cacheDirectory.hasPrefix("/") ? cacheDirectory : FileManager.default.currentDirectoryPath + "/" + cacheDirectory
        root = URL(fileURLWithPath: cache).standardizedFileURL.path + "/labs"
    }

    public func directory(_ name: LabName) -> String { root + "/" + name.value }

    /// Where a lab that did not come up leaves its console log (its directory is removed).
    public func keptConsole(_ name: LabName) -> String { root + "/" + name.value + ".console.log" }

    public func list() -> [Lab] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted()
        return names.compactMap { try? LabName($0) }.compactMap { load($0) }
    }

    /// The lab whose directory holds its own `lab.json`; `up` writes that first, so even a lab a
    /// killed farm left early has one. Nothing else under `labs/` is a lab, and nothing else is removed.
    public func load(_ name: LabName) -> Lab? {
        guard let data = FileManager.default.contents(atPath: directory(name) + "/lab.json") else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard var lab = try? decoder.decode(Lab.self, from: data), lab.name == name.value else { return nil }
        // Where it was found, whatever the description says.
        lab.directory = directory(name)
        return lab
    }

    /// The lab a command means: the one named, or the only one there is.
    public func resolve(_ name: String?) throws -> Lab {
        if let name {
            guard let lab = load(try LabName(name)) else {
                throw FarmError("no lab named '\(name)' in \(root); 'farm lab list' shows the labs")
            }
            return lab
        }
        let labs = list()
        guard labs.count == 1, let lab = labs.first else {
            throw FarmError(labs.isEmpty ? "no lab is up; start one with 'farm lab up RELEASE'"
                           : "several labs are up (\(labs.map(\.name).joined(separator: ", "))); name one")
        }
        return lab
    }

    /// Ends the lab's QEMU (TERM, then KILL) and removes its directory. Also finds a lab left by
    /// a farm that was killed while bringing it up.
    @discardableResult
    public func down(_ lab: Lab) -> Bool {
        // The pid file's QEMU names the lab's directory too, so this finds it as well.
        let pids = lab.qemuProcesses
        for pid in pids { kill(pid, SIGTERM) }
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, pids.contains(where: { Lab.alive($0, mentioning: lab.directory) }) { usleep(50_000) }
        for pid in pids where Lab.alive(pid, mentioning: lab.directory) {
            kill(pid, SIGKILL)
            while Lab.alive(pid, mentioning: lab.directory) { usleep(20_000) }
        }
        let ended = !pids.isEmpty
        if FileManager.default.fileExists(atPath: lab.directory + "/lab.json") {
            try? FileManager.default.removeItem(atPath: lab.directory)
        }
        return ended
    }

    public struct UpOptions: Sendable {
        public var name: LabName
        public var memoryMiB: Int
        /// `auto` (KVM when it answers, else TCG), `kvm` or `tcg`.
        public var accelerator: String
        public var port: Int?
        public var bootTimeout: Double
        public init(name: LabName, memoryMiB: Int = 512, accelerator: String = "auto", port: Int? = nil, bootTimeout: Double = 120) {
            self.name = name
            self.memoryMiB = memoryMiB
            self.accelerator = accelerator
            self.port = port
            self.bootTimeout = bootTimeout
        }
    }

    /// Boots `kernel` with `initramfs` plus the lab's own keys, and waits until SSH answers.
    public func up(release: String, kernel: String, initramfs: String, options: UpOptions, log: (String) -> Void) throws -> Lab {
        guard let qemu = Executable.find("qemu-system-x86_64") else {
            throw FarmError.toolMissing(tool: "qemu-system-x86_64", package: "qemu-system-x86", purpose: "farm lab")
        }
        for (tool, package) in [("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"), ("dropbearkey", "dropbear-bin")]
        where Executable.find(tool) == nil {
            throw FarmError.toolMissing(tool: tool, package: package, purpose: "farm lab")
        }
        if let existing = load(options.name) {
            if existing.pid != nil {
                throw FarmError("lab '\(options.name)' is already up (\(existing.release), port \(existing.port)); 'farm lab down \(options.name)' first")
            }
            down(existing)
        }
        let directory = self.directory(options.name)
        let keptConsole = self.keptConsole(options.name)
        unlink(keptConsole)
        try ModuleKey.makePrivateDirectory(root)
        try ModuleKey.makePrivateDirectory(directory)
        var lab = Lab(name: options.name.value, release: release, port: try options.port ?? Labs.freePort(), memoryMiB: options.memoryMiB,
                      accelerator: "tcg", started: Date(), directory: directory)
        // Before anything else goes in: `down` removes only a directory with its lab.json.
        try save(lab)
        do {
            try makeKeys(lab)
            let initrd = directory + "/initrd.img"
            try appendKeys(of: lab, to: initramfs, into: initrd)
            var accelerators = ["tcg"]
            if options.accelerator == "kvm" || (options.accelerator == "auto" && access("/dev/kvm", R_OK | W_OK) == 0) {
                accelerators = options.accelerator == "kvm" ? ["kvm"] : ["kvm", "tcg"]
            }
            var outcome = "did not answer on SSH within \(Int(options.bootTimeout)) s"
            for (index, accelerator) in accelerators.enumerated() {
                lab.accelerator = accelerator
                lab.started = Date()
                try save(lab)
                try boot(lab, qemu: qemu, kernel: kernel, initrd: initrd)
                let last = index == accelerators.count - 1
                // KVM that is not the last resort must show it answers: console output within a
                // few seconds, its CPU never stopped by an internal error. Else TCG takes over.
                let verdict = last ? nil : answers(lab, within: Labs.kvmWindow)
                if verdict == nil, try waitForSSH(lab, timeout: options.bootTimeout) { return lab }
                let seconds = String(format: "%.1f", Date().timeIntervalSince(lab.started))
                if let status = lab.stoppedStatus {
                    outcome = "stopped the VM (QEMU status '\(status)') after \(seconds) s"
                } else if lab.pid == nil {
                    let said = ((try? String(contentsOfFile: directory + "/qemu.log", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                    outcome = "ended: QEMU exited after \(seconds) s" + (said.isEmpty ? "" : " saying: \(said)")
                }
                if let pid = lab.pid { kill(pid, SIGKILL); while Lab.alive(pid, mentioning: directory) { usleep(20_000) } }
                if !last {
                    log("farm: KVM \(verdict ?? "did not bring up SSH"); booting \(release) again under software emulation (TCG)")
                }
            }
            let tail = ((try? String(contentsOfFile: lab.console, encoding: .utf8)) ?? "").split(separator: "\n").suffix(15).joined(separator: "\n")
            throw FarmError("lab '\(options.name)': \(release) \(outcome); the console's last lines:\n\(tail)\nthe whole console log: \(keptConsole)")
        } catch {
            // The console says why a kernel did not come up: it outlives the lab.
            if FileManager.default.fileExists(atPath: lab.console) { try? FileManager.default.moveItem(atPath: lab.console, toPath: keptConsole) }
            down(lab)
            throw error
        }
    }

    func save(_ lab: Lab) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(lab), to: lab.directory + "/lab.json")
    }

    /// A host key for dropbear and an ed25519 key for root, both new for this lab.
    func makeKeys(_ lab: Lab) throws {
        let directory = lab.directory
        // Left by a farm killed while it made them: ssh-keygen would ask before overwriting.
        for file in [directory + "/host_key", lab.identity, lab.identity + ".pub"] { unlink(file) }
        let host = try Executable.run(Executable.find("dropbearkey")!, ["-t", "ed25519", "-f", directory + "/host_key"])
        guard host.status == 0 else { throw FarmError("dropbearkey failed: \(host.stderr)") }
        guard let publicLine = host.stdout.split(separator: "\n").first(where: { $0.hasPrefix("ssh-") }) else {
            throw FarmError("dropbearkey printed no public key")
        }
        let fields = publicLine.split(separator: " ")
        try AtomicFile.write(Data("[127.0.0.1]:\(lab.port) \(fields[0]) \(fields[1])\n".utf8), to: lab.knownHosts, mode: 0o600)
        let client = try Executable.run(Executable.find("ssh-keygen")!, ["-q", "-t", "ed25519", "-N", "", "-C", "farm-lab-\(lab.name)",
                                                                            "-f", lab.identity])
        guard client.status == 0 else { throw FarmError("ssh-keygen failed: \(client.stderr)") }
        chmod(lab.identity, 0o600)
    }

    /// The initramfs followed by a second archive with this lab's keys (the kernel reads both).
    func appendKeys(of lab: Lab, to initramfs: String, into initrd: String) throws {
        let tree = lab.directory + "/overlay"
        try? FileManager.default.removeItem(atPath: tree)
        for directory in ["etc/dropbear", "root/.ssh"] { try AtomicFile.makeDirectory(tree + "/" + directory) }
        chmod(tree + "/root", 0o700)
        chmod(tree + "/root/.ssh", 0o700)
        try FileManager.default.copyItem(atPath: lab.directory + "/host_key", toPath: tree + "/etc/dropbear/dropbear_ed25519_host_key")
        chmod(tree + "/etc/dropbear/dropbear_ed25519_host_key", 0o600)
        try FileManager.default.copyItem(atPath: lab.identity + ".pub", toPath: tree + "/root/.ssh/authorized_keys")
        chmod(tree + "/root/.ssh/authorized_keys", 0o600)
        try Data((lab.name + "\n").utf8).write(to: URL(fileURLWithPath: tree + "/etc/lab-name"))
        let overlay = lab.directory + "/overlay.cpio.gz"
        try InitramfsAction.pack(tree, into: overlay)
        try? FileManager.default.removeItem(atPath: tree)
        var data = try Data(contentsOf: URL(fileURLWithPath: initramfs))
        data.append(try Data(contentsOf: URL(fileURLWithPath: overlay)))
        try AtomicFile.write(data, to: initrd, mode: 0o600)
        unlink(overlay)
    }

    func boot(_ lab: Lab, qemu: String, kernel: String, initrd: String) throws {
        unlink(lab.pidFile)
        unlink(lab.console)
        unlink(lab.directory + "/qmp.sock")
        let arguments = ["-name", "farm-lab-\(lab.name)", "-accel", lab.accelerator, "-m", "\(lab.memoryMiB)M", "-smp", "1",
                         "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet",
                         "-display", "none", "-monitor", "none", "-serial", "file:\(lab.console)",
                         "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:\(lab.port)-:22", "-device", "virtio-net-pci,netdev=n0",
                         "-device", "virtio-rng-pci", "-no-reboot", "-daemonize", "-pidfile", lab.pidFile]
            + (lab.monitor.map { ["-qmp", "unix:\($0.socketPath),server=on,wait=off"] } ?? [])
        let output = lab.directory + "/qemu.log"
        let status = try Executable.daemon(qemu, arguments, log: output)
        guard status == 0 else {
            let text = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            throw FarmError("qemu-system-x86_64 (\(lab.accelerator)) did not start: \(text)")
        }
    }

    /// How long KVM gets to show console output before farm falls back to TCG. A working KVM
    /// prints the init's line in about a second; a broken one here stops within about 5 s.
    static let kvmWindow = 8.0

    /// Nil when the VM answers (it wrote to its console and QMP says its CPU runs); else why not,
    /// as soon as that is known: QMP reports a stopped CPU, QEMU exits, or the window passes silent.
    func answers(_ lab: Lab, within window: Double) -> String? {
        let deadline = Date().addingTimeInterval(window)
        while true {
            guard lab.pid != nil else { return "exited" }
            if let status = lab.stoppedStatus {
                return "stopped the VM (QEMU status '\(status)') after \(String(format: "%.1f", Date().timeIntervalSince(lab.started))) s"
            }
            if let info = try? FileManager.default.attributesOfItem(atPath: lab.console), (info[.size] as? Int ?? 0) > 0 { return nil }
            guard Date() < deadline else { return "made no progress in \(Int(window)) s" }
            usleep(250_000)
        }
    }

    /// Polls `ssh true` until it succeeds, the VM dies, or the time is up.
    func waitForSSH(_ lab: Lab, timeout: Double) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard lab.pid != nil else { return false }
            if lab.stoppedStatus != nil { return false }
            // A VM that is not answering still has its port forwarded by QEMU: the connection is
            // accepted and ssh waits for a banner, which ConnectTimeout does not bound.
            let probe = try Executable.run(Executable.find("ssh")!, lab.sshOptions + ["-o", "ConnectTimeout=3", lab.destination, "true"],
                                           timeout: 6)
            if probe.status == 0 { return true }
            if probe.stderr.contains("Host key verification failed") || probe.stderr.contains("REMOTE HOST IDENTIFICATION") {
                throw FarmError("the lab's host key does not match its known_hosts: \(probe.stderr)")
            }
            usleep(500_000)
        }
        return false
    }

    /// A TCP port of 127.0.0.1 nobody listens on now.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw FarmError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { throw FarmError("bind: \(String(cString: strerror(errno)))") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
