import FarmEngine
import Foundation

public struct OpenPGPError: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    /// A well-formed signature by the pinned key over other bytes: the file or its signature was changed.
    public let badSignature: Bool
    public init(_ message: String, badSignature: Bool = false) {
        self.message = message
        self.badSignature = badSignature
    }
    public var description: String { message }
    public var errorDescription: String? { message }
}

/// OpenPGP through the gpg binary, each use in its own isolated GNUPGHOME (never the user's
/// keyring), read through `--status-fd`. farm writes no OpenPGP itself.
public enum GnuPG {
    static func gpg() throws -> String {
        guard let path = Executable.find("gpg") else {
            throw FarmError.toolMissing(tool: "gpg", package: "gnupg", purpose: "OpenPGP signing and checking of the repository")
        }
        return path
    }

    /// Whether gpg is installed, checked before anything is made with it.
    public static func requireTool() throws { _ = try gpg() }

    /// Where a throw-away GNUPGHOME goes. One that will hold a private key lives beside the key
    /// (`<keys>/.g/`, mode 0700), never in a shared temporary directory, so a killed farm leaves
    /// no key material where others look; one that holds public keys only goes to `$TMPDIR`.
    enum Place {
        case secret(keyHome: String)
        case publicOnly
    }

    /// gpg-agent puts its sockets in the home (no /run/user/<uid> here, since we may run as root
    /// without a login session), and a socket path has 108 bytes: the longest one is
    /// `<home>/S.gpg-agent.browser`, and mkdtemp adds 7 bytes to the base.
    static func fits(_ base: String) -> Bool { base.utf8.count + 7 + "/S.gpg-agent.browser".utf8.count < 108 }

    /// The directory scratch homes of `place` go in, made mode 0700 when farm makes it.
    static func base(for place: Place) throws -> String {
        switch place {
        case .publicOnly:
            return fits(temporaryDirectory + "/farm-gpg-pub") ? temporaryDirectory : "/tmp"
        case let .secret(keyHome):
            let beside = (keyHome as NSString).deletingLastPathComponent + "/.g"
            // A keys path too long for the agent's socket: a 0700 directory in a place only this
            // user can write (the login session's runtime directory, or /run for root), still
            // never world-readable and still swept for leftovers like the one beside the keys.
            let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"].map { $0 + "/farm-gpg" }
            let candidates = [beside, runtime, getuid() == 0 ? "/run/farm-gpg" : nil].compactMap { $0 }
            guard let base = candidates.first(where: fits) else {
                throw OpenPGPError("the keys directory \((keyHome as NSString).deletingLastPathComponent) has too long a path for"
                                   + " gpg-agent's socket (108 bytes) and there is no XDG_RUNTIME_DIR; move the keys to a shorter path")
            }
            try ModuleKey.makePrivateDirectory(base)
            return base
        }
    }

    static func prefix(for place: Place) -> String {
        if case .publicOnly = place { return "farm-gpg-pub-" }
        return ""
    }

