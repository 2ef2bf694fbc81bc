import ArgumentParser
import FarmEngine
import FarmKit
import Foundation

struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Capture hosts' memory with LiME from a farm repository, over SSH.",
        discussion: """
        Per host: one SSH round trip of facts (uname -r, -m and -n, /proc/version, lockdown, sig_enforce, \
        /proc/iomem); the matching module from the repository, its checksum (always) and \
        OpenPGP signature (against the key you pin) checked; uploaded; insmod'ed with path=tcp:PORT \
        format=lime localhostonly=1; the port forwarded through SSH to 127.0.0.1 here; memory streamed \
        to <output>/<host>-<release>-<UTC time>.lime (mode 0600) and checked against the host's \
        System RAM, with a JSON sidecar (size, sha256 hashed while streaming, ranges, rate, cipher, compression, \
        operator, case, farm's version, the host's name, /proc/version and SSH host key, UTC times, lockdown). \
        Before uploading it reads the host's lockdown mode and sig_enforce and says when the module must be signed \
        by a key the host trusts. After the capture, the repository's signed symbols/banners.json gives the \
        Volatility 3 symbol table whose banner is the host's /proc/version: written to <output>/symbols/linux/, \
        and the 'vol -s <output>/symbols -f <image> linux.pslist' line printed. With --compress \
        on LiME deflates the stream (compress=1) and farm inflates it, writing the same image; auto (the \
        default) compresses only when a 4 MiB probe of the SSH channel is slower than 1.25 MiB/s (~10 Mbit/s), \
        half the slowest host's deflate rate measured. LiME is unloaded and the upload removed, also on failure or Ctrl-C. \
        Uses the OpenSSH client: your ssh config, agent and known_hosts apply, and host keys are checked.
        """)

    @Argument(help: "Hosts as [user@]host[:port].")
    var hosts: [String] = []

    @Option(name: .long, help: "The repository: a directory or an http(s) URL.")
    var repo: String

    @Option(name: .customShort("i"), help: "The SSH identity (private key) file.")
    var identity: String?

    @Option(name: .long, help: "An ssh -o option (repeatable), e.g. 'UserKnownHostsFile=~/lab_hosts'.")
    var sshOption: [String] = []

    @Option(name: .long, help: "Where the images go.")
    var output = "captures"

    @Option(name: .long, help: "The repository key's fingerprint you trust (default: the manifest's repository key).")
    var fingerprint: String?

    @Flag(name: .long, help: "Do not check OpenPGP signatures (checksums are still checked).")
    var gpgNoVerify = false

    @Option(name: .long, help: "LiME compresses the stream: auto (when the SSH channel is slow), on or off.")
    var compress: CaptureCompression = .auto

    @Option(name: .customLong("operator"), help: "Who captures, for the record (default: the local user name).")
    var operatorName: String?

    @Option(name: .customLong("case"), help: "The case this capture belongs to, for the record (1 to 128 printable characters).")
    var caseID: String?

    @Option(name: .long, help: "Hosts captured at once.")
    var parallel = 1

    @Option(name: .long, help: "A YAML file: 'hosts:' lists hosts as [user@]host[:port] or {host, identity, ssh-options}.")
    var config: String?

    @Option(name: .long, help: "Capture a lab of this cache (farm lab up) with its own key and known_hosts.")
    var lab: String?

    @Option(name: .long, help: "The manifest whose keys and cache are the defaults.")
    var manifest = "manifest.yml"

    @Option(name: .long, help: "The cache directory (for --lab).")
    var cache: String?

    func run() throws {
        // Before anything touches a host: a bad record is a typo to fix, not a capture to redo.
        if let operatorName { _ = try CaptureLabel.validated(operatorName, option: "--operator") }
        if let caseID { _ = try CaptureLabel.validated(caseID, option: "--case") }
        var targets: [CaptureTarget] = []
        let pinned: String?
        targets = try hosts.map { try CaptureTarget(parsing: $0, identity: identity, sshOptions: sshOption) }
        if let config { targets += try CaptureTarget.load(config: config, identity: identity, sshOptions: sshOption) }
        if let lab {
            let found = try Labs(cacheDirectory: Session.cacheDirectory(option: cache, manifestPath: manifest)).resolve(lab)
            targets.append(try CaptureTarget(lab: found, sshOptions: sshOption))
        }
        guard !targets.isEmpty else { throw ValidationError("name at least one host, --config FILE or --lab NAME") }
        if gpgNoVerify {
            pinned = nil
        } else {
            guard let trusted = try RepositoryKey.trusted(given: fingerprint, own: Signing.paths(manifestAt: manifest)?.repository) else {
                throw ValidationError("which repository key do you trust? pass --fingerprint (or --gpg-no-verify to check checksums only)")
            }
            pinned = trusted
        }
        Capture.catchInterrupts()
        var capture = Capture(repository: RepositorySource(repo), fingerprint: pinned, output: output) { line in
            FileHandle.standardError.write(Data(("farm: " + line + "\n").utf8))
        }
        capture.compression = compress
        if let operatorName { capture.operatorName = operatorName }
        capture.caseID = caseID
        let results = capture.run(targets, parallel: parallel)
        var failed = 0
        print("host\trelease\tresult\tsize\tMiB/s\timage")
        for (index, target) in targets.enumerated() {
            switch results[index] {
            case let .success(report):
                print("\(target)\t\(report.release)\tok\t\(report.size)\t\(String(format: "%.1f", report.bytesPerSecond / 1_048_576))\t\(report.image)")
            case let .failure(error):
                failed += 1
                print("\(target)\t-\tFAILED\t-\t-\t\(error)")
            }
        }
        // Per image: the command that analyses it, or what is missing for one.
        for case let .success(report) in results {
            if let symbols = report.symbols.symbols {
                print(symbols.command)
            } else if report.symbolsRefused == true {
                failed += 1
                print("\(report.host): error: symbol table refused (\(report.image) is good): \(report.symbolsMissing ?? "")")
            } else {
                print("\(report.host): no symbol table for \(report.release) (\(report.image) is good): \(report.symbolsMissing ?? "")")
            }
        }
        if Capture.wasInterrupted { throw ExitCode(130) }
        if failed > 0 { throw ExitCode(ExitStatus.failure) }
    }
}

extension CaptureCompression: ExpressibleByArgument {}
