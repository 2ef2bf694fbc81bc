import FarmEngine
import Foundation

/// Task kind `initramfs`: what a lab VM boots for one kernel. Input `image` (the kernel's
/// `linux-image-<release>` package, through the fetch task and the CAS). Outputs `kernel`
/// (its vmlinuz) and `initramfs` (a gzipped newc cpio): busybox from `busybox-static`, dropbear
/// from `dropbear-bin` and `sftp-server` from `openssh-sftp-server` (so `scp`, `sftp` and SFTP
/// clients such as Margarita Shotgun's work) with the libraries they link, a `sudo` that runs its
/// command as the root it already is (for tools written to run `sudo insmod`), the kernel's own
/// NIC and RNG driver modules (virtio-pci, virtio-net, e1000, virtio-rng, with what each module's
/// `.modinfo` says it depends on, in load order), and an `/init` that waits up to 10 s for eth0,
/// brings up QEMU's user network (10.0.2.15) and keeps dropbear running. The lab's keys are not in it:
/// `farm lab up` appends them as a second cpio archive.
public struct InitramfsAction: TaskAction {
    public let release: String
    /// The host's busybox-static, dropbear-bin and openssh-sftp-server versions: their binaries go into the image.
    public let tools: [String: String]

    /// The drivers of the lab's QEMU devices (virtio-net-pci, virtio-rng-pci) and of e1000, by
    /// module name; what they depend on comes along. A driver built into the kernel has no file.
    static let drivers = ["virtio_pci", "virtio_net", "e1000", "virtio_rng"]

    public init(release: String) throws {
        self.release = release
        var tools: [String: String] = [:]
        for package in ["busybox-static", "dropbear-bin", "openssh-sftp-server"] {
            let result = try? Executable.run("/usr/bin/dpkg-query", ["-W", "-f", "${Version}", package])
            guard let result, result.status == 0, !result.stdout.isEmpty else {
                throw FarmError.toolMissing(tool: package, package: package, purpose: "the lab's initramfs")
            }
            tools[package] = result.stdout
        }
        self.tools = tools
    }

