import FarmEngine
import Foundation

/// Whether a host loads only modules signed by a key it trusts, from its lockdown mode and
/// `module.sig_enforce`. The kernel's rule (kernel/module/signing.c, `module_sig_check`): a
/// module whose signature verifies against the host's trusted keys always loads; one signed by
/// a key the host does not know loads only when `sig_enforce` is off and lockdown is below
/// `integrity` (both `integrity` and `confidentiality` deny `LOCKDOWN_MODULE_SIGNATURE`), and
/// then only taints the kernel. Confidentiality also blocks /dev/mem, /proc/kcore, kprobes and
/// BPF reads of kernel memory, but not a loaded module's own reads: LiME maps each page with
/// `kmap` and takes only plain (not hardware) module parameters, so a LiME the host trusts
/// captures under either level. Which keys the host trusts farm cannot see from outside, so
/// this says what is needed, never that the module will load.
public struct ModuleLoadPolicy: Sendable, Equatable, Codable {
    public enum Lockdown: String, Sendable, Codable {
        case none, integrity, confidentiality
    }

    /// The active lockdown mode (the bracketed word); nil when the host did not say.
    public var lockdown: Lockdown?
    /// `sig_enforce`; nil when the host did not say.
    public var sigEnforce: Bool?
    /// true: only a module signed by a key the host trusts loads; false: any signature does
    /// (an unknown key taints the kernel); nil: unknown.
    public var needsTrustedKey: Bool?
    /// The facts behind the verdict, for the sidecar and messages.
    public var reason: String

    static let lockdownPath = "/sys/kernel/security/lockdown"
    static let sigEnforcePath = "/sys/module/module/parameters/sig_enforce"

    public init(lockdown lockdownFile: HostFacts.File, sigEnforce sigEnforceFile: HostFacts.File) {
        var notes: [String] = []
        switch lockdownFile {
        case let .text(text):
            // "none [integrity] confidentiality": the active mode is the bracketed one.
            let active = text.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("[") && $0.hasSuffix("]") }
            lockdown = active.flatMap { Lockdown(rawValue: String($0.dropFirst().dropLast())) }
            if lockdown == nil { notes.append("\(Self.lockdownPath) reads '\(text)', which names no known mode") }
        case .absent:
            lockdown = nil
            notes.append("\(Self.lockdownPath) is absent (securityfs not mounted, or a kernel without the lockdown LSM;"
                         + " with Secure Boot, Debian's kernels lock down to integrity)")
        case .unreadable:
            lockdown = nil
            notes.append("\(Self.lockdownPath) is unreadable")
        }
        switch sigEnforceFile {
        case let .text(text):
            sigEnforce = text == "Y" ? true : text == "N" ? false : nil
            if sigEnforce == nil { notes.append("\(Self.sigEnforcePath) reads '\(text)', neither Y nor N") }
        case .absent:
            // Only a kernel without CONFIG_MODULE_SIG lacks it, when /sys is there at all.
            sigEnforce = lockdownFile == .absent ? nil : false
            notes.append("\(Self.sigEnforcePath) is absent (a kernel without CONFIG_MODULE_SIG, or /sys not mounted)")
        case .unreadable:
            sigEnforce = nil
            notes.append("\(Self.sigEnforcePath) is unreadable")
        }
        var facts: [String] = []
        if let lockdown { facts.append("lockdown \(lockdown.rawValue)") }
        if let sigEnforce { facts.append("sig_enforce \(sigEnforce ? "Y" : "N")") }
        if sigEnforce == true || lockdown == .integrity || lockdown == .confidentiality {
            needsTrustedKey = true
        } else if sigEnforce == false, lockdown == Lockdown.none {
            needsTrustedKey = false
        } else {
            needsTrustedKey = nil
        }
        reason = (facts + notes).joined(separator: "; ")
    }

    /// What to do when the host refuses a module signed by a key it does not trust.
    public static let enrollAdvice = "enroll farm's module-signing certificate on the host ('farm keys export -o DIR' writes"
        + " module-signing.der): 'mokutil --import module-signing.der', reboot and confirm it in MokManager; or build it into"
        + " the host's kernel (CONFIG_SYSTEM_TRUSTED_KEYS, module-signing.pem); or boot a kernel without lockdown and"
        + " module.sig_enforce (Secure Boot off)"

    /// The line said before uploading.
    public var summary: String {
        switch needsTrustedKey {
        case true?:
            return "the kernel loads only modules signed by a key it trusts (\(reason)); farm cannot see the host's keys,"
                + " so insmod will tell; if it refuses: " + Self.enrollAdvice
        case false?:
            return "the kernel loads a module signed by any key (\(reason)); one it does not trust taints it"
        case nil:
            return "whether the kernel needs a module signed by a key it trusts is unknown (\(reason))"
        }
    }

    /// insmod's own words when a signature was refused: EKEYREJECTED (sig_enforce), ENOKEY,
    /// EPERM (lockdown's denial).
    static let refusals = ["Key was rejected by service", "Required key not available", "Operation not permitted"]

    /// The error for insmod's output `said`, with the way out when it is a refused signature.
    public func explainInsmod(_ said: String) -> String? {
        guard needsTrustedKey != false, Self.refusals.contains(where: { said.contains($0) }) else { return nil }
        return "the host refused the module's signature (\(reason)): it loads only modules signed by a key it trusts; "
            + Self.enrollAdvice
    }
}
