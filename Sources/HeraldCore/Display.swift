import Foundation

/// Numbers as the CLI prints them: rounded to their uncertainty, in the units people use.
public enum Display {
    /// `1187868 ± 7500 s⁻¹ W⁻¹`, `0.9253 ± 0.0070`: the uncertainty to two significant
    /// digits and the value to the same decimal place. Without an uncertainty, six significant digits.
    /// A bare SI unit (`s`, `W`, …) takes the prefix that puts the value in [1, 1000):
    /// `30.000 ± 0.006 ns`, not `0.0000000300000 ± 0.0000000000060 s`.
    public static func measured(_ value: Double, _ error: Double?, unit: String = "1") -> String {
        if prefixed.contains(unit), value.isFinite {
            let reference = value != 0 ? abs(value) : abs(error ?? 0)
            if reference > 0, reference.isFinite {
                let power = min(12, max(-15, Int((log10(reference) / 3).rounded(.down)) * 3))
                if power != 0, let prefix = prefixes[power] {
                    let f = pow(10, Double(power))
                    return measured(value / f, error.map { $0 / f }, unit: "1") + " " + prefix + unit
                }
            }
        }
        let u = unitText(unit)
        let suffix = u.isEmpty ? "" : " " + u
        guard value.isFinite else { return "\(value)" + suffix }
        guard let error, error.isFinite, error > 0 else {
            // Counts (attempts, heralds) in full: 22944729, not 2.29447e+07.
            if value == value.rounded(), abs(value) < 1e15, abs(value) >= 1e6 { return String(format: "%.0f", value) + suffix }
            return shortest(value) + suffix
        }
        let exponent = Int((log10(error)).rounded(.down))
        let decimals = max(0, 1 - exponent)
        let scale = pow(10.0, Double(exponent - 1))
        let roundedError = (error / scale).rounded() * scale
        let errorText = decimals > 0 ? String(format: "%.*f", decimals, roundedError) : String(format: "%.0f", roundedError)
        return String(format: "%.*f", decimals, value) + " ± " + errorText + suffix
    }

    /// `18 mW`: a quantity in SI units (`W`) with the prefix that puts `scale` (the largest
    /// of the values shown together, so a sweep's points share one prefix) in [1, 1000).
    public static func quantity(_ value: Double, unit: String, scale: Double? = nil) -> String {
        guard prefixed.contains(unit), value.isFinite else { return shortest(value) + (unit.isEmpty || unit == "1" ? "" : " " + unit) }
        let reference = abs(scale ?? value)
        guard reference > 0, reference.isFinite else { return "0 " + unit }
        let power = min(12, max(-15, Int((log10(reference) / 3).rounded(.down)) * 3))
        let prefix = prefixes[power] ?? ""
        return shortest(value / pow(10, Double(power))) + " " + prefix + unit
    }

    /// `s^-1 W^-1` as `s⁻¹ W⁻¹`; "1" (a pure number) as nothing.
    public static func unitText(_ unit: String) -> String {
        if unit == "1" { return "" }
        let superscripts: [Character: Character] = ["-": "⁻", "1": "¹", "2": "²", "3": "³", "0": "⁰"]
        var out = ""
        var raised = false
        for c in unit {
            if c == "^" {
                raised = true
                continue
            }
            if raised, let s = superscripts[c] {
                out.append(s)
                continue
            }
            raised = false
            out.append(c)
        }
        return out
    }

    /// Six significant digits, without trailing zeros: 18, 0.925, 1.2e-09.
    public static func shortest(_ value: Double) -> String { String(format: "%.6g", value) }

    /// A run length as people say it: "48 s", "12 min 30 s", "2 h 05 min".
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        if seconds < 60 { return String(format: seconds < 10 ? "%.1f s" : "%.0f s", seconds) }
        let total = Int(seconds.rounded())
        if total < 3600 { return "\(total / 60) min \(String(format: "%02d", total % 60)) s" }
        return "\(total / 3600) h \(String(format: "%02d", total % 3600 / 60)) min"
    }

    static let prefixed: Set<String> = ["W", "A", "s", "Hz", "m", "V"]
    static let prefixes: [Int: String] = [-15: "f", -12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"]
}
