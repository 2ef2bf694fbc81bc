import FarmEngine
/// Debian's version ordering (epoch:upstream-revision, `~` before everything, letters before
/// other symbols), as dpkg compares them.
public enum DebianVersion {
    public static func compare(_ a: String, _ b: String) -> Int {
        let (epochA, upstreamA, revisionA) = split(a)
        let (epochB, upstreamB, revisionB) = split(b)
        if epochA != epochB { return epochA < epochB ? -1 : 1 }
        let upstream = compareParts(upstreamA, upstreamB)
        return upstream != 0 ? upstream : compareParts(revisionA, revisionB)
    }

    public static func less(_ a: String, _ b: String) -> Bool { compare(a, b) < 0 }

    private static func split(_ version: String) -> (Int, Substring, Substring) {
        var rest = Substring(version)
        var epoch = 0
        if let colon = rest.firstIndex(of: ":"), let number = Int(rest[..<colon]) {
            epoch = number
            rest = rest[rest.index(after: colon)...]
        }
        if let dash = rest.lastIndex(of: "-") {
            return (epoch, rest[..<dash], rest[rest.index(after: dash)...])
        }
        return (epoch, rest, "")
    }

    /// dpkg's character order: `~` sorts before the end of a part, letters before other symbols.
    private static func order(_ c: UInt8) -> Int {
        if c >= 48 && c <= 57 { return 0 }
        if (c >= 65 && c <= 90) || (c >= 97 && c <= 122) { return Int(c) }
        if c == UInt8(ascii: "~") { return -1 }
        return c == 0 ? 0 : Int(c) + 256
    }

    private static func compareParts(_ a: Substring, _ b: Substring) -> Int {
        let x = Array(a.utf8) + [0], y = Array(b.utf8) + [0]
        var i = 0, j = 0
        func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
        while x[i] != 0 || y[j] != 0 {
            while (x[i] != 0 && !isDigit(x[i])) || (y[j] != 0 && !isDigit(y[j])) {
                let difference = order(x[i]) - order(y[j])
                if difference != 0 { return difference < 0 ? -1 : 1 }
                i += 1
                j += 1
            }
            while x[i] == 48 { i += 1 }
            while y[j] == 48 { j += 1 }
            var firstDifference = 0
            while isDigit(x[i]) && isDigit(y[j]) {
                if firstDifference == 0 { firstDifference = Int(x[i]) - Int(y[j]) }
                i += 1
                j += 1
            }
            if isDigit(x[i]) { return 1 }
            if isDigit(y[j]) { return -1 }
            if firstDifference != 0 { return firstDifference < 0 ? -1 : 1 }
        }
        return 0
    }
}