    /// A throw-away GNUPGHOME (mode 0700) at `place`; its agent is stopped and the directory
    /// removed when `body` returns. The home is flock'ed while in use: homes left by a killed
    /// farm are the unlocked ones, and each new home first removes those (and stops their agents).
    static func withHome<T>(_ place: Place, copying source: String? = nil, entries: [String] = ["pubring.kbx", "trustdb.gpg", "private-keys-v1.d"],
                            _ body: (String) throws -> T) throws -> T {
        let base = try base(for: place)
        let prefix = prefix(for: place)
        removeAbandonedHomes(in: base, prefix: prefix)
        let (home, lock) = try makeLockedHome(base + "/" + prefix + "XXXXXX")
        defer {
            stopAgents(home)
            close(lock)
        }
        if let source {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: source)) ?? [] where entries.contains(entry) {
                try FileManager.default.copyItem(atPath: source + "/" + entry, toPath: home + "/" + entry)
            }
        }
        return try body(home)
    }

    /// mkdtemp, then an exclusive flock on the new directory; retried when another farm's sweep
    /// removed it between the two (it saw it unlocked).
    static func makeLockedHome(_ template: String) throws -> (String, Int32) {
        for _ in 0..<5 {
            let home = try makeTemporaryDirectory(template)
            let lock = open(home, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard lock >= 0 else { continue }
            flock(lock, LOCK_EX)
            var held = stat(), named = stat()
            if fstat(lock, &held) == 0, stat(home, &named) == 0, held.st_ino == named.st_ino { return (home, lock) }
            close(lock)
        }
        throw OpenPGPError("could not make a GnuPG home under \((template as NSString).deletingLastPathComponent)")
    }

    /// Removes the homes under `base` that no live farm holds (a killed one's), stopping their agents first.
    static func removeAbandonedHomes(in base: String, prefix: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
        where entry.hasPrefix(prefix) && entry.utf8.count == prefix.utf8.count + 6 {
            let home = base + "/" + entry
            let lock = open(home, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
            guard lock >= 0 else { continue }
            defer { close(lock) }
            guard flock(lock, LOCK_EX | LOCK_NB) == 0 else { continue }
            stopAgents(home)
        }
    }

    /// Stops the agent gpg started for `home`, waits until no process of it is left, and removes
    /// the directory (the agent's sockets vanish as it exits, so removal is retried).
    static func stopAgents(_ home: String) {
        if let gpgconf = Executable.find("gpgconf") { _ = try? Executable.run(gpgconf, ["--homedir", home, "--kill", "all"]) }
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline, processUsing(home) { usleep(20_000) }
        for _ in 0..<50 {
            try? FileManager.default.removeItem(atPath: home)
            if !FileManager.default.fileExists(atPath: home) { return }
            usleep(20_000)
        }
    }

    /// Whether a process's command line names `home` (the agent runs as `gpg-agent --homedir HOME`).
    static func processUsing(_ home: String) -> Bool { !ProcessTable.processes(mentioning: home).isEmpty }

    /// A private scratch directory (mode 0700) under `$TMPDIR`, removed when `body` returns.
    public static func withScratch<T>(_ body: (String) throws -> T) throws -> T {
        let directory = try makeTemporaryDirectory(temporaryDirectory + "/farm-XXXXXX")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try body(directory)
    }

    /// `$TMPDIR` (else /tmp), without a trailing slash.
    static var temporaryDirectory: String {
        let directory = NSTemporaryDirectory()
        return directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
    }

    /// `mkdtemp(template)`: a new directory of mode 0700.
    static func makeTemporaryDirectory(_ template: String) throws -> String {
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { throw FileSystemError.io(operation: "mkdtemp", path: template, errno: errno) }
        return String(cString: made)
    }

    /// Runs gpg in `home` without a terminal; returns the status lines (`[GNUPG:] ...` without the prefix).
    static func run(home: String, _ arguments: [String]) throws -> (status: Int32, lines: [String], stderr: String) {
        let result = try Executable.run(try gpg(), ["--homedir", home, "--batch", "--no-tty", "--status-fd", "1",
                                                    "--pinentry-mode", "loopback", "--passphrase", ""] + arguments,
                                        environment: ["PATH": "/usr/bin:/bin", "GNUPGHOME": home, "LC_ALL": "C"])
        let lines = result.stdout.split(separator: "\n").compactMap { line in
            line.hasPrefix("[GNUPG:] ") ? String(line.dropFirst(9)) : nil
        }
        return (result.status, lines, result.stderr)
    }

    static func tail(_ text: String) -> String {
        text.split(separator: "\n").suffix(3).joined(separator: "; ")
    }

    // MARK: keys

    /// Makes a signing-only key in a fresh home and moves that home to `directory` (mode 0700).
    /// Returns the key's fingerprint (40 uppercase hex).
    public static func generateKey(into directory: String, uid: String, algorithm: String) throws -> String {
        guard !FileManager.default.fileExists(atPath: directory) else {
            throw FarmError.badInput("\(directory) exists already; move it away to make a new repository key")
        }
        try ModuleKey.makePrivateDirectory((directory as NSString).deletingLastPathComponent)
        let staging = directory + ".new-\(getpid())"
        try? FileManager.default.removeItem(atPath: staging)
        let fingerprint: String = try withHome(.secret(keyHome: directory)) { home in
            let made = try run(home: home, ["--quick-generate-key", uid, algorithm, "sign", "never"])
            guard made.status == 0, let created = made.lines.first(where: { $0.hasPrefix("KEY_CREATED ") }),
                  let fingerprint = created.split(separator: " ").last else {
                throw OpenPGPError("gpg could not make the repository key (\(algorithm)): \(tail(made.stderr))")
            }
            try ModuleKey.makePrivateDirectory(staging)
            for entry in ["pubring.kbx", "trustdb.gpg", "private-keys-v1.d"]
            where FileManager.default.fileExists(atPath: home + "/" + entry) {
                try FileManager.default.copyItem(atPath: home + "/" + entry, toPath: staging + "/" + entry)
            }
            return String(fingerprint).uppercased()
        }
        try AtomicFile.rename(staging, to: directory)
        return fingerprint
    }

    /// The ASCII-armored public key of `fingerprint` from the key home `directory`.
    public static func exportPublicKey(from directory: String, fingerprint: String) throws -> Data {
        // The public keyring alone: exporting needs no private key.
        try withHome(.publicOnly, copying: directory, entries: ["pubring.kbx", "trustdb.gpg"]) { home in
            let result = try Executable.run(try gpg(), ["--homedir", home, "--batch", "--armor", "--export", fingerprint],
                                            environment: ["PATH": "/usr/bin:/bin", "GNUPGHOME": home, "LC_ALL": "C"])
            guard result.status == 0, result.stdout.contains("BEGIN PGP PUBLIC KEY BLOCK") else {
                throw OpenPGPError("gpg could not export the key \(fingerprint) from \(directory): \(tail(result.stderr))")
            }
            return Data(result.stdout.utf8)
        }
    }

    /// The fingerprints and user ids of the keys in an armored public key.
    public static func inspect(publicKey: Data) throws -> [(fingerprint: String, uids: [String])] {
        try withHome(.publicOnly) { home in
            let file = home + "/key.asc"
            try publicKey.write(to: URL(fileURLWithPath: file))
            let result = try Executable.run(try gpg(), ["--homedir", home, "--batch", "--with-colons", "--show-keys", file],
                                            environment: ["PATH": "/usr/bin:/bin", "GNUPGHOME": home, "LC_ALL": "C"])
            guard result.status == 0 else { throw OpenPGPError("not an OpenPGP public key: \(tail(result.stderr))") }
            var keys: [(fingerprint: String, uids: [String])] = []
            var expectFingerprint = false
            for line in result.stdout.split(separator: "\n") {
                let fields = line.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                switch fields.first {
                case "pub": expectFingerprint = true
                case "fpr" where expectFingerprint && fields.count > 9:
                    keys.append((fields[9].uppercased(), []))
                    expectFingerprint = false
                case "uid" where !keys.isEmpty && fields.count > 9:
                    keys[keys.count - 1].uids.append(fields[9].replacingOccurrences(of: "\\x3a", with: ":"))
                default: break
                }
            }
            return keys
        }
    }

    // MARK: signatures

    /// A binary detached signature of `file` by `fingerprint`, made in a copy of the key home.
    public static func detachSign(file: String, output: String, keyHome: String, fingerprint: String) throws {
        try withHome(.secret(keyHome: keyHome), copying: keyHome) { home in
            let result = try run(home: home, ["--local-user", fingerprint, "--digest-algo", "SHA256",
                                              "--output", output, "--detach-sign", file])
            guard result.status == 0, result.lines.contains(where: { $0.hasPrefix("SIG_CREATED ") }) else {
                throw OpenPGPError("gpg could not sign \((file as NSString).lastPathComponent) with the repository key \(fingerprint)"
                                   + " from \(keyHome): \(tail(result.stderr))")
            }
        }
    }

    /// Checks a detached signature against one pinned key: the key file must hold the key with
    /// that fingerprint, and the signature must be good and made by it (or its subkey).
    public static func verify(signature: String, of file: String, publicKey: Data, fingerprint: String) throws {
        try withVerifier(publicKey: publicKey, fingerprint: fingerprint) { try $0.check(signature: signature, of: file) }
    }

    /// A home holding only the pinned key, for checking many signatures.
    public static func withVerifier<T>(publicKey: Data, fingerprint: String, _ body: (Verifier) throws -> T) throws -> T {
        let pinned = fingerprint.uppercased().replacingOccurrences(of: " ", with: "")
        return try withHome(.publicOnly) { home in
            let keyFile = home + "/pinned.asc"
            try publicKey.write(to: URL(fileURLWithPath: keyFile))
            let imported = try run(home: home, ["--import", keyFile])
            // IMPORT_OK <reason> <fingerprint>
            let found = imported.lines.filter { $0.hasPrefix("IMPORT_OK ") }.compactMap { $0.split(separator: " ").last.map { $0.uppercased() } }
            guard found.contains(pinned) else {
                throw OpenPGPError(found.isEmpty ? "it holds no OpenPGP public key (the pinned key is \(pinned))"
                                   : "it holds the key \(found.joined(separator: ", ")), not the pinned key \(pinned)")
            }
            return try body(Verifier(home: home, pinned: pinned))
        }
    }

    public struct Verifier: Sendable {
        let home: String
        let pinned: String

        public func check(signature: String, of file: String) throws {
            let checked = try run(home: home, ["--verify", signature, file])
            // VALIDSIG <signing key fpr> <date> <time> <expire> <ver> <reserved> <pk algo> <hash algo> <class> <primary fpr>
            let valid = checked.lines.first { $0.hasPrefix("VALIDSIG ") }?.split(separator: " ").map(String.init) ?? []
            let signer = valid.count >= 11 ? valid[10].uppercased() : (valid.count >= 2 ? valid[1].uppercased() : "")
            guard checked.status == 0, signer == pinned else {
                if checked.lines.contains(where: { $0.hasPrefix("BADSIG ") }) {
                    throw OpenPGPError("bad signature: the file does not match its signature", badSignature: true)
                }
                if checked.lines.contains(where: { $0.hasPrefix("ERRSIG ") || $0.hasPrefix("NO_PUBKEY ") }) || !signer.isEmpty {
                    throw OpenPGPError("the signature was not made by the pinned key \(pinned)")
                }
                if checked.lines.contains(where: { $0.hasPrefix("NODATA ") }) {
                    throw OpenPGPError("not an OpenPGP signature")
                }
                throw OpenPGPError("the signature does not check out against \(pinned): \(tail(checked.stderr))")
            }
        }
    }
}
