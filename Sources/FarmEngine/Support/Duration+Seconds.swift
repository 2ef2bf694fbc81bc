extension Duration {
    /// The duration in seconds, as the figures farm prints and records are kept.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
