public enum FarmVersion {
    public static let current = "0.1.0"
}
