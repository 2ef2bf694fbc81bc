import FarmEngine
import FarmKit
import Foundation
import Testing

struct RepositoryFormatTests {
    func module(_ release: String) -> RepositoryModule {
        RepositoryModule(name: "lime-\(release).ko", arch: "x86_64", checksum: SHA256.hash(release).hex, version: release,
                         location: "modules/lime-\(release).ko", signature: "modules/lime-\(release).ko.sig")
    }

    @Test func theManifestListsEveryModuleWithAllNineParts() throws {
        let modules = [module("6.1.0-56-amd64"), module("5.10.0-43-amd64")]
        let xml = RepositoryFormat.primaryXML(modules)
        let text = String(decoding: xml, as: UTF8.self)
        #expect(text.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<modules>\n"))
        for part in ["<module type=\"lime\">", "<name>", "<arch>x86_64</arch>", "<checksum>", "<version>", "<packager>farm</packager>",
                     "<location href=\"modules/", "<signature href=\"modules/", "<platform>linux</platform>"] {
            #expect(text.components(separatedBy: part).count == 3, "\(part) is not there once per module")
        }
        #expect(try RepositoryFormat.parsePrimary(xml, name: "primary.xml") == modules.sorted { $0.version < $1.version })
    }

    /// Margarita Shotgun 0.4.1 reads one `<module>` as a mapping and fails; a lone module is listed twice.
    @Test func aLoneModuleIsListedTwiceForMargaritaShotgun() throws {
        let lone = module("6.12.117+deb12-amd64")
        let parsed = try RepositoryFormat.parsePrimary(RepositoryFormat.primaryXML([lone]), name: "primary.xml")
        #expect(parsed == [lone, lone])
    }

    @Test func repomdCarriesTheChecksumsWithoutAttributes() throws {
        let index = RepositoryIndex(revision: 1_795_376_283, checksum: SHA256.hash("gz").hex, openChecksum: SHA256.hash("xml").hex,
                                    location: "repodata/\(SHA256.hash("xml").hex)-primary.xml.gz", timestamp: 1_795_376_283,
                                    size: 100, openSize: 900)
        let xml = RepositoryFormat.repomdXML(index)
        let text = String(decoding: xml, as: UTF8.self)
        #expect(text.contains("<checksum>\(index.checksum)</checksum>"))
        #expect(text.contains("<open_checksum>\(index.openChecksum)</open_checksum>"))
        #expect(text.contains("<open_size>900</open_size>"))
        #expect(try RepositoryFormat.parseRepomd(xml, name: "repomd.xml") == index)
    }

    @Test func malformedFilesAreRefusedWithWhereAndWhat() throws {
        let broken = #expect(throws: FarmError.self) {
            try RepositoryFormat.parseRepomd(Data("<metadata>\n  <revision>1</revision>\n  <data type=\"primary\">\n</metadata>".utf8),
                                             name: "repo/repodata/repomd.xml")
        }
        #expect(broken?.message.hasPrefix("repo/repodata/repomd.xml:4:") == true, "\(broken?.message ?? "")")
        let noRevision = #expect(throws: FarmError.self) {
            try RepositoryFormat.parseRepomd(Data("<metadata><data type=\"primary\"/></metadata>".utf8), name: "repomd.xml")
        }
        #expect(noRevision?.message.contains("<revision>") == true)
        let missing = #expect(throws: FarmError.self) {
            try RepositoryFormat.parsePrimary(Data("<modules><module type=\"lime\"><name>x.ko</name></module></modules>".utf8), name: "p.xml")
        }
        #expect(missing?.message.contains("module 1 has no <arch>") == true, "\(missing?.message ?? "")")
        for href in ["../etc/passwd", "/etc/passwd", "http://elsewhere/x.ko", "modules//x.ko", ""] {
            #expect(throws: FarmError.self, "\(href)") { try RepositoryFormat.checkRelative(href, name: "p.xml") }
        }
        try RepositoryFormat.checkRelative("modules/lime-6.1.0-56-amd64.ko", name: "p.xml")
    }

    func table(_ release: String, banner: String) -> SymbolTableEntry {
        let file = "debian_\(release)_1_amd64.json.xz"
        return SymbolTableEntry(release: release, arch: "x86_64", family: "debian", banner: Data(banner.utf8).base64EncodedString(),
                                location: "symbols/linux/\(file)", checksum: SHA256.hash(file).hex, signature: "symbols/linux/\(file).sig")
    }

    /// The tables ride in repomd.xml as a second `<data>` entry, which Margarita Shotgun's client
    /// ignores; without tables repomd.xml is what it always was.
    @Test func repomdListsTheSymbolTablesIndexBesideThePrimaryOne() throws {
        var index = RepositoryIndex(revision: 7, checksum: SHA256.hash("gz").hex, openChecksum: SHA256.hash("xml").hex,
                                    location: "repodata/x-primary.xml.gz", timestamp: 7, size: 1, openSize: 2)
        let plain = String(decoding: RepositoryFormat.repomdXML(index), as: UTF8.self)
        #expect(!plain.contains("symbols"))
        #expect(plain.components(separatedBy: "<data type=").count == 2)
        index.symbols = .init(checksum: SHA256.hash("sgz").hex, openChecksum: SHA256.hash("sjson").hex,
                              location: "repodata/y-symbols.json.gz", size: 3, openSize: 4)
        let xml = RepositoryFormat.repomdXML(index)
        #expect(String(decoding: xml, as: UTF8.self).hasPrefix(plain.components(separatedBy: "</metadata>")[0]))
        #expect(try RepositoryFormat.parseRepomd(xml, name: "repomd.xml") == index)
    }

    @Test func theSymbolsIndexRoundTripsAndRefusesPathsOutsideTheRepository() throws {
        let tables = [table("6.1.0-56-amd64", banner: "Linux version 6.1.0-56-amd64 (x) #1\n\0"), table("5.10.0-46-amd64", banner: "Linux version 5.10.0-46-amd64 (y) #1\n\0")]
        let json = try RepositoryFormat.symbolsJSON(tables)
        #expect(try RepositoryFormat.parseSymbols(json, name: "s.json") == tables.sorted { $0.release < $1.release })
        #expect(tables[0].bannerText == "Linux version 6.1.0-56-amd64 (x) #1")
        var escaping = tables[0]
        escaping.location = "../../etc/passwd"
        let refused = #expect(throws: FarmError.self) { try RepositoryFormat.parseSymbols(try RepositoryFormat.symbolsJSON([escaping]), name: "repo/s.json") }
        #expect(refused?.message.contains("'../../etc/passwd' is not a relative path inside the repository") == true, "\(refused?.message ?? "")")
        let newer = #expect(throws: FarmError.self) { try RepositoryFormat.parseSymbols(Data(#"{"version": 2, "tables": []}"#.utf8), name: "s.json") }
        #expect(newer?.message.contains("upgrade farm") == true)
    }

    /// volatility3 opens each URL of banners.json as given, so they are absolute, under the base URL.
    @Test func bannersJSONIsVolatilitysRemoteListWithAbsoluteURLs() throws {
        let entry = table("6.1.0-56-amd64", banner: "Linux version 6.1.0-56-amd64 (x) #1\n\0")
        let json = try RepositoryFormat.bannersJSON([entry], baseURL: "https://example.invalid/repo")
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(object["version"] as? Int == 1)
        let linux = try #require(object["linux"] as? [String: [String]])
        #expect(linux[entry.banner] == ["https://example.invalid/repo/symbols/linux/debian_6.1.0-56-amd64_1_amd64.json.xz"])
    }
}
