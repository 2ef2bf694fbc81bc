import FarmEngine
import CArchive
import Foundation

/// A libarchive failure, naming the archive and, when there is one, the entry.
public struct ArchiveError: Error, CustomStringConvertible, LocalizedError {
    public let archive: String
    public let entry: String?
    public let message: String

    public init(archive: String, entry: String? = nil, message: String) {
        self.archive = archive
        self.entry = entry
        self.message = message
    }

    public var description: String {
        if let entry { return "\(archive): entry '\(entry)': \(message)" }
        return "\(archive): \(message)"
    }

    public var errorDescription: String? { description }
}

/// libarchive behind thrown errors: reading any format it knows (ar, tar with any compression,
/// cpio inside rpm), reading an archive nested in another one's entry, decompressing a raw stream,
/// and writing reproducible tar.gz files. The only file that imports `CArchive`.
public enum Archive {
    public enum EntryType: Sendable, Equatable {
        case regular
        case directory
        case symlink
        case hardlink
        /// Device node, fifo, socket: named for error messages.
        case other(String)
    }

    public struct Entry: Sendable {
        public var path: String
        public var type: EntryType
        /// Permission bits, including setuid, setgid and sticky.
        public var mode: UInt32
        public var size: Int64
        public var symlinkTarget: String?
        public var hardlinkTarget: String?
    }

    // libarchive's AE_IF* values, which are the POSIX ones; the C macros carry casts Swift cannot import.
    fileprivate static let typeMask: UInt32 = 0o170000
    fileprivate static let regularType: UInt32 = 0o100000
    fileprivate static let directoryType: UInt32 = 0o040000
    fileprivate static let symlinkType: UInt32 = 0o120000

    /// Decompresses a whole xz, gzip, zstd, bzip2 (any libarchive filter) stream, such as an apt
    /// `Packages.xz`. Bytes in no compressed format come back unchanged.
    public static func decompress(_ data: Data) throws -> Data {
        if data.isEmpty { return data }
        let reader = try Reader(data: data, name: "compressed stream", raw: true)
        guard try reader.next() != nil else { return Data() }
        return try reader.readData(limit: Int.max)
    }

    /// `decompress` for bytes that came from `name` (a package's member, say), refused past
    /// `limit` bytes so a small bomb cannot fill memory. `expectedSize`, when the caller knows it
    /// (a bzImage's trailer), is reserved at once instead of growing the result chunk by chunk.
    public static func decompress(_ data: Data, name: String, limit: Int, expectedSize: Int? = nil) throws -> Data {
        if data.isEmpty { return data }
        let reader = try Reader(data: data, name: name, raw: true)
        guard try reader.next() != nil else { return Data() }
        return try reader.readData(limit: limit, expectedSize: expectedSize)
    }

    /// Reads an archive entry by entry. Not shareable between threads.
    public final class Reader {
        /// The file name, or what the caller named the bytes, for error messages.
        public let name: String
        private let handle: OpaquePointer
        private var memory: UnsafeMutableRawBufferPointer?
        private var stream: EntryStream?
        private var current: String?
        private var currentSize: Int64 = 0

        public convenience init(path: String) throws {
            try self.init(name: path) { handle in archive_read_open_filename(handle, path, 1 << 16) }
        }

        /// Reads from bytes in memory; `name` says where they came from in errors.
        public convenience init(data: Data, name: String) throws {
            try self.init(data: data, name: name, raw: false)
        }

