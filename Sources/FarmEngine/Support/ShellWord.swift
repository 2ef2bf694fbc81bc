extension String {
    /// The string as one word for a POSIX shell, whatever it holds: single-quoted, each `'`
    /// written as `'\''`. Every word farm hands to a shell (on a captured host, in the chroot
    /// launcher) goes through this.
    public var shellQuoted: String { "'" + replacingOccurrences(of: "'", with: "'\\''") + "'" }
}
