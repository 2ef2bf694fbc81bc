import Foundation

/// rpm's version ordering (`rpmvercmp` over `[epoch:]version-release`): alternating runs of
/// digits and letters compared one by one, digits numerically and newer than letters, `~` older
/// than anything (even the end), `^` newer than the end but older than anything else.
public enum RPMVersion {
    public static func compare(_ a: String, _ b: String) -> Int {
        let (epochA, versionA, releaseA) = split(a)
        let (epochB, versionB, releaseB) = split(b)
        if epochA != epochB { return epochA < epochB ? -1 : 1 }
        let order = segments(versionA, versionB)
        if order != 0 { return order }
        guard let releaseA, let releaseB else { return 0 }
        return segments(releaseA, releaseB)
    }

    public static func less(_ a: String, _ b: String) -> Bool { compare(a, b) < 0 }

    private static func split(_ text: String) -> (Int, String, String?) {
        var rest = Substring(text)
        var epoch = 0
        if let colon = rest.firstIndex(of: ":"), let number = Int(rest[..<colon]) {
            epoch = number
            rest = rest[rest.index(after: colon)...]
        }
        guard let dash = rest.lastIndex(of: "-") else { return (epoch, String(rest), nil) }
        return (epoch, String(rest[..<dash]), String(rest[rest.index(after: dash)...]))
    }

    /// `rpmvercmp` on one field.
    static func segments(_ a: String, _ b: String) -> Int {
        if a == b { return 0 }
        let x = Array(a.utf8), y = Array(b.utf8)
        var i = 0, j = 0
        func isAlnum(_ c: UInt8) -> Bool { isDigit(c) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) }
        func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }
        let tilde = UInt8(ascii: "~"), caret = UInt8(ascii: "^")
        while i < x.count || j < y.count {
            while i < x.count, !isAlnum(x[i]), x[i] != tilde, x[i] != caret { i += 1 }
            while j < y.count, !isAlnum(y[j]), y[j] != tilde, y[j] != caret { j += 1 }
            let ci = i < x.count ? x[i] : nil, cj = j < y.count ? y[j] : nil
            if ci == tilde || cj == tilde {
                if ci != tilde { return 1 }
                if cj != tilde { return -1 }
                i += 1; j += 1
                continue
            }
            if ci == caret || cj == caret {
                if ci == nil { return -1 }
                if cj == nil { return 1 }
                if ci != caret { return 1 }
                if cj != caret { return -1 }
                i += 1; j += 1
                continue
            }
            guard let first = ci, cj != nil else { break }
            let numeric = isDigit(first)
            let startI = i, startJ = j
            while i < x.count, numeric ? isDigit(x[i]) : (isAlnum(x[i]) && !isDigit(x[i])) { i += 1 }
            while j < y.count, numeric ? isDigit(y[j]) : (isAlnum(y[j]) && !isDigit(y[j])) { j += 1 }
            var one = x[startI..<i], two = y[startJ..<j]
            // A digit run against a letter run: the digits are newer.
            if two.isEmpty { return numeric ? 1 : -1 }
            if numeric {
                while one.first == 0x30 { one = one.dropFirst() }
                while two.first == 0x30 { two = two.dropFirst() }
                if one.count != two.count { return one.count > two.count ? 1 : -1 }
            }
            if !one.elementsEqual(two) { return one.lexicographicallyPrecedes(two) ? -1 : 1 }
        }
        let restI = i < x.count, restJ = j < y.count
        if !restI && !restJ { return 0 }
        return restI ? 1 : -1
    }
}
