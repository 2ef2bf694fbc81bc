import CFarmLinux
import Foundation

/// Starts every program farm runs (gpg, tar, mmdebstrap, the sandboxes) and collects what it
/// printed. Each child gets SIGKILL when farm dies, even by SIGKILL: the parent-death signal is
/// armed in the child before exec. Linux sends it when the *thread* that started the child exits,
/// so a child is started and waited for on one thread, which therefore outlives it. The one
/// exception is `daemon`: a program that daemonizes (a lab's QEMU) must outlive farm.
public enum Executable {
    public struct Result: Sendable {
        /// The exit code, or 128 + the signal that ended the program, as a shell says.
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// How a program ended: `status` as in `Result`, `signal` when a signal ended it.
    public struct Termination: Sendable {
        public var status: Int32
        public var signal: Int32?
    }

    public static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"] {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs to the end; `input` is a file for stdin (else /dev/null). After `timeout` seconds the
    /// program gets SIGKILL (status 137). Blocking: call from `Blocking.run` inside tasks.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           directory: String? = nil, input: String? = nil, timeout: Double? = nil) throws -> Result {
        let stdin = try openInput(input)
        defer { close(stdin) }
        let output = try makePipe()
        let errors: (read: Int32, write: Int32)
        do { errors = try makePipe() } catch { close(output.read); close(output.write); throw error }
        var collected = [Data(), Data()]
        let termination = try start(executable, arguments, environment: environment, directory: directory,
                                    stdin: stdin, pipes: [output, errors], timeout: timeout) { index, chunk in collected[index].append(chunk) }
        return Result(status: termination.status, stdout: String(decoding: collected[0], as: UTF8.self),
                      stderr: String(decoding: collected[1], as: UTF8.self))
    }

