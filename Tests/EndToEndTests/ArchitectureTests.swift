import Foundation
import Testing

/// docs/architecture.md's module table is the dependency graph of Package.swift: a module
/// that gains a dependency (the engine importing the analysis, a driver the store) without
/// the picture being redrawn fails here.
@Suite struct ArchitectureTests {
    /// Each target's name and the targets (not packages' products) it depends on.
    static func packageGraph() throws -> [String: Set<String>] {
        let text = try String(contentsOf: Paths.root.appendingPathComponent("Package.swift"), encoding: .utf8)
        var graph: [String: Set<String>] = [:]
        let declaration = try Regex(#"\.(?:target|executableTarget|systemLibrary)\(\s*name:\s*"([^"]+)""#)
        for match in text.matches(of: declaration) {
            guard let name = match.output[1].substring.map(String.init) else { continue }
            // The dependencies list of this target: from `dependencies: [` to its closing bracket.
            let rest = text[match.range.upperBound...]
            let end = rest.range(of: ".target(")?.lowerBound ?? rest.range(of: ".executableTarget(")?.lowerBound ?? rest.endIndex
            let body = rest[..<end]
            var deps: Set<String> = []
            if let open = body.range(of: "dependencies: [") {
                var depth = 1
                var i = open.upperBound
                while i < body.endIndex, depth > 0 {
                    if body[i] == "[" { depth += 1 } else if body[i] == "]" { depth -= 1 }
                    i = body.index(after: i)
                }
                let list = body[open.upperBound..<i]
                // Products of other packages are `.product(name: …)`; plain strings are our targets.
                let withoutProducts = list.replacing(try Regex(#"\.product\([^)]*\)"#), with: "")
                for m in withoutProducts.matches(of: try Regex(#""([^"]+)""#)) {
                    if let d = m.output[1].substring { deps.insert(String(d)) }
                }
            }
            graph[name] = deps
        }
        // Plain strings may also name another package's product ("Yams"): keep our targets only.
        let targets = Set(graph.keys)
        return graph.mapValues { $0.intersection(targets) }
    }

    /// The table rows of docs/architecture.md: module → the modules it depends on.
    static func documentedGraph() throws -> [String: Set<String>] {
        let text = try String(contentsOf: Paths.root.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        var graph: [String: Set<String>] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| ") && !line.hasPrefix("| module") && !line.hasPrefix("|---") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4 else { continue }
            let deps = cells[2] == "—" ? [] : cells[2].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            graph[cells[1]] = Set(deps)
        }
        return graph
    }

    @Test func theDocumentedModuleTableIsThePackageGraph() throws {
        let package = try Self.packageGraph(), documented = try Self.documentedGraph()
        #expect(documented.count >= 15, "the table has \(documented.count) rows")
        let drivers = Set(package.keys.filter { name in
            !documented.keys.contains(name) && (package[name]?.contains("HeraldCore") ?? false)
                && (name.hasPrefix("Mock") || [
                    "SimulatedLab", "SimulatedInstruments", "ReplayTimeTagger", "USBInstrument", "ThorlabsITC4001", "ThorlabsElliptec", "S15TDC1",
                    "ThorlabsPM100", "ThorlabsTED4015", "NewportSMC100",
                ].contains(name))
        })
        for (module, deps) in documented {
            let actual = try #require(package[module], "docs/architecture.md lists \(module), which Package.swift does not declare")
            // "drivers" in the table stands for the driver targets.
            var expected = deps.subtracting(["drivers"])
            if deps.contains("drivers") { expected.formUnion(actual.intersection(drivers)) }
            #expect(actual == expected, "\(module): Package.swift has \(actual.sorted()), the doc \(expected.sorted())")
        }
        // The data flow the doc draws: the engine and the recorder know nothing of counting.
        #expect(package["HeraldSequencer"] == ["HeraldCore"])
        #expect(package["HeraldStore"]?.contains("HeraldAnalysis") == false)
        #expect(package["ReplayTimeTagger"]?.contains("HeraldStore") == false)
        #expect(package["HeraldRunReader"] == ["HeraldCore", "HeraldHDF5"])
    }
}
