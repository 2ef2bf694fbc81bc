import CSQLite
import Foundation

public struct DatabaseError: Error, CustomStringConvertible, LocalizedError {
    public let path: String
    public let message: String
    public var description: String { "\(path): sqlite: \(message)" }
    public var errorDescription: String? { description }
}

// SQLITE_TRANSIENT tells SQLite to copy bound text; the C macro does not import into Swift.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

/// The one file that calls SQLite: a connection, prepared statements, and errors as thrown values.
public final class Database: @unchecked Sendable {
    private var handle: OpaquePointer?
    public let path: String
    private var statements: [String: Statement] = [:]
    private let lock = NSRecursiveLock()

    /// `immutable`: the file cannot change while open (a cache on a read-only file system, or one
    /// this user cannot write): SQLite then needs no `-shm` file, which it could not create.
    public init(path: String, readOnly: Bool = false, immutable: Bool = false) throws {
        self.path = path
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_URI
        var db: OpaquePointer?
        let url = path == ":memory:" ? path : URL(fileURLWithPath: path).absoluteString + (immutable ? "?immutable=1" : "")
        let code = sqlite3_open_v2(url, &db, flags, nil)
        handle = db
        guard code == SQLITE_OK else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close(db)
            throw DatabaseError(path: path, message: message)
        }
        // Several farm processes share one cache: wait for a writer rather than fail.
        sqlite3_busy_timeout(handle, 60_000)
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement.handle) }
        sqlite3_close(handle)
    }

    func error(_ what: String) -> DatabaseError {
        DatabaseError(path: path, message: "\(what): \(String(cString: sqlite3_errmsg(handle)))")
    }

    public func execute(_ sql: String) throws {
        try withLock {
            var message: UnsafeMutablePointer<CChar>?
            if sqlite3_exec(handle, sql, nil, nil, &message) != SQLITE_OK {
                let text = message.map { String(cString: $0) } ?? "unknown error"
                sqlite3_free(message)
                throw DatabaseError(path: path, message: text)
            }
        }
    }

    /// Rows changed by this connection since it was opened.
    public var totalChanges: Int { Int(sqlite3_total_changes(handle)) }

    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Runs a query with bound values and hands each row to `row`. Statements are cached.
    public func query(_ sql: String, _ values: [SQLValue] = [], row: (Row) throws -> Void = { _ in }) throws {
        try withLock {
            let statement = try prepare(sql)
            defer { sqlite3_reset(statement.handle); sqlite3_clear_bindings(statement.handle) }
            for (index, value) in values.enumerated() {
                let position = Int32(index + 1)
                switch value {
                case let .text(text): sqlite3_bind_text(statement.handle, position, text, -1, transient)
                case let .integer(number): sqlite3_bind_int64(statement.handle, position, number)
                case let .real(number): sqlite3_bind_double(statement.handle, position, number)
                case .null: sqlite3_bind_null(statement.handle, position)
                }
            }
            while true {
                let code = sqlite3_step(statement.handle)
                if code == SQLITE_DONE { break }
                guard code == SQLITE_ROW else { throw error(sql) }
                try row(Row(handle: statement.handle))
            }
        }
    }

    private func prepare(_ sql: String) throws -> Statement {
        if let statement = statements[sql] { return statement }
        var raw: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &raw, nil) == SQLITE_OK, let raw else { throw error(sql) }
        let statement = Statement(handle: raw)
        statements[sql] = statement
        return statement
    }

    /// Runs `body` in one IMMEDIATE transaction: all of it is committed, or none.
    /// The connection's lock is held throughout, so tasks finishing at once do not interleave.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try withLock {
            try execute("BEGIN IMMEDIATE")
            do {
                let result = try body()
                try execute("COMMIT")
                return result
            } catch {
                try? execute("ROLLBACK")
                throw error
            }
        }
    }

    /// A read-only snapshot for many queries; the lock keeps this connection's writers out meanwhile.
    public func readTransaction<T>(_ body: () throws -> T) throws -> T {
        try withLock {
            try execute("BEGIN DEFERRED")
            defer { try? execute("COMMIT") }
            return try body()
        }
    }

    struct Statement { let handle: OpaquePointer }

    public struct Row {
        let handle: OpaquePointer
        public func text(_ column: Int32) -> String? {
            guard let pointer = sqlite3_column_text(handle, column) else { return nil }
            return String(cString: pointer)
        }
        public func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }
        public func real(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }
    }
}

public enum SQLValue: Sendable {
    case text(String)
    case integer(Int64)
    case real(Double)
    case null
}
