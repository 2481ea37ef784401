import Foundation
import HeraldCore

/// The JSON forms of descriptors and values that cross the plugin ABI (see herald_plugin.h).
enum PluginJSON {
    struct Descriptor: Decodable {
        var id: String
        var version: String
        var summary: String?
        var kind: String
        var channels: Int?
        /// "usb", "file" and/or "name" (default ["name"]).
        var match: [String]?
        var properties: [Property]
        var settings: [Property]?
    }

    struct Property: Decodable {
        var name: String
        var type: String
        var dimension: String?
        var min: Double?
        var max: Double?
        var options: [String]?
        var settable: Bool?
        var summary: String?

        func spec() throws -> PropertySpec {
            let t: PropertyType
            switch type {
            case "bool": t = .bool
            case "text": t = .text
            case "choice":
                guard let options, !options.isEmpty else { throw PluginError.descriptor("property '\(name)': a choice needs 'options'") }
                t = .choice(options)
            case "quantity":
                guard let d = dimension.flatMap(PhysicalDimension.init(rawValue:)) else {
                    throw PluginError.descriptor(
                        "property '\(name)': unknown dimension '\(dimension ?? "")'; expected one of "
                            + PhysicalDimension.allCases.map(\.rawValue).joined(separator: ", "))
                }
                t = .quantity(d)
            default:
                throw PluginError.descriptor("property '\(name)': unknown type '\(type)'; expected bool, quantity, choice or text")
            }
            var range: ClosedRange<Double>?
            if let min, let max {
                guard min <= max, min.isFinite, max.isFinite else {
                    throw PluginError.descriptor("property '\(name)': range \(min)...\(max) is empty")
                }
                range = min...max
            }
            return PropertySpec(name, t, range: range, settable: settable ?? true, summary: summary ?? "")
        }
    }

    static func descriptor(_ json: String, origin: String) throws -> (DriverDescriptor, channels: Int?) {
        let d: Descriptor
        do {
            d = try JSONDecoder().decode(Descriptor.self, from: Data(json.utf8))
        } catch {
            throw PluginError.descriptor("descriptor JSON does not parse: \(error)")
        }
        guard let kind = DeviceKind(rawValue: d.kind) else {
            throw PluginError.descriptor(
                "driver '\(d.id)': unknown kind '\(d.kind)'; expected " + DeviceKind.allCases.map(\.rawValue).joined(separator: ", "))
        }
        var matchKinds: Set<DeviceMatchKind> = [.name]
        if let match = d.match {
            matchKinds = []
            for m in match {
                guard let k = DeviceMatchKind(rawValue: m) else {
                    throw PluginError.descriptor("driver '\(d.id)': unknown match '\(m)'; expected usb, file or name")
                }
                matchKinds.insert(k)
            }
        }
        let descriptor = DriverDescriptor(
            id: d.id, version: d.version, summary: d.summary ?? "", kind: kind, properties: try d.properties.map { try $0.spec() },
            settings: try (d.settings ?? []).map { try $0.spec() }, origin: origin
        ).matched(by: matchKinds)
        return (descriptor, d.channels)
    }

    static func encode(_ value: Value) -> String {
        let object: [String: Any]
        switch value {
        case .bool(let b): object = ["bool": b]
        case .quantity(let q): object = ["quantity": q.value, "dimension": q.dimension.rawValue]
        case .text(let s): object = ["text": s]
        }
        return (try? JSONSerialization.data(withJSONObject: object)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    static func encode(settings: [String: Value]) -> String {
        let parts = settings.keys.sorted().map { key in
            let name = (try? JSONSerialization.data(withJSONObject: key, options: .fragmentsAllowed))
                .map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
            return "\(name):\(encode(settings[key] ?? .text("")))"
        }
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// Decodes a value a plugin returned; nil if it is not one of the three forms.
    static func decode(_ json: String) -> Value? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return nil }
        if let b = object["bool"] as? Bool, object.count == 1 { return .bool(b) }
        if let s = object["text"] as? String, object.count == 1 { return .text(s) }
        if let v = (object["quantity"] as? NSNumber)?.doubleValue,
            let d = (object["dimension"] as? String).flatMap(PhysicalDimension.init(rawValue:))
        {
            return .quantity(Quantity(v, d))
        }
        return nil
    }
}

/// Why a plugin could not be loaded, or a driver in it used.
public enum PluginError: Error, Sendable, CustomStringConvertible {
    case descriptor(String)

    public var description: String {
        switch self {
        case .descriptor(let s): return s
        }
    }
}