        /// Reads the archive held in `outer`'s current entry, pulling its bytes from `outer` as
        /// they are needed (a .deb's `data.tar.xz` is never written out). `outer` must not move to
        /// its next entry while this reader is in use.
        public convenience init(currentEntryOf outer: Reader) throws {
            let stream = EntryStream(outer: outer)
            try self.init(name: "\(outer.name): \(outer.current ?? "entry")") { handle in
                archive_read_open(handle, Unmanaged.passUnretained(stream).toOpaque(), nil, { _, context, block in
                    let stream = Unmanaged<EntryStream>.fromOpaque(context!).takeUnretainedValue()
                    let count = archive_read_data(stream.outer.handle, stream.buffer, EntryStream.capacity)
                    if count < 0 {
                        stream.failure = stream.outer.libarchiveMessage
                        return -1
                    }
                    block?.pointee = UnsafeRawPointer(stream.buffer)
                    return count
                }, nil)
            }
            self.stream = stream
        }

        fileprivate convenience init(data: Data, name: String, raw: Bool) throws {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(data.count, 1), alignment: 16)
            data.copyBytes(to: memory)
            do {
                try self.init(name: name, raw: raw) { handle in
                    archive_read_open_memory(handle, memory.baseAddress, data.count)
                }
            } catch {
                memory.deallocate()
                throw error
            }
            self.memory = memory
        }

        private init(name: String, raw: Bool = false, open: (OpaquePointer) -> Int32) throws {
            guard let handle = archive_read_new() else {
                throw ArchiveError(archive: name, message: "libarchive could not allocate a reader (out of memory)")
            }
            self.name = name
            self.handle = handle
            archive_read_support_filter_all(handle)
            if raw {
                archive_read_support_format_raw(handle)
            } else {
                archive_read_support_format_all(handle)
            }
            // Thrown once every property is set, so deinit frees the handle.
            if open(handle) != ARCHIVE_OK {
                let message = libarchiveMessage
                throw ArchiveError(archive: name, message: "cannot open: \(message); is it a complete archive in a format libarchive reads?")
            }
        }

        deinit {
            archive_read_free(handle)
            memory?.deallocate()
        }

        /// The next entry's header, or nil at the end. Its data is read with `readData` or
        /// `writeData`, or skipped by calling `next` again.
        public func next() throws -> Entry? {
            var entry: OpaquePointer?
            let status = archive_read_next_header(handle, &entry)
            if status == ARCHIVE_EOF {
                current = nil
                return nil
            }
            guard status >= ARCHIVE_WARN, let entry else {
                let place = current.map { "the entry after '\($0)'" } ?? "the first entry"
                throw ArchiveError(archive: name, message: "cannot read \(place): \(failureMessage); the archive is damaged or truncated")
            }
            guard let pathname = archive_entry_pathname(entry) else {
                throw ArchiveError(archive: name, message: "an entry after '\(current ?? "the start")' has a name that cannot be decoded")
            }
            let path = String(cString: pathname)
            current = path
            currentSize = archive_entry_size_is_set(entry) != 0 ? archive_entry_size(entry) : 0
            let hardlink = archive_entry_hardlink(entry).map { String(cString: $0) }
            let symlink = archive_entry_symlink(entry).map { String(cString: $0) }
            let type: EntryType
            switch UInt32(archive_entry_filetype(entry)) & Archive.typeMask {
            case _ where hardlink != nil: type = .hardlink
            case Archive.regularType: type = .regular
            case Archive.directoryType: type = .directory
            case Archive.symlinkType: type = .symlink
            case 0o020000: type = .other("character device")
            case 0o060000: type = .other("block device")
            case 0o010000: type = .other("fifo")
            case 0o140000: type = .other("socket")
            case let unknown: type = .other("file of unknown type 0o\(String(unknown, radix: 8))")
            }
            return Entry(path: path, type: type, mode: UInt32(archive_entry_perm(entry)) & 0o7777,
                         size: currentSize,
                         symlinkTarget: symlink, hardlinkTarget: hardlink)
        }

        /// The current entry's size as its header gives it (a sparse entry's includes its holes).
        public var currentEntrySize: Int64 { currentSize }