    /// Runs to the end with stdout and stderr interleaved, as they come, into `output`; stdin is
    /// /dev/null. Blocking.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]?,
                           directory: String? = nil, output: (Data) -> Void) throws -> Termination {
        let stdin = try openInput(nil)
        defer { close(stdin) }
        let pipe = try makePipe()
        return try start(executable, arguments, environment: environment, directory: directory,
                         stdin: stdin, pipes: [pipe], timeout: nil) { _, chunk in output(chunk) }
    }

    /// Starts the child with fd 1 on the first pipe and fd 2 on the last, reads every pipe to its
    /// end on this thread, and reaps the child. Closes the pipes.
    private static func start(_ executable: String, _ arguments: [String], environment: [String: String]?, directory: String?,
                              stdin: Int32, pipes: [(read: Int32, write: Int32)], timeout: Double?,
                              received: (Int, Data) -> Void) throws -> Termination {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { $0.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            argv.forEach { free($0) }
            envp?.forEach { free($0) }
        }
        let pid = argv.withUnsafeBufferPointer { argvPointer in
            withEnvironment(envp) { envpPointer in
                farm_spawn(executable, argvPointer.baseAddress, envpPointer, directory, stdin, pipes[0].write, pipes[pipes.count - 1].write)
            }
        }
        pipes.forEach { close($0.write) }
        guard pid > 0 else {
            pipes.forEach { close($0.read) }
            throw FileSystemError.io(operation: "starting", path: executable, errno: -pid)
        }
        drain(pipes.map(\.read), until: timeout.map { ContinuousClock.now + .milliseconds(Int($0 * 1000)) },
              expired: { kill(pid, SIGKILL) }, into: received)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        if farm_wait_status_signaled(status) != 0 {
            let signal = farm_wait_status_signal(status)
            return Termination(status: 128 + signal, signal: signal)
        }
        return Termination(status: farm_wait_status_code(status), signal: nil)
    }

    /// A program left running while its starter works (the capture's SSH port forward), with
    /// /dev/null for stdin, stdout and stderr. It dies with farm like every child; the thread that
    /// started it must stay until `stop` (the capture's own thread does: it blocks until done).
    public final class Background: @unchecked Sendable {
        public let pid: pid_t
        private var reaped = false
        private let lock = NSLock()

        init(pid: pid_t) { self.pid = pid }

        /// Whether it still runs (reaps it once it has ended).
        public var isRunning: Bool {
            lock.withLock {
                guard !reaped else { return false }
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid { reaped = true }
                return !reaped
            }
        }

        /// SIGKILL and reap.
        public func stop() {
            lock.withLock {
                guard !reaped else { return }
                kill(pid, SIGKILL)
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0, errno == EINTR {}
                reaped = true
            }
        }

        deinit { stop() }
    }

    public static func background(_ executable: String, _ arguments: [String]) throws -> Background {
        let null = try openInput(nil)
        defer { close(null) }
        let sink = open("/dev/null", O_WRONLY | O_CLOEXEC)
        guard sink >= 0 else { throw FileSystemError.io(operation: "open", path: "/dev/null", errno: errno) }
        defer { close(sink) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let pid = argv.withUnsafeBufferPointer { argvPointer in
            withEnvironment(nil) { farm_spawn(executable, argvPointer.baseAddress, $0, nil, null, sink, sink) }
        }
        guard pid > 0 else { throw FileSystemError.io(operation: "starting", path: executable, errno: -pid) }
        return Background(pid: pid)
    }

    /// Starts a program that daemonizes itself (`qemu -daemonize`) and waits for its launcher to
    /// return; the daemon outlives farm on purpose, so no death signal is armed. A daemon keeps
    /// every descriptor it inherits, so it gets only /dev/null and `log` (stdout and stderr), and
    /// an empty signal mask. Returns the launcher's wait status (0: the daemon is up).
    public static func daemon(_ executable: String, _ arguments: [String], log: String) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // And nothing else: a pipe farm's own caller gave it must not stay open in the daemon.
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let fd = Int32(entry), fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard spawned == 0 else { throw FileSystemError.io(operation: "starting", path: executable, errno: spawned) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return status
    }

    private static func withEnvironment<T>(_ envp: [UnsafeMutablePointer<CChar>?]?,
                                           _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>?) -> T) -> T {
        guard let envp else { return body(environ) }
        return envp.withUnsafeBufferPointer { body($0.baseAddress) }
    }

    /// Reads every descriptor until each is at its end, then closes them. At `deadline` calls
    /// `expired` once, and gives up reading two seconds later (a grandchild may hold a pipe).
    private static func drain(_ descriptors: [Int32], until deadline: ContinuousClock.Instant?, expired: () -> Void,
                              into received: (Int, Data) -> Void) {
        var polled = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var open = descriptors.count
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var deadline = deadline, expiredOnce = false
        while open > 0 {
            var wait: Int32 = -1
            if let end = deadline {
                let left = ContinuousClock.now.duration(to: end)
                if left <= .zero {
                    if expiredOnce { break }
                    expired()
                    expiredOnce = true
                    deadline = ContinuousClock.now + .seconds(2)
                    continue
                }
                wait = Int32(min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            }
            let ready = poll(&polled, nfds_t(polled.count), wait)
            if ready < 0 {
                if errno == EINTR { continue }
                break
            }
            for index in polled.indices where polled[index].fd >= 0 && polled[index].revents != 0 {
                let count = read(polled[index].fd, &buffer, buffer.count)
                if count > 0 {
                    received(index, Data(buffer[0..<count]))
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(polled[index].fd)
                    polled[index].fd = -1
                    open -= 1
                }
            }
        }
        for entry in polled where entry.fd >= 0 { close(entry.fd) }
    }

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var descriptors: [Int32] = [0, 0]
        guard farm_pipe(&descriptors) == 0 else { throw FileSystemError.io(operation: "pipe", path: "for a child process", errno: errno) }
        return (descriptors[0], descriptors[1])
    }

    private static func openInput(_ path: String?) throws -> Int32 {
        let path = path ?? "/dev/null"
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileSystemError.io(operation: "open", path: path, errno: errno) }
        return descriptor
    }
}

