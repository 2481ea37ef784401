import Foundation
import HeraldCore
import Yams

// Parameters (`parameters:` and `--set`), includes and named sequences.
extension Context {
    /// `--set name=value`: only declared parameters, and only with the declared dimension.
    mutating func applyOverrides(_ overrides: [String: String]) {
        for (name, text) in overrides.sorted(by: { $0.key < $1.key }) {
            let here = SourceLocation(file: "--set \(name)=\(text)", line: 1, column: 1)
            guard var p = parameters[name] else {
                let known = parameters.keys.sorted()
                diagnostics.append(
                    ScriptDiagnostic(
                        "--set: the script has no parameter '\(name)'"
                            + (known.isEmpty ? "" : "; its parameters: \(known.joined(separator: ", "))"), at: here))
                continue
            }
            if let old = Quantity.parse(p.text) {
                guard let new = Quantity.parse(text) else {
                    diagnostics.append(
                        ScriptDiagnostic("--set \(name): '\(text)' is not a \(old.dimension) with a unit (\(Unit.examples(for: old.dimension)))", at: here))
                    continue
                }
                guard new.dimension == old.dimension else {
                    diagnostics.append(
                        ScriptDiagnostic(
                            "--set \(name): expected a \(old.dimension) like the script's default '\(p.text)', got a \(new.dimension) ('\(text)')",
                            at: here))
                    continue
                }
            }
            p.text = text
            p.overridden = true
            parameters[name] = p
        }
    }

    mutating func compileIncludes(_ node: Node) {
        let list = node.sequence.map(Array.init) ?? [node]
        for item in list {
            guard let relative = string(item, what: "include") else { continue }
            // Relative to the including file, keeping the user's relative style in messages.
            let dir = (file as NSString).deletingLastPathComponent
            let path = relative.hasPrefix("/") || dir.isEmpty ? relative : dir + "/" + relative
            // Confined before anything is read: an include must not turn error messages into
            // a way of printing arbitrary files (`include: /etc/shadow`).
            guard let real = Context.resolved(path) else {
                error("cannot read included file '\(path)': no such file", at: item)
                continue
            }
            guard includeRoots.contains(where: { real == $0 || real.hasPrefix($0 == "/" ? "/" : $0 + "/") }) else {
                error(
                    "include '\(relative)' is outside the script's folder (\(includeRoots.first ?? ".")); scripts include files "
                        + "from their own folder and below, or from a folder given with --include-dir", at: item)
                continue
            }
            guard let text = try? String(contentsOfFile: real, encoding: .utf8) else {
                error("cannot read included file '\(path)'", at: item)
                continue
            }
            includedFiles.append(IncludedFile(path: path, resolvedPath: real, text: text))
            guard let included = parse(text: text, file: path) else { continue }
            let saved = file
            file = path
            let byKey = fields(
                included, allowed: ["herald", "lab", "description", "sequences", "devices", "delays", "meta"],
                what: "an included file (it holds 'sequences:', a lab's 'devices:', or 'delays:')")
            if let d = byKey["delays"] { includedDelays.merge(delays(d)) { _, new in new } }
            if let m = byKey["meta"] { compileMeta(m) }
            if let seqs = byKey["sequences"] { registerSequences(seqs) }
            if let devices = byKey["devices"] {
                for d in entries(devices, allowed: nil, what: "devices of the lab file") {
                    if let earlier = labDevices[d.key] {
                        let at = earlier.keyNode.mark.map { "\(earlier.file):\($0.line):\($0.column)" } ?? earlier.file
                        error("device '\(d.key)' is described twice: first at \(at)", at: d.keyNode)
                        continue
                    }
                    labDevices[d.key] = (path, d.keyNode, d.value)
                }
            }
            file = saved
        }
    }

    /// The absolute path with symbolic links and `..` resolved, or nil if it does not exist.
    static func resolved(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    mutating func registerSequences(_ node: Node) {
        for s in entries(node, allowed: nil, what: "sequences") {
            if sequences[s.key] != nil { error("sequence '\(s.key)' is defined twice", at: s.keyNode) }
            sequences[s.key] = (file, s.value)
        }
    }
}
