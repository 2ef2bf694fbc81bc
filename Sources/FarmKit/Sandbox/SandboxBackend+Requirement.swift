import FarmEngine
import Foundation

extension SandboxBackend {
    /// What the backend needs of the machine, checked once before a build runs anything: a sandbox
    /// that cannot start would otherwise fail every compile task one by one.
    public var requirement: Requirement {
        switch self {
        case .bwrap:
            Requirement(id: "sandbox:bwrap") {
                guard let bwrap = Executable.find("bwrap") else {
                    return FarmError.toolMissing(tool: "bwrap", package: "bubblewrap", purpose: "the bwrap sandbox (--sandbox bwrap, the default)")
                }
                // The same namespaces a compile asks for: fails where user namespaces are off.
                let probe = try? Executable.run(bwrap, ["--unshare-all", "--ro-bind", "/", "/", "--", "/bin/true"])
                guard let probe, probe.status == 0 else {
                    return FarmError.environment("bwrap cannot start a sandbox here (\(probe?.stderr.trimmingCharacters(in: .whitespacesAndNewlines) ?? "it did not run")):"
                                            + " enable user namespaces (sysctl kernel.unprivileged_userns_clone=1, or"
                                            + " user.max_user_namespaces > 0), or as root use --sandbox chroot")
                }
                return nil
            }
        case .chroot:
            Requirement(id: "sandbox:chroot") {
                guard geteuid() == 0 else {
                    return FarmError.environment("the chroot sandbox needs root (it mounts and chroots); run farm as root or use --sandbox bwrap")
                }
                guard Executable.find("setpriv") != nil, Executable.find("unshare") != nil else {
                    return FarmError.toolMissing(tool: "setpriv and unshare", package: "util-linux", purpose: "the chroot sandbox")
                }
                return nil
            }
        case .host:
            Requirement(id: "sandbox:host") { nil }
        }
    }
}
