import Foundation
import HeraldCore

/// What a run finds out about where it came from, as ARTIQ records the repository revision
/// with every result: the commit of the script's git repository and whether the script or
/// its includes differ from it, and the host.
enum RunProvenance {
    static func fill(_ m: inout RunMetadata, scriptPath: String, includes: [String]) {
        m.host = ProcessInfo.processInfo.hostName
        let dir = (URL(fileURLWithPath: scriptPath).standardizedFileURL.path as NSString).deletingLastPathComponent
        guard let revision = git(["rev-parse", "HEAD"], in: dir)?.trimmingCharacters(in: .whitespacesAndNewlines),
            revision.count >= 40
        else { return }
        m.scriptRevision = revision
        // Untracked counts as dirty too: the recorded revision does not hold that file.
        let files = [URL(fileURLWithPath: scriptPath).standardizedFileURL.path] + includes
        if let status = git(["status", "--porcelain", "--"] + files, in: dir) {
            m.scriptDirty = !status.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        }
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
