import FarmEngine
import Foundation

/// Where a build command runs.
public enum SandboxBackend: String, Sendable, CaseIterable {
    /// bubblewrap: unprivileged namespaces; the default.
    case bwrap
    /// chroot in private mount, pid, net, ipc and uts namespaces; root only, for hosts without bwrap.
    case chroot
    /// The host itself, with the host's compiler: not reproducible, for debugging only.
    case host

    /// Whether the same inputs give the same bytes on any machine: bwrap and chroot see the same
    /// root at the same paths, so they share results; `host` does not.
    public var isReproducible: Bool { self != .host }
}

/// One command to run in a sandbox: a read-only root, read-only trees mounted at fixed absolute
/// paths, one writable directory at `/build`, a private `/tmp`, no network and a fixed environment.
public struct SandboxSpec: Sendable {
    public struct Mount: Sendable, Hashable {
        public var source: String
        public var target: String
    }

    /// The fixed path of the writable directory inside the sandbox.
    public static let buildDirectory = "/build"

    /// The toolchain root, shown read-only as `/`.
    public var root: String
    public var mounts: [Mount]
    /// The host directory shown writable at `/build`.
    public var build: String
    public var command: String
    /// Added to the fixed PATH, HOME and LC_ALL.
    public var environment: [String: String]

    public init(root: String, mounts: [Mount], build: String, command: String, environment: [String: String]) {
        self.root = root
        self.mounts = mounts
        self.build = build
        self.command = command
        self.environment = environment
    }

    var fullEnvironment: [String: String] {
        var environment = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": SandboxSpec.buildDirectory,
                           "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp"]
        environment.merge(self.environment) { $1 }
        return environment
    }
}

public enum Sandbox {
    /// Creates, in a root farm unpacked, the empty directories the spec's trees are mounted on:
    /// the root is mounted read-only, and a mount needs an existing directory.
    public static func prepareMountPoints(_ spec: SandboxSpec) throws {
        for target in spec.mounts.map(\.target) + [SandboxSpec.buildDirectory, "/tmp", "/proc", "/dev"] {
            let path = spec.root + target
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { continue }
            try UnpackedTrees.makeMountPoint(path, inTree: spec.root)
        }
    }

    /// Runs the spec's command with `backend`, its output (stdout and stderr, interleaved) going to
    /// `log`; returns the exit status. Killing farm kills the sandbox: bwrap and the chroot
    /// launcher die with their parent (SIGKILL), and take everything inside with them.
    public static func run(_ spec: SandboxSpec, backend: SandboxBackend, log: TaskLog) throws -> Int32 {
        switch backend {
        case .bwrap:
            let bwrap = try bwrapTool()
            try prepareMountPoints(spec)
            var arguments = ["--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", spec.root, "/",
                             "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
            for mount in spec.mounts { arguments += ["--ro-bind", mount.source, mount.target] }
            arguments += ["--bind", spec.build, SandboxSpec.buildDirectory, "--chdir", SandboxSpec.buildDirectory, "--clearenv"]
            for (name, value) in spec.fullEnvironment.sorted(by: { $0.key < $1.key }) { arguments += ["--setenv", name, value] }
            arguments += ["/bin/sh", "-c", spec.command]
            return try runLogged(bwrap, arguments, environment: [:], log: log)

        case .chroot:
            let (setpriv, unshare) = try chrootTools()
            try prepareMountPoints(spec)
            let target = spec.build + ".root"
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            var script = ["set -e", "mount --make-rprivate /",
                          "mount --bind \(spec.root.shellQuoted) \(target.shellQuoted)",
                          "mount -o remount,bind,ro \(target.shellQuoted)",
                          "mount -t proc -o nosuid,nodev,noexec proc \((target + "/proc").shellQuoted)",
                          "mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs \((target + "/tmp").shellQuoted)",
                          "mount -t tmpfs -o nosuid,mode=755 tmpfs \((target + "/dev").shellQuoted)"]
            for device in ["null", "zero", "full", "random", "urandom", "tty"] {
                script.append(": > \((target + "/dev/" + device).shellQuoted) && mount --bind /dev/\(device) \((target + "/dev/" + device).shellQuoted)")
            }
            for mount in spec.mounts {
                script.append("mount --bind \(mount.source.shellQuoted) \((target + mount.target).shellQuoted)")
                script.append("mount -o remount,bind,ro \((target + mount.target).shellQuoted)")
            }
            script.append("mount --bind \(spec.build.shellQuoted) \((target + SandboxSpec.buildDirectory).shellQuoted)")
            let environment = spec.fullEnvironment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)".shellQuoted }.joined(separator: " ")
            script.append("exec chroot \(target.shellQuoted) /usr/bin/env -i \(environment) /bin/sh -c \(("cd /build && " + spec.command).shellQuoted)")
            // setpriv makes the launcher die with farm; unshare --kill-child then ends the
            // namespace's first process, and with it every process in the pid namespace.
            let arguments = ["--pdeathsig", "KILL", "--", unshare, "--mount", "--uts", "--ipc", "--net", "--pid", "--fork",
                             "--kill-child=KILL", "/bin/sh", "-c", script.joined(separator: "\n")]
            defer { try? FileManager.default.removeItem(atPath: target) }
            return try runLogged(setpriv, arguments, environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"], log: log)

        case .host:
            var environment = spec.fullEnvironment
            environment["PATH"] = ProcessInfo.processInfo.environment["PATH"] ?? environment["PATH"]
            return try runLogged("/bin/sh", ["-c", spec.command], environment: environment, directory: spec.build, log: log)
        }
    }


    /// bwrap's path, or the error that says how to install it.
    static func bwrapTool() throws -> String {
        guard let bwrap = Executable.find("bwrap") else {
            throw FarmError.toolMissing(tool: "bwrap", package: "bubblewrap", purpose: "the bwrap sandbox (--sandbox bwrap, the default)")
        }
        return bwrap
    }

    /// What the chroot sandbox needs: root, `setpriv` and `unshare`.
    static func chrootTools() throws -> (setpriv: String, unshare: String) {
        guard geteuid() == 0 else {
            throw FarmError.environment("the chroot sandbox needs root (it mounts and chroots); run farm as root or use --sandbox bwrap")
        }
        guard let setpriv = Executable.find("setpriv"), let unshare = Executable.find("unshare") else {
            throw FarmError.toolMissing(tool: "setpriv and unshare", package: "util-linux", purpose: "the chroot sandbox")
        }
        return (setpriv, unshare)
    }

    /// Runs a program with stdout and stderr into one pipe that goes to `log`. Blocking. The
    /// program dies with farm (`Executable`'s parent-death signal).
    public static func runLogged(_ executable: String, _ arguments: [String], environment: [String: String],
                                 directory: String? = nil, log: TaskLog) throws -> Int32 {
        let termination = try Executable.run(executable, arguments, environment: environment, directory: directory) { log.append($0) }
        if let signal = termination.signal {
            log.append("farm: \((executable as NSString).lastPathComponent) was killed by signal \(signal)\n")
        }
        return termination.status
    }
}
