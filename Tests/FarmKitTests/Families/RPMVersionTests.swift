@testable import FarmKit
import Testing

@Suite("rpm's version order")
struct RPMVersionTests {
    /// Cases from rpm's own rpmvercmp tests, and kernel releases a crawl of CentOS 7 compares.
    @Test(arguments: [
        ("1.0", "1.0", 0), ("1.0", "2.0", -1), ("2.0.1", "2.0", 1), ("2.0.1a", "2.0.1", 1),
        ("5.5p1", "5.5p2", -1), ("5.5p10", "5.5p1", 1), ("10xyz", "10.1xyz", -1), ("xyz10", "xyz10.1", -1),
        ("1.0aa", "1.0a", 1), ("1b.fc17", "1.fc17", -1), ("1.0~rc1", "1.0", -1), ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0^", "1.0", 1), ("1.0^git1", "1.01", -1), ("1.0^20160101^git1", "1.0^20160101", 1),
        ("1.0~rc1^git1", "1.0~rc1", 1), ("1.0^git1~pre", "1.0^git1", -1), ("001", "1", 0),
        ("3.10.0-1160.119.1.el7", "3.10.0-1160.el7", 1), ("3.10.0-957.el7", "3.10.0-1160.el7", -1),
        ("1:3.10.0-1.el7", "4.18.0-1.el8", 1), ("4.14.355-277.643.amzn2", "4.14.355-276.639.amzn2", 1),
    ])
    func comparesAsRpmDoes(_ a: String, _ b: String, _ expected: Int) {
        #expect(RPMVersion.compare(a, b) == expected, "\(a) vs \(b)")
        #expect(RPMVersion.compare(b, a) == -expected, "\(b) vs \(a)")
    }
}
