import FarmEngine
import FarmKit
import Foundation

/// A remote cache server for tests: Debian's nginx with WebDAV `PUT` on 127.0.0.1, with its
/// configuration, pid file, logs, temporary paths and served files all in one scratch directory,
/// so nothing global is needed or touched. One process (`master_process off`), stopped with SIGKILL
/// when the test ends; it dies with the test process too.
final class NginxServer: @unchecked Sendable {
    let directory: String
    private(set) var port = 0
    private var process: Executable.Background?

    var root: String { directory + "/root" }
    var url: String { "http://127.0.0.1:\(port)" }
    var accessLog: String { directory + "/access.log" }

    static var installed: Bool { FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") }

    /// Every request answered with 503, as a cache server whose storage broke.
    let failing: Bool

    init(directory: String, failing: Bool = false) throws {
        self.directory = directory
        self.failing = failing
        for sub in ["root", "temp"] {
            try FileManager.default.createDirectory(atPath: directory + "/" + sub, withIntermediateDirectories: true)
        }
        try start()
    }

    deinit { stop() }

    /// Starts it on a free port (the same one again after a `stop`).
    func start() throws {
        for _ in 0..<5 {
            if port == 0 || process != nil { port = NginxServer.freePort() }
            try configuration().write(toFile: directory + "/nginx.conf", atomically: true, encoding: .utf8)
            let started = try Executable.background("/usr/sbin/nginx", ["-p", directory, "-c", directory + "/nginx.conf", "-e", directory + "/error.log"])
            for _ in 0..<100 where started.isRunning {
                if NginxServer.accepts(port) {
                    process = started
                    return
                }
                usleep(20_000)
            }
            started.stop()
            port = 0
        }
        let log = (try? String(contentsOfFile: directory + "/error.log", encoding: .utf8)) ?? ""
        throw TestFailure("nginx did not start in \(directory): \(log)")
    }

    func stop() {
        process?.stop()
        process = nil
    }

    /// `METHOD path status` of every request served so far, from the access log.
    var requests: [(method: String, path: String, status: Int)] {
        let text = (try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 3, let status = Int(fields[2]) else { return nil }
            return (String(fields[0]), String(fields[1]), status)
        }
    }

    /// Every file the server holds, relative to its root.
    var files: [String] {
        (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).filter { relative in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: root + "/" + relative, isDirectory: &isDirectory) && !isDirectory.boolValue
        }.sorted()
    }

    private func configuration() -> String {
        // As root, nginx would switch to `nobody` for the files it writes; the test's own user keeps them.
        let user = geteuid() == 0 ? "user root;\n" : ""
        return """
        daemon off;
        master_process off;
        \(user)pid \(directory)/nginx.pid;
        error_log \(directory)/error.log;
        events { worker_connections 64; }
        http {
            log_format farm '$request_method $uri $status';
            access_log \(accessLog) farm;
            client_body_temp_path \(directory)/temp/body;
            proxy_temp_path \(directory)/temp/proxy;
            fastcgi_temp_path \(directory)/temp/fastcgi;
            uwsgi_temp_path \(directory)/temp/uwsgi;
            scgi_temp_path \(directory)/temp/scgi;
            client_max_body_size 0;
            server {
                listen 127.0.0.1:\(port);
                root \(root);
                location / {
                    \(failing ? "return 503;" : "dav_methods PUT;\n                create_full_put_path on;")
                }
            }
        }

        """
    }

    /// A port nothing listens on just now (bound to port 0, then let go).
    static func freePort() -> Int { (try? Labs.freePort()) ?? 0 }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
