/// A manifest of synthetic kernels, for the tests and the benchmark that go through the product's
/// manifest. Plain text: it needs nothing of the product to write.
public enum SyntheticManifest {
    /// `count` kernels (`SyntheticKernel.numbered`) with two pinned packages each.
    public static func text(kernels count: Int, toolchains: Int = 3, failing: Set<Int> = []) -> String {
        text(SyntheticKernel.numbered(count, toolchains: toolchains, failing: failing))
    }

    public static func text(_ kernels: [SyntheticKernel]) -> String {
        var text = """
        farm: 1
        upstreams:
          synthetic:
            kind: apt
            mirror: apt
            suites: [bookworm]
        kernels:

        """
        for (index, kernel) in kernels.enumerated() {
            text += """
              - release: \(kernel.release)
                upstream: synthetic
                toolchain: \(kernel.toolchain)
                packages:

            """
            for (number, package) in kernel.packages.enumerated() {
                text += """
                      - url: \(package.url)
                        sha256: \(package.sha256.hex)
                        size: \(1000 * (number + 1) + index)

                """
            }
        }
        return text
    }
}
