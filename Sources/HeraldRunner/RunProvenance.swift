import Foundation
import HeraldCore

/// What a run finds out about where it came from, as ARTIQ records the repository revision
/// with every result: the commit of the script's git repository and whether the script or
/// its includes differ from it, and the host.
enum RunProvenance {
    /// On a thread of its own: git is a child process, and waiting for it on a pool thread
    /// would hold up every other task (the suites' real-time deadlines on 2 cores among them).
    static func fill(_ m: inout RunMetadata, scriptPath: String, includes: [String]) async {
        let found = await withCheckedContinuation { (c: CheckedContinuation<(String?, Bool?), Never>) in
            Thread { c.resume(returning: find(scriptPath: scriptPath, includes: includes)) }.start()
        }
        m.host = ProcessInfo.processInfo.hostName
        (m.scriptRevision, m.scriptDirty) = found
    }

    static func find(scriptPath: String, includes: [String]) -> (String?, Bool?) {
        let script = URL(fileURLWithPath: scriptPath).standardizedFileURL.path
        let dir = (script as NSString).deletingLastPathComponent
        guard let revision = git(["rev-parse", "HEAD"], in: dir)?.trimmingCharacters(in: .whitespacesAndNewlines), revision.count >= 40
        else { return (nil, nil) }
        // Untracked counts as dirty too: the recorded revision does not hold that file.
        let status = git(["status", "--porcelain", "--"] + [script] + includes, in: dir)
        return (revision, status.map { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty })
    }

    /// Runs git, or nil when it is not installed, the folder is not in a repository, or it fails.
    static func git(_ arguments: [String], in dir: String) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["git", "-C", dir] + arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(data: data, encoding: .utf8)
    }
}
