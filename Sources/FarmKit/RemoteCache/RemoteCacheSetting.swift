import Foundation

/// `--remote-cache URL` or the manifest's `remote-cache:`, and whether it is only read.
public struct RemoteCacheSetting: Sendable, Equatable {
    public var url: String?
    public var readOnly: Bool

    public init(url: String? = nil, readOnly: Bool = false) {
        self.url = url
        self.readOnly = readOnly
    }

    /// Why `text` is not a remote cache's URL, or nil when it is one.
    public static func problem(with text: String) -> String? {
        guard let parsed = URL(string: text), let scheme = parsed.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = parsed.host, !host.isEmpty else {
            return "'\(text)' is not an http(s) URL; a remote cache is a server speaking Bazel's HTTP cache protocol (http://host:port/prefix)"
        }
        guard parsed.query == nil, parsed.fragment == nil else {
            return "'\(text)' has a query or fragment; a remote cache's URL is a base that ac/ and cas/ are added to"
        }
        return nil
    }

    /// The cache the flags name, else the manifest's, else none.
    func cache(manifest: Manifest) -> HTTPRemoteCache? {
        (url ?? manifest.remoteCache).map { HTTPRemoteCache(url: $0, readOnly: readOnly) }
    }
}
