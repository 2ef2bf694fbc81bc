import FarmEngine
import Foundation

extension SandboxBackend {
    /// What the backend needs of the machine, checked once before a build runs anything: a sandbox
    /// that cannot start would otherwise fail every compile task one by one.
    public var requirement: Requirement {
        switch self {
        case .bwrap:
            Requirement(id: "sandbox:bwrap") {
                let bwrap: String
                do { bwrap = try Sandbox.bwrapTool() } catch { return error }
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
                do { _ = try Sandbox.chrootTools() } catch { return error }
                return nil
            }
        case .host:
            Requirement(id: "sandbox:host") { nil }
        }
    }
}
