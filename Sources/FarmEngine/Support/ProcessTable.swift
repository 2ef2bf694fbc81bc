import Foundation

/// This machine's processes, found by their command lines in /proc.
public enum ProcessTable {
    /// Every process whose command line (its arguments joined by NULs) contains `text`, with its
    /// program (the first argument). A zombie has an empty command line, so it is never found.
    public static func processes(mentioning text: String) -> [(pid: Int32, program: String)] {
        let needle = Data(text.utf8)
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = Int32(entry), let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                  cmdline.range(of: needle) != nil else { return nil }
            return (pid, String(decoding: cmdline.prefix { $0 != 0 }, as: UTF8.self))
        }
    }
}
