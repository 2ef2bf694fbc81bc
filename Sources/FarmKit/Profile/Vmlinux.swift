import FarmEngine
import Foundation

/// The kernel's own ELF (vmlinux), taken out of its image package: symbol tables are built from
/// it, since distributions no longer ship a usable System.map beside it.
public enum Vmlinux {
    /// The largest vmlinuz member and decompressed vmlinux accepted; Debian's are 7-12 MB and 60-70 MB.
    public static let imageLimit = 256 << 20
    public static let elfLimit = 1 << 30

    /// The decompressed kernel ELF in an image package (.deb or .rpm): Debian/Ubuntu `/boot/vmlinuz-<release>`,
    /// RHEL `/lib/modules/<release>/vmlinuz` (or /boot). Errors name the package and the member.
    public static func extract(package path: String, release: String) throws -> Data {
        let members = ["boot/vmlinuz-\(release)", "lib/modules/\(release)/vmlinuz"]
        let found: (String, Data)?
        do { found = try findMember(members, in: path) } catch let error as FarmError { throw error } catch {
            throw FarmError("package \(path): cannot read it while looking for its vmlinuz: \(error); download it again")
        }
        guard let (member, bzImage) = found else {
            throw FarmError("package \(path): no \(members.map { "/" + $0 }.joined(separator: " or ")) in it; "
                + "is it the image package (linux-image-\(release), or kernel-core) of kernel \(release)?")
        }
        return try decompress(bzImage: bzImage, origin: "package \(path): /\(member)")
    }

    /// The package's `/boot/System.map-<release>` as text, nil when it has none: the symbols of a
    /// kernel whose kallsyms tables farm cannot read (Debian's is a stub from 5.8 on, which
    /// `KernelSymbols.parseMap` refuses).
    public static func systemMap(package path: String, release: String) throws -> String? {
        guard let (_, bytes) = try findMember(["boot/System.map-\(release)"], in: path) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The first of `members` (paths without a leading `./`) found as a regular file: in a .deb's
    /// `data.tar.*`, or in an rpm's payload (libarchive reads an rpm as the cpio inside it).
    private static func findMember(_ members: [String], in path: String) throws -> (String, Data)? {
        let package: Archive.Reader
        do { package = try Archive.Reader(path: path) } catch let error as ArchiveError {
            throw FarmError("package \(path): \(error.message)")
        }
        func wanted(_ entry: Archive.Entry) -> String? {
            var name = Substring(entry.path)
            while let slash = name.firstIndex(where: { $0 != "." && $0 != "/" }), slash != name.startIndex { name = name[slash...] }
            return entry.type == .regular && members.contains(String(name)) ? String(name) : nil
        }
        var isDeb = false
        while let entry = try package.next() {
            if entry.path == "debian-binary" { isDeb = true }
            if isDeb, entry.path.hasPrefix("data.tar") {
                let payload = try Archive.Reader(currentEntryOf: package)
                while let file = try payload.next() {
                    if let name = wanted(file) { return (name, try payload.readData(limit: imageLimit)) }
                }
                return nil
            }
            // An rpm's entries are its files; a .deb's first one is debian-binary.
            if !isDeb, let name = wanted(entry) { return (name, try package.readData(limit: imageLimit)) }
        }
        return nil
    }

    /// A bzImage's payload (setup header 0x248/0x24c), decompressed (xz, zstd, gzip, lzma, lz4, bzip2 as libarchive reads them).
    public static func decompress(bzImage: Data, origin: String) throws -> Data {
        let image = bzImage.startIndex == 0 ? bzImage : Data(bzImage)
        func refuse(_ problem: String) -> FarmError {
            FarmError("\(origin): not a usable bzImage: \(problem); is the file complete (its package's checksum checked)?")
        }
        // Documentation/arch/x86/boot.rst: "HdrS" at 0x202, protocol 2.08+ for the payload fields.
        guard image.count >= 0x250 else { throw refuse("only \(image.count) bytes, shorter than the setup header") }
        func u32(_ at: Int) -> UInt32 { image.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian } }
        func u16(_ at: Int) -> UInt16 { image.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: UInt16.self).littleEndian } }
        guard u32(0x202) == 0x5372_6448 else { throw refuse("no \"HdrS\" boot-protocol signature at 0x202") }
        guard u16(0x206) >= 0x0208 else {
            throw refuse("boot protocol \(u16(0x206) >> 8).\(String(format: "%02d", u16(0x206) & 0xff)) predates the payload fields (2.08)")
        }
        // setup_sects 0 means 4, for old bootloaders' sake.
        let setupSectors = image[0x1f1] == 0 ? 4 : Int(image[0x1f1])
        let protectedModeStart = (setupSectors + 1) * 512
        let payloadOffset = Int(u32(0x248)), payloadLength = Int(u32(0x24c))
        let start = protectedModeStart + payloadOffset
        guard payloadLength > 4, start + payloadLength <= image.count else {
            throw refuse("its payload (\(payloadLength) bytes at \(start)) does not lie inside the file's \(image.count) bytes")
        }
        var payload = image.subdata(in: start..<start + payloadLength)
        // arch/x86/boot/compressed/Makefile appends the decompressed size (size_append) to every
        // format but gzip, whose own trailer carries it; libarchive takes those 4 bytes for a
        // truncated next stream.
        let isGzip = payload.starts(with: [0x1f, 0x8b])
        var expectedSize: Int?
        if !isGzip {
            expectedSize = Int(payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: payloadLength - 4, as: UInt32.self).littleEndian })
            payload.removeLast(4)
        }
        let elf: Data
        do {
            // A damaged trailer must not reserve a gigabyte: kernels compress 4 to 8 times.
            let reserve = expectedSize.flatMap { $0 <= 32 * payload.count ? $0 : nil }
            elf = try Archive.decompress(payload, name: "\(origin): payload", limit: elfLimit, expectedSize: reserve)
        } catch {
            throw FarmError("\(origin): cannot decompress the bzImage's payload (\(payloadLength) bytes at \(start), starting \(payload.prefix(6).map { String(format: "%02x", $0) }.joined())): \(error)")
        }
        guard elf.starts(with: [0x7f, 0x45, 0x4c, 0x46]) else {
            throw FarmError("\(origin): the bzImage's payload decompressed to \(elf.count) bytes that are not an ELF file (no ELF magic); the image is damaged or not an x86 kernel")
        }
        if let expectedSize, elf.count != expectedSize {
            throw FarmError("\(origin): the bzImage's payload decompressed to \(elf.count) bytes, but its trailer says \(expectedSize); the image is damaged")
        }
        return elf
    }
}
