import Foundation
import HeraldCore
import HeraldRunReader
#if canImport(Glibc)
import Glibc
#endif

/// Checks, before HDF5 is asked, that a new output file can be created at `path`, so the
/// error says why not (HDF5 only says "H5Fcreate failed").
public enum OutputPath {
    public static func checkCreatable(_ path: String, overwrite: Bool) throws(StoreError) {
        var st = stat()
        if stat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR {
                throw StoreError(path: path, "is a directory; give a file name such as \(path)/run.h5", kind: .notAFile)
            }
            if !overwrite {
                throw StoreError(path: path, "already exists; pass --overwrite to replace it, or choose another --out", kind: .exists)
            }
            if access(path, W_OK) != 0 { throw failure(path, errno, what: "cannot replace it") }
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var pst = stat()
        guard stat(parent, &pst) == 0 else { throw failure(path, errno, what: "its folder \(parent) cannot be used") }
        guard (pst.st_mode & S_IFMT) == S_IFDIR else {
            throw StoreError(path: path, "its folder \(parent) is not a directory", kind: .notAFile)
        }
        var fs = statvfs()
        if statvfs(parent, &fs) == 0, fs.f_flag & UInt(ST_RDONLY) != 0 {
            throw StoreError(path: path, "\(parent) is on a read-only filesystem; choose another --out", kind: .readOnly)
        }
        if access(parent, W_OK | X_OK) != 0 { throw failure(path, errno, what: "cannot create files in \(parent)") }
    }

    /// Creates the folders above `path`, with the reason in the error if it cannot.
    public static func createParent(of path: String) throws(StoreError) {
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var st = stat()
        if stat(parent, &st) == 0 { return }
        do {
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        } catch {
            // Find the first ancestor that exists, to name the real obstacle.
            var ancestor = URL(fileURLWithPath: parent)
            while stat(ancestor.path, &st) != 0 && ancestor.path != "/" { ancestor.deleteLastPathComponent() }
            let e = access(ancestor.path, W_OK | X_OK) == 0 ? EIO : errno
            throw failure(path, e, what: "cannot create its folder \(parent) (in \(ancestor.path))")
        }
    }

    static func failure(_ path: String, _ code: Int32, what: String) -> StoreError {
        switch code {
        case EACCES, EPERM: return StoreError(path: path, "\(what): permission denied", kind: .permissionDenied)
        case EROFS: return StoreError(path: path, "\(what): read-only filesystem", kind: .readOnly)
        case ENOTDIR: return StoreError(path: path, "\(what): a part of the path is not a directory", kind: .notAFile)
        case ENOENT: return StoreError(path: path, "\(what): no such directory", kind: .notFound)
        default: return StoreError(path: path, "\(what): \(String(cString: strerror(code)))")
        }
    }
}

/// Free space where a file lives, as an unprivileged writer sees it.
public enum DiskSpace {
    public static func available(near path: String) -> Int64? {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var fs = statvfs()
        guard statvfs(dir.isEmpty ? "." : dir, &fs) == 0 else { return nil }
        return Int64(fs.f_bavail) * Int64(fs.f_frsize)
    }

    /// "3.2 MB" style, for messages.
    public static func format(_ bytes: Int64) -> String {
        let b = Double(bytes)
        if b >= 1e9 { return String(format: "%.1f GB", b / 1e9) }
        if b >= 1e6 { return String(format: "%.1f MB", b / 1e6) }
        if b >= 1e3 { return String(format: "%.0f kB", b / 1e3) }
        return "\(bytes) B"
    }
}

/// One writer per run file: an exclusive `flock` on `FILE.lock` beside it, held from before
/// the file is created (or truncated) until it is closed.
///
/// A second run, `--overwrite` onto a live file, and `herald recover` all take the same
/// lock, so none of them can touch a file a live run holds; the lock file names the holder.
/// The kernel drops the lock when the holder dies (kill -9), so a stale lock file never
/// blocks anyone. HDF5's own file lock cannot serve: SWMR writing releases it.
///
/// The lock file also holds `reserveBytes` of allocated space. If the disk fills during a
/// run, releasing it lets the recorder write its closing records.
public final class RunFileLock: @unchecked Sendable {
    public let path: String
    public let lockPath: String
    private var fd: Int32
    private var textLength: Int

    public static func lockPath(for path: String) -> String { path + ".lock" }

    /// Takes the lock or throws `.locked` naming the process that holds it.
    public init(path: String, purpose: String, reserveBytes: Int64 = 0) throws(StoreError) {
        self.path = path
        self.lockPath = Self.lockPath(for: path)
        fd = -1
        textLength = 0
        // Retry if the file we locked was unlinked by a releasing holder in between.
        for _ in 0..<8 {
            var f = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            if f < 0 && errno == EACCES {
                // Another user's lock file (their live run, or one left by sudo): flock works
                // on a read-only descriptor, so it still excludes us while they hold it.
                f = open(lockPath, O_RDONLY | O_CLOEXEC)
            }
            guard f >= 0 else {
                // No lock file can be made on a read-only filesystem: nobody can be writing there.
                if errno == EROFS { return }
                throw OutputPath.failure(path, errno, what: "cannot create its lock file \(lockPath)")
            }
            if flock(f, LOCK_EX | LOCK_NB) != 0 {
                let holder = Self.readHolder(f)
                close(f)
                throw StoreError(
                    path: path,
                    "is in use by \(holder.isEmpty ? "another process" : holder); wait for it to finish, or stop that process first",
                    kind: .locked)
            }
            var a = stat(), b = stat()
            if fstat(f, &a) == 0, stat(lockPath, &b) == 0, a.st_ino == b.st_ino, a.st_dev == b.st_dev {
                fd = f
                break
            }
            close(f)
        }
        guard fd >= 0 else { throw StoreError(path: path, "could not take its lock file \(lockPath)", kind: .locked) }
        let text = "process \(getpid()) (\(purpose)) since \(ISO8601DateFormatter().string(from: Date()))\n"
        let bytes = Array(text.utf8)
        _ = ftruncate(fd, 0)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        textLength = bytes.count
        if reserveBytes > 0 { _ = posix_fallocate(fd, off_t(textLength), off_t(reserveBytes)) }
    }

    private static func readHolder(_ f: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { pread(f, $0.baseAddress, 511, 0) }
        guard n > 0 else { return "" }
        return String(decoding: buffer[0..<n], as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
    }

    /// Gives the reserved space back to the filesystem (disk full); true if there was any.
    @discardableResult
    public func releaseReserve() -> Bool {
        guard fd >= 0 else { return false }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > textLength else { return false }
        return ftruncate(fd, off_t(textLength)) == 0
    }

    /// Removes the lock file and drops the lock (unlink first, so no one locks a dying file).
    public func release() {
        guard fd >= 0 else { return }
        unlink(lockPath)
        close(fd)
        fd = -1
    }

    deinit { release() }
}
