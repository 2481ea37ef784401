/// A store operation that failed, with the file it concerns. Callers branch on `kind`;
/// `message` is for people.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable, Codable {
        /// The output exists and `--overwrite` was not given.
        case exists
        /// Permission denied on the file or its folder.
        case permissionDenied
        /// The folder is on a read-only filesystem.
        case readOnly
        /// The path names a directory, or its parent is not one.
        case notAFile
        /// No such file.
        case notFound
        /// Another process holds the file (a live run, or `herald recover`).
        case locked
        /// The filesystem ran out of space while recording.
        case diskFull
        /// The file is not a Herald run, or its structure is damaged.
        case invalidFile
        /// Anything else (the message says what).
        case other
    }

    public var kind: Kind
    public var path: String
    public var message: String

    public init(path: String, _ message: String, kind: Kind = .other) {
        self.kind = kind
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}
