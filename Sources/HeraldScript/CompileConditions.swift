import Foundation
import HeraldCore
import Yams

// Conditions (`pump.locked == true`) and the interlocks built from them.
extension Context {
    mutating func compileInterlocks(_ node: Node) -> [Interlock] {
        guard let list = node.sequence else {
            error("'interlocks' must be a list of {name, require, timeout}", at: node)
            return []
        }
        var out: [Interlock] = []
        for item in list {
            let byKey = fields(item, allowed: ["name", "require", "timeout"], what: "an interlock")
            guard let requireNode = byKey["require"] else {
                error("an interlock needs 'require: device.property OP value' (what must hold while acquiring)", at: item)
                continue
            }
            guard let condition = condition(requireNode) else { continue }
            let name = byKey["name"].flatMap { string($0, what: "interlock name") } ?? condition.description
            let timeout = byKey["timeout"].flatMap { duration($0, what: "interlock timeout", allowZero: false) } ?? .seconds(60)
            out.append(Interlock(name: name, condition: condition, timeout: timeout, location: location(requireNode)))
        }
        return out
    }

    /// `device.property OP value`, with the value parsed as the property's type.
    mutating func condition(_ node: Node) -> Condition? {
        guard let (text, origin) = scalar(node, what: "condition") else { return nil }
        guard let (target, comparison, rawValue) = Condition.split(text) else {
            error("a condition reads 'device.property OP value' with OP one of == != < <= > >=, got '\(text)'\(origin)", at: node)
            return nil
        }
        guard let (device, spec) = resolveProperty(target, at: node, needSettable: false) else { return nil }
        var valueText = rawValue
        if valueText.hasPrefix("$"), let p = parameters[String(valueText.dropFirst())] { valueText = p.text }
        guard let value = Self.parseValue(valueText, as: spec.type) else {
            error("condition '\(text)': expected \(spec.type) after \(comparison.rawValue), got '\(valueText)'", at: node)
            return nil
        }
        if case .quantity(let dim) = spec.type, value.quantity?.dimension != dim {
            error("condition '\(text)': \(target) is a \(dim), compared with '\(valueText)'", at: node)
            return nil
        }
        if case .quantity = spec.type {} else if comparison != .equal && comparison != .notEqual {
            error("condition '\(text)': \(target) can only be compared with == or !=", at: node)
            return nil
        }
        return Condition(device: device, property: spec.name, comparison: comparison, value: value)
    }

    // MARK: Steps
}