        /// The current entry's data, refused when it passes `limit` bytes.
        public func readData(limit: Int, expectedSize: Int? = nil) throws -> Data {
            var data = Data()
            data.reserveCapacity(Int(min(max(Int64(expectedSize ?? 0), currentSize, 0), Int64(limit))))
            let chunk = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)
            defer { chunk.deallocate() }
            while true {
                let count = archive_read_data(handle, chunk, 1 << 16)
                if count == 0 { return data }
                guard count > 0 else {
                    throw ArchiveError(archive: name, entry: current, message: "cannot read the data: \(failureMessage)")
                }
                guard data.count + count <= limit else {
                    throw ArchiveError(archive: name, entry: current, message: "the data is larger than the \(limit) bytes expected")
                }
                data.append(chunk.assumingMemoryBound(to: UInt8.self), count: count)
            }
        }

        /// Streams the current entry's data into an open file, holes of a sparse entry included.
        public func writeData(to descriptor: Int32) throws {
            guard archive_read_data_into_fd(handle, descriptor) >= ARCHIVE_WARN else {
                throw ArchiveError(archive: name, entry: current, message: "cannot extract the data: \(failureMessage)")
            }
            // libarchive skips a hole by seeking, which never extends a file: a sparse entry that
            // ends in a hole would come out short. The entry's size is the file's.
            var info = stat()
            guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG, Int64(info.st_size) < currentSize else { return }
            guard ftruncate(descriptor, off_t(currentSize)) == 0 else {
                throw ArchiveError(archive: name, entry: current, message: "cannot extend the file to its \(currentSize) bytes: \(String(cString: strerror(errno)))")
            }
        }

        fileprivate var libarchiveMessage: String { Archive.message(handle) }

        /// For a nested archive, the outer archive's failure explains more than "read callback failed".
        private var failureMessage: String { stream?.failure ?? libarchiveMessage }
    }

    /// libarchive's text, with the system's reason when the failure was the system's ("Failed to
    /// open 'x'" alone does not say why).
    fileprivate static func message(_ handle: OpaquePointer) -> String {
        let text = archive_error_string(handle).map { String(cString: $0) } ?? "unknown libarchive error"
        let code = archive_errno(handle)
        // libarchive's private archive_platform.h codes bad data EILSEQ and misuse EINVAL on Linux;
        // their strerror text would mislead.
        guard code > 0, code != EILSEQ, code != EINVAL else { return text }
        return "\(text): \(String(cString: strerror(code)))"
    }

    /// The state a nested archive's read callback needs: the outer reader and a buffer.
    private final class EntryStream {
        static let capacity = 1 << 16
        let outer: Reader
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: EntryStream.capacity, alignment: 16)
        var failure: String?

        init(outer: Reader) { self.outer = outer }
        deinit { buffer.deallocate() }
    }

    /// Writes a tar.gz whose bytes depend only on what is added, in the order added: pax-restricted
    /// tar (plain ustar unless a name or link needs more), owner root 0:0, one fixed mtime, and a
    /// gzip header with no file name and a zero MTIME.
    public final class Writer {
        public let path: String
        /// Every entry's mtime: the Unix epoch.
        public static let modificationTime = 0
        private let handle: OpaquePointer
        private let entry: OpaquePointer
        private var finished = false

        public init(tarGzipAt path: String) throws {
            guard let handle = archive_write_new(), let entry = archive_entry_new() else {
                throw ArchiveError(archive: path, message: "libarchive could not allocate a writer (out of memory)")
            }
            self.path = path
            self.handle = handle
            self.entry = entry
            // zlib's level 9 took twice as long as level 6 for 0.9% smaller output on a 120 MB tar
            // of C headers (/usr/include); bundles are built by the thousand, so 6.
            let setup: [(String, () -> Int32)] = [
                ("select the pax-restricted tar format", { archive_write_set_format_pax_restricted(handle) }),
                ("add the gzip filter", { archive_write_add_filter_gzip(handle) }),
                ("set gzip compression level 6", { archive_write_set_filter_option(handle, "gzip", "compression-level", "6") }),
                // The option "!timestamp" (a NULL value) makes libarchive write MTIME 0 instead of the current time.
                ("turn off the gzip timestamp", { archive_write_set_filter_option(handle, "gzip", "timestamp", nil) }),
                ("create the file", { archive_write_open_filename(handle, path) }),
            ]
            // Thrown once every property is set, so deinit frees the handle and the entry.
            for (step, call) in setup where call() != ARCHIVE_OK {
                throw ArchiveError(archive: path, message: "cannot \(step): \(message)")
            }
        }

        /// A plain tar (no compression) kept in memory, in `bytes` once `finish` returned, or
        /// handed to `gzip` as it is written. The same format and entry fields as `tarGzipAt`.
        public init(tarInMemoryNamed name: String, gzip: Deflate.GzipWriter? = nil) throws {
            guard let handle = archive_write_new(), let entry = archive_entry_new() else {
                throw ArchiveError(archive: name, message: "libarchive could not allocate a writer (out of memory)")
            }
            self.path = name
            self.handle = handle
            self.entry = entry
            let sink = MemorySink()
            sink.gzip = gzip
            self.sink = sink
            let setup: [(String, () -> Int32)] = [
                ("select the pax-restricted tar format", { archive_write_set_format_pax_restricted(handle) }),
                ("open the archive in memory", {
                    archive_write_open(handle, Unmanaged.passUnretained(sink).toOpaque(), nil, { _, context, buffer, length in
                        let sink = Unmanaged<MemorySink>.fromOpaque(context!).takeUnretainedValue()
                        if let buffer, length > 0 {
                            let bytes = UnsafeRawBufferPointer(start: buffer, count: length)
                            if let gzip = sink.gzip { gzip.append(bytes) } else { sink.bytes.append(contentsOf: bytes) }
                        }
                        return la_ssize_t(length)
                    }, nil)
                }),
            ]
            for (step, call) in setup where call() != ARCHIVE_OK {
                throw ArchiveError(archive: name, message: "cannot \(step): \(message)")
            }
        }

        /// The archive written by `tarInMemoryNamed`, complete after `finish`.
        public var bytes: [UInt8] { sink?.bytes ?? [] }

        private var sink: MemorySink?

        private final class MemorySink {
            var bytes: [UInt8] = []
            var gzip: Deflate.GzipWriter?
        }

        deinit {
            archive_entry_free(entry)
            archive_write_free(handle)
        }

        public func addDirectory(_ name: String, mode: UInt32) throws {
            try writeHeader(name, type: Archive.directoryType, mode: mode, size: 0)
        }

        public func addSymlink(_ name: String, target: String) throws {
            try writeHeader(name, type: Archive.symlinkType, mode: 0o777, size: 0) { archive_entry_set_symlink($0, target) }
        }

        public func addFile(_ name: String, mode: UInt32, contents: Data) throws {
            try writeHeader(name, type: Archive.regularType, mode: mode, size: Int64(contents.count))
            try contents.withUnsafeBytes { bytes in
                if bytes.count > 0 { try writeData(name, bytes.baseAddress!, bytes.count) }
            }
        }

        /// Adds a regular file's bytes, read from `source` (which must not be a symlink).
        public func addFile(_ name: String, mode: UInt32, from source: String) throws {
            let fd = open(source, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { throw FileSystemError.io(operation: "open", path: source, errno: errno) }
            defer { close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw FileSystemError.io(operation: "stat", path: source, errno: errno) }
            try writeHeader(name, type: Archive.regularType, mode: mode, size: Int64(info.st_size))
            let chunk = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { chunk.deallocate() }
            var total: Int64 = 0
            while true {
                let count = read(fd, chunk, 1 << 20)
                if count < 0 {
                    if errno == EINTR { continue }
                    throw FileSystemError.io(operation: "read", path: source, errno: errno)
                }
                if count == 0 { break }
                try writeData(name, chunk, count)
                total += Int64(count)
            }
            guard total == Int64(info.st_size) else {
                throw ArchiveError(archive: path, entry: name, message: "\(source) changed size while it was archived; build again")
            }
        }

        /// Writes the gzip trailer and closes the file; without it the archive is incomplete.
        public func finish() throws {
            guard !finished else { return }
            finished = true
            guard archive_write_close(handle) == ARCHIVE_OK else {
                throw ArchiveError(archive: path, message: "cannot finish the archive: \(message)")
            }
        }

        private var message: String { Archive.message(handle) }

        private func writeHeader(_ name: String, type: UInt32, mode: UInt32, size: Int64,
                                 extra: (OpaquePointer) -> Void = { _ in }) throws {
            archive_entry_clear(entry)
            archive_entry_set_pathname(entry, name)
            archive_entry_set_filetype(entry, type)
            archive_entry_set_perm(entry, mode)
            archive_entry_set_uid(entry, 0)
            archive_entry_set_gid(entry, 0)
            archive_entry_set_uname(entry, "root")
            archive_entry_set_gname(entry, "root")
            archive_entry_set_mtime(entry, time_t(Writer.modificationTime), 0)
            archive_entry_set_size(entry, size)
            extra(entry)
            guard archive_write_header(handle, entry) == ARCHIVE_OK else {
                throw ArchiveError(archive: path, entry: name, message: "cannot write the header: \(message)")
            }
        }

        private func writeData(_ name: String, _ bytes: UnsafeRawPointer, _ count: Int) throws {
            var offset = 0
            while offset < count {
                let written = archive_write_data(handle, bytes + offset, count - offset)
                guard written > 0 else {
                    throw ArchiveError(archive: path, entry: name, message: "cannot write the data: \(message)")
                }
                offset += written
            }
        }
    }

    /// `data` as one xz stream (as `xz -T1 -<level>` writes it: the same bytes for the same input).
    public static func compressXZ(_ data: Data, name: String, level: Int = 6) throws -> Data {
        guard let handle = archive_write_new(), let entry = archive_entry_new() else {
            throw ArchiveError(archive: name, message: "libarchive could not allocate a writer (out of memory)")
        }
        defer {
            archive_entry_free(entry)
            archive_write_free(handle)
        }
        final class Sink { var bytes = Data() }
        let sink = Sink()
        func check(_ step: String, _ status: Int32) throws {
            guard status >= ARCHIVE_OK else {
                throw ArchiveError(archive: name, message: "cannot \(step): \(archive_error_string(handle).map { String(cString: $0) } ?? "unknown error")")
            }
        }
        try check("select the raw format", archive_write_set_format_raw(handle))
        try check("add the xz filter", archive_write_add_filter_xz(handle))
        try check("set the xz level", archive_write_set_filter_option(handle, "xz", "compression-level", "\(level)"))
        // No padding of the last block: the file is the xz stream alone.
        try check("set the block size", archive_write_set_bytes_in_last_block(handle, 1))
        try check("open the stream in memory", archive_write_open(handle, Unmanaged.passUnretained(sink).toOpaque(), nil, { _, context, buffer, length in
            let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
            if let buffer, length > 0 { sink.bytes.append(buffer.assumingMemoryBound(to: UInt8.self), count: length) }
            return la_ssize_t(length)
        }, nil))
        archive_entry_set_pathname(entry, "data")
        archive_entry_set_filetype(entry, regularType)
        archive_entry_set_size(entry, la_int64_t(data.count))
        try check("write the header", archive_write_header(handle, entry))
        try data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = archive_write_data(handle, buffer.baseAddress! + offset, buffer.count - offset)
                guard written > 0 else { try check("compress", written < 0 ? Int32(written) : ARCHIVE_FATAL); return }
                offset += written
            }
        }
        try check("finish the stream", archive_write_close(handle))
        return sink.bytes
    }
}
