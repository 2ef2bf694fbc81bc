import Foundation

extension BuildReport {
    /// Kernels by family, each family's newest first by its package manager's order (the release
    /// when a kernel has no version), families by name.
    func byFamily() -> [(family: String, kernels: [KernelRecord])] {
        Dictionary(grouping: kernels, by: \.family).sorted { $0.key < $1.key }.map { family, kernels in
            let order = Family(rawValue: family) ?? .debian
            return (family, kernels.sorted { a, b in
                let versions = order.compareVersions(a.version ?? a.release, b.version ?? b.release)
                if versions != 0 { return versions > 0 }
                let releases = order.compareVersions(a.release, b.release)
                return releases != 0 ? releases > 0 : a.kernel < b.kernel
            })
        }
    }

    /// `--junit FILE.xml`: one test suite per family, one test case per kernel; a failed kernel is a
    /// failure carrying the reason and the task whose log tells more, a skipped one is skipped.
    public func junit() -> String {
        let e = Markup.escape
        let failures = kernels.filter { $0.state == .failed }.count
        let skipped = kernels.filter { $0.state == .skipped }.count
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        xml += "<testsuites name=\"farm \(e(command))\" tests=\"\(kernels.count)\" failures=\"\(failures)\" errors=\"0\" skipped=\"\(skipped)\" timestamp=\"\(e(started))\">\n"
        for (family, members) in byFamily() {
            xml += "  <testsuite name=\"\(e(family))\" tests=\"\(members.count)\" failures=\"\(members.filter { $0.state == .failed }.count)\""
                + " errors=\"0\" skipped=\"\(members.filter { $0.state == .skipped }.count)\" timestamp=\"\(e(started))\">\n"
            for kernel in members {
                xml += "    <testcase classname=\"\(e(family)).\(e(kernel.upstream))\" name=\"\(e(kernel.kernel))\">\n"
                if let problem = kernel.problem, kernel.state == .failed || kernel.state == .skipped {
                    let text = "\(problem.reason)\nfull log: farm log \(problem.logTask)"
                    let element = kernel.state == .failed ? "failure" : "skipped"
                    xml += "      <\(element) message=\"\(e(problem.reason))\"\(kernel.state == .failed ? " type=\"\(e(problem.logTask))\"" : "")>\(e(text))</\(element)>\n"
                }
                let outputs = kernel.modules.map { "module \($0.file) \($0.state.rawValue)\($0.sha256.map { " sha256 \($0)" } ?? "")" }
                    + (kernel.profile.map { ["profile \($0.state.rawValue)\($0.sha256.map { " sha256 \($0)" } ?? "")"] } ?? [])
                if !outputs.isEmpty { xml += "      <system-out>\(e(outputs.joined(separator: "\n")))</system-out>\n" }
                xml += "    </testcase>\n"
            }
            xml += "  </testsuite>\n"
        }
        return xml + "</testsuites>\n"
    }

    /// `farm report`: one self-contained HTML page (inline CSS, no script), per family which kernels
    /// have a module and a profile, which failed and why, newest first.
    public func html() -> String {
        let e = Markup.escape
        let count = { (state: State) in self.kernels.filter { $0.state == state }.count }
        var page = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8">
        <title>farm: \(e(command)) of \(e(finished))</title>
        <style>
        body{font:14px/1.4 sans-serif;margin:16px;color:#1a1a1a;background:#ffffff}
        h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px}
        table{border-collapse:collapse;width:100%}
        th,td{border:1px solid #c0c0c0;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
        th{background:#eeeeee}
        td.state{color:#ffffff;font-weight:bold;width:6em}
        .built{background:#2e7d32}.cached{background:#1565c0}.failed{background:#c62828}.skipped{background:#9e9e9e}
        .none{color:#757575}
        code{font:12px monospace;word-break:break-all}
        </style></head><body>
        <h1>farm \(e(command)): \(kernels.count) kernels</h1>
        <p class="summary">\(count(.built)) built, \(count(.cached)) cached, \(count(.failed)) failed, \(count(.skipped)) skipped;
        started \(e(started)), finished \(e(finished)), farm \(e(farm))</p>

        """
        for (family, members) in byFamily() {
            page += """
            <h2>\(e(family)) (\(members.count))</h2>
            <table class="family" data-family="\(e(family))">
            <tr><th>kernel</th><th>version</th><th>state</th><th>module</th><th>profile</th><th>why, and the log to read</th></tr>

            """
            for kernel in members {
                let modules = kernel.modules.isEmpty ? "<span class=\"none\">none planned</span>" : kernel.modules.map { module in
                    module.sha256.map { "\(e(module.file)) <code>\(e(String($0.prefix(12))))</code>" + (module.signature != nil ? " signed" : "") }
                        ?? "<span class=\"none\">\(e(module.file)): \(module.state.rawValue)</span>"
                }.joined(separator: "<br>")
                let profile = kernel.profile.map { profile in
                    profile.sha256.map { "<code>\(e(String($0.prefix(12))))</code>" } ?? "<span class=\"none\">\(profile.state.rawValue)</span>"
                } ?? "<span class=\"none\">not asked</span>"
                let why = kernel.problem.map { "\(e($0.reason))<br><code>farm log \(e($0.logTask))</code>" } ?? ""
                page += "<tr class=\"kernel\" data-kernel=\"\(e(kernel.kernel))\" data-state=\"\(kernel.state.rawValue)\">"
                    + "<td>\(e(kernel.kernel))</td><td>\(e(kernel.version ?? ""))</td>"
                    + "<td class=\"state \(kernel.state.rawValue)\">\(kernel.state.rawValue)</td>"
                    + "<td class=\"module\">\(modules)</td><td class=\"profile\">\(profile)</td><td class=\"why\">\(why)</td></tr>\n"
            }
            page += "</table>\n"
        }
        return page + "</body></html>\n"
    }
}
