import Foundation
import HeraldCore
import HeraldRunner
import HeraldScript
import Testing

/// Thousands of mutated scripts through the validator: it must never crash or hang, and
/// every rejection must carry a usable location and a message.
@Suite struct FuzzTests {
    static let alphabet = Array(":{}[]-#$ \n\t'\",.0123456789abcdefmsnkHzWAdeg&*!|>%@\\µ°")
    static let tokens = ["1e400", "-5", "nan", "0", "10 mA", "1 s", "$nope", "$integration", "true", "{", "]", "- ", ": ", "&a", "*a", "!!int", "~", "''", "\"\\u0000\"", "∞"]

    static func mutate(_ text: String, _ rng: inout SeededGenerator) -> String {
        var lines = text.components(separatedBy: "\n")
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            guard !lines.isEmpty else { break }
            let i = Int.random(in: 0..<lines.count, using: &rng)
            switch Int.random(in: 0..<7, using: &rng) {
            case 0: lines.remove(at: i)
            case 1: lines.insert(lines[i], at: Int.random(in: 0...lines.count, using: &rng))
            case 2: lines.swapAt(i, Int.random(in: 0..<lines.count, using: &rng))
            case 3:  // delete a run of characters
                var chars = Array(lines[i])
                if !chars.isEmpty {
                    let a = Int.random(in: 0..<chars.count, using: &rng)
                    chars.removeSubrange(a..<min(chars.count, a + Int.random(in: 1...6, using: &rng)))
                }
                lines[i] = String(chars)
            case 4:  // insert random characters
                var chars = Array(lines[i])
                let at = Int.random(in: 0...chars.count, using: &rng)
                chars.insert(contentsOf: (0..<Int.random(in: 1...3, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }, at: at)
                lines[i] = String(chars)
            case 5:  // replace the value after a colon with a hostile token
                if let colon = lines[i].lastIndex(of: ":") {
                    lines[i] = String(lines[i][...colon]) + " " + tokens.randomElement(using: &rng)!
                }
            default:  // change indentation
                lines[i] = String(repeating: " ", count: Int.random(in: 0...8, using: &rng)) + lines[i].trimmingCharacters(in: .whitespaces)
            }
        }
        return lines.joined(separator: "\n")
    }

    @Test func mutatedScriptsAreRejectedWithLocationsNeverCrash() throws {
        let dir = Paths.root.appendingPathComponent("Experiments")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }.sorted()
        let compiler = Herald.compiler(registry: Herald.descriptorRegistry)
        var rng = SeededGenerator(seed: 20261121)
        var rejected = 0, accepted = 0
        for iteration in 0..<3000 {
            let name = files[iteration % files.count]
            let path = dir.appendingPathComponent(name).path
            let original = try String(contentsOfFile: path, encoding: .utf8)
            let mutated = Self.mutate(original, &rng)
            let lineCount = mutated.components(separatedBy: "\n").count
            do {
                _ = try compiler.compile(text: mutated, file: path, mock: iteration % 2 == 0)
                accepted += 1
            } catch let e as ScriptErrors {
                rejected += 1
                #expect(!e.diagnostics.isEmpty)
                for d in e.diagnostics {
                    #expect(!d.message.isEmpty)
                    #expect(d.location.line >= 1 && d.location.column >= 1, "\(d)")
                    if d.location.file == path {
                        #expect(d.location.line <= lineCount + 1, "\(d) beyond the end of the script:\n\(mutated)")
                    }
                }
            }
        }
        // The mutations must actually exercise both outcomes.
        #expect(rejected > 1000 && accepted > 50, "rejected \(rejected), accepted \(accepted)")
    }
}