    public var kind: String { "initramfs" }
    public var version: Int { 6 }
    public var parameters: [(name: String, value: String)] {
        [("release", release), ("init", InitramfsAction.initScript), ("sudo", InitramfsAction.sudoScript)] + tools.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    public func run(_ context: TaskContext) async throws -> [String: Digest] {
        try await Blocking.run { try build(context) }
    }

    static let initScript = """
    #!/bin/sh
    export PATH=/sbin:/bin:/usr/sbin:/usr/bin
    mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run
    hostname "$(cat /etc/lab-name 2>/dev/null || echo lab)"
    for module in $(cat /lib/modules/load-order); do
      insmod /lib/modules/$module.ko || echo "farm-lab: insmod $module failed" > /dev/console
    done
    # The NIC appears when its driver has probed the PCI device, which need not be done yet.
    waited=0
    while [ ! -e /sys/class/net/eth0 ] && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
    [ -e /sys/class/net/eth0 ] || echo "farm-lab: no eth0 after 10 s; modules: $(cat /lib/modules/load-order | tr '\\n' ' ')" > /dev/console
    ip link set lo up
    ip addr add 10.0.2.15/24 dev eth0; ip link set eth0 up; ip route add default via 10.0.2.2
    echo "farm-lab: network up, starting dropbear" > /dev/console
    while :; do
      /usr/sbin/dropbear -F -E -s -g -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid
      sleep 1
    done

    """

    /// The lab logs in as root; `sudo [-n] [--] COMMAND...` runs COMMAND as it is.
    static let sudoScript = """
    #!/bin/sh
    while [ "${1#-}" != "$1" ]; do
      case "$1" in --) shift; break;; -n|-E|-H|-S) shift;; *) echo "sudo (farm lab): option $1 not supported" >&2; exit 1;; esac
    done
    exec "$@"

    """

    private func build(_ context: TaskContext) throws -> [String: Digest] {
        let image = context.workDirectory + "/image"
        _ = try PackageExtractor.extract(package: try context.inputPath("image", "package"), into: image)
        let vmlinuz = image + "/boot/vmlinuz-" + release
        guard FileManager.default.fileExists(atPath: vmlinuz) else {
            throw FarmError("the image package of \(release) has no /boot/vmlinuz-\(release)")
        }
        let tree = context.workDirectory + "/tree"
        for directory in ["bin", "sbin", "usr/bin", "usr/sbin", "etc/dropbear", "proc", "sys", "dev", "tmp", "run", "var/log",
                          "lib/modules", "root/.ssh"] {
            try AtomicFile.makeDirectory(tree + "/" + directory)
        }
        chmod(tree + "/root", 0o700)
        chmod(tree + "/root/.ssh", 0o700)

        // busybox (static) and its applets.
        try copy("/bin/busybox", to: tree + "/bin/busybox", mode: 0o755)
        let applets = try Executable.run("/bin/busybox", ["--list-full"])
        for applet in applets.stdout.split(separator: "\n").map(String.init) where !applet.isEmpty && applet != "bin/busybox" {
            let target = tree + "/" + applet
            try AtomicFile.makeDirectory((target as NSString).deletingLastPathComponent)
            let depth = applet.split(separator: "/").count - 1
            try? FileManager.default.createSymbolicLink(atPath: target, withDestinationPath: String(repeating: "../", count: depth) + "bin/busybox")
        }
        // dropbear, the sftp-server at the path dropbear runs it from, and what they link.
        try copy("/usr/sbin/dropbear", to: tree + "/usr/sbin/dropbear", mode: 0o755)
        try AtomicFile.makeDirectory(tree + "/usr/lib")
        try copy("/usr/lib/openssh/sftp-server", to: tree + "/usr/lib/sftp-server", mode: 0o755)
        try Data(InitramfsAction.sudoScript.utf8).write(to: URL(fileURLWithPath: tree + "/usr/bin/sudo"))
        chmod(tree + "/usr/bin/sudo", 0o755)
        // The loader at its own path; the libraries in /lib, where it looks without an ld.so.cache.
        let libraries = Set(try sharedLibraries(of: "/usr/sbin/dropbear") + sharedLibraries(of: "/usr/lib/openssh/sftp-server"))
        for library in libraries.sorted() {
            let target = library.contains("/ld-linux") ? library : "/lib/" + (library as NSString).lastPathComponent
            try AtomicFile.makeDirectory(tree + (target as NSString).deletingLastPathComponent)
            guard let real = realpath(library, nil) else { throw FarmError("\(library), which dropbear needs, is missing") }
            defer { free(real) }
            try copy(String(cString: real), to: tree + target, mode: 0o755)
        }
        let order = try unpackDrivers(image: image, into: tree + "/lib/modules")
        context.log.append("NIC modules: \(order.joined(separator: " "))\n")
        try Data((order.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: tree + "/lib/modules/load-order"))
        try Data(InitramfsAction.initScript.utf8).write(to: URL(fileURLWithPath: tree + "/init"))
        chmod(tree + "/init", 0o755)
        try Data("root:x:0:0:root:/root:/bin/sh\n".utf8).write(to: URL(fileURLWithPath: tree + "/etc/passwd"))
        try Data("root:x:0:\n".utf8).write(to: URL(fileURLWithPath: tree + "/etc/group"))
        try Data("/bin/sh\n".utf8).write(to: URL(fileURLWithPath: tree + "/etc/shells"))

        let archive = context.workDirectory + "/initramfs.cpio.gz"
        try InitramfsAction.pack(tree, into: archive)
        context.log.append(tools.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n")
        let kernel = context.workDirectory + "/vmlinuz"
        try FileManager.default.copyItem(atPath: vmlinuz, toPath: kernel)
        return ["kernel": try context.store(file: kernel), "initramfs": try context.store(file: archive)]
    }

    /// `find | sort | cpio -o -H newc -R 0:0 --reproducible | gzip -n`: every file owned by root.
    public static func pack(_ tree: String, into archive: String) throws {
        guard Executable.find("cpio") != nil else { throw FarmError.toolMissing(tool: "cpio", package: "cpio", purpose: "the lab's initramfs") }
        let script = "set -eo pipefail; cd \"$1\"; find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet | gzip -n -6 > \"$2\""
        let absolute = archive.hasPrefix("/") ? archive : FileManager.default.currentDirectoryPath + "/" + archive
        let result = try Executable.run("/bin/bash", ["-c", script, "pack", tree, absolute])
        guard result.status == 0 else { throw FarmError("packing the initramfs failed: \(result.stderr)") }
    }

    /// Unpacks `drivers` and every module they depend on (the `depends=` of each module's
    /// `.modinfo`: Debian's image packages carry no `modules.dep`, depmod writes it on install)
    /// into `directory` as `NAME.ko`, and returns their names in load order, dependencies first.
    func unpackDrivers(image: String, into directory: String) throws -> [String] {
        let moduleRoot = modulesDirectory(image: image) + "/kernel"
        // Module names treat - and _ alike (virtio-rng.ko is module virtio_rng).
        func key(_ name: some StringProtocol) -> String { name.replacingOccurrences(of: "-", with: "_") }
        var files: [String: String] = [:]
        if let walker = FileManager.default.enumerator(atPath: moduleRoot) {
            while let entry = walker.nextObject() as? String {
                let name = (entry as NSString).lastPathComponent
                for suffix in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] where name.hasSuffix(suffix) {
                    files[key(name.dropLast(suffix.count))] = moduleRoot + "/" + entry
                }
            }
        }
        var order: [String] = []
        var visiting: Set<String> = []
        func visit(_ module: String) throws {
            guard !order.contains(module), let path = files[module] else { return }
            guard visiting.insert(module).inserted else { throw FarmError("kernel \(release): modules depend on each other in a cycle through \(module)") }
            let target = directory + "/\(module).ko"
            switch (path as NSString).pathExtension {
            case "xz": try decompress("xz", path, to: target)
            case "zst": try decompress("zstd", path, to: target)
            case "gz": try decompress("gzip", path, to: target)
            default: try copy(path, to: target, mode: 0o644)
            }
            let depends = try ModuleInfo.read(path: target).value("depends") ?? ""
            for dependency in depends.split(separator: ",") { try visit(key(dependency)) }
            order.append(module)
        }
        for driver in InitramfsAction.drivers { try visit(driver) }
        for needed in ["virtio_pci", "virtio_net"] where !order.contains(needed) && !builtin(image: image, module: needed) {
            throw FarmError("kernel \(release) has no \(needed) driver (neither a module nor built in); the lab needs it")
        }
        return order
    }

    private func copy(_ source: String, to target: String, mode: mode_t) throws {
        try? FileManager.default.removeItem(atPath: target)
        guard FileManager.default.fileExists(atPath: source) else { throw FarmError("\(source) is missing; the lab's initramfs needs it") }
        try FileManager.default.copyItem(atPath: source, toPath: target)
        chmod(target, mode)
    }

    private func decompress(_ tool: String, _ source: String, to target: String) throws {
        let result = try Executable.run("/bin/sh", ["-c", "\(tool) -dc \"$1\" > \"$2\"", "sh", source, target])
        guard result.status == 0 else { throw FarmError("\(tool) could not unpack \(source): \(result.stderr)") }
    }

    /// `lib/modules/<release>`, or `usr/lib/modules/<release>` where the image is merged-/usr (trixie).
    private func modulesDirectory(image: String) -> String {
        let merged = image + "/usr/lib/modules/" + release
        return FileManager.default.fileExists(atPath: merged) ? merged : image + "/lib/modules/" + release
    }

    private func builtin(image: String, module: String) -> Bool {
        let list = (try? String(contentsOfFile: modulesDirectory(image: image) + "/modules.builtin", encoding: .utf8)) ?? ""
        return list.split(separator: "\n").contains { $0.replacingOccurrences(of: "-", with: "_").hasSuffix("/\(module).ko") }
    }

    /// The libraries `ldd` lists for a binary, and its loader.
    private func sharedLibraries(of binary: String) throws -> [String] {
        let result = try Executable.run("/usr/bin/ldd", [binary])
        guard result.status == 0 else { throw FarmError("ldd \(binary) failed: \(result.stderr)") }
        var libraries: [String] = []
        for line in result.stdout.split(separator: "\n") {
            for word in line.split(whereSeparator: \.isWhitespace) where word.hasPrefix("/") { libraries.append(String(word)) }
        }
        return libraries
    }
}
