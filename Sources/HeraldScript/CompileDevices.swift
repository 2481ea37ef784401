import Foundation
import HeraldCore
import Yams

// Devices: drivers, settings, limits, safe states and how each is matched to hardware; property assignments.
extension Context {
    mutating func compileDevice(_ name: String, _ node: Node, keyNode: Node) -> DeviceConfig? {
        guard Self.isName(name) else {
            error("device name '\(name)' may contain only letters, digits, '_' and '-'", at: keyNode)
            return nil
        }
        let byKey = fields(
            node, allowed: ["driver", "match", "settings", "limits", "safe", "timeout", "retries", "node", "device"],
            what: "device '\(name)'")
        var nodeName: String?
        if let n = byKey["node"] {
            guard let remote = remoteDevice(name, n, byKey, at: node) else { return nil }
            nodeName = remote.node
            if let entry = remote.entry {
                // Served by a node that was described: its driver, as the node declares it.
                return finishDevice(name, node, keyNode: keyNode, byKey: byKey, entry: entry, nodeName: remote.node)
            }
        }
        guard let driverNode = byKey["driver"] else {
            error("device '\(name)' needs a 'driver:' (see `herald drivers`)", at: node)
            return nil
        }
        guard let driverID = string(driverNode, what: "driver") else { return nil }
        guard let entry = registry.entry(driverID) else {
            let known = registry.descriptors.map(\.id).joined(separator: ", ")
            error("unknown driver '\(driverID)' for device '\(name)'; known drivers: \(known)", at: driverNode)
            return nil
        }
        return finishDevice(name, node, keyNode: keyNode, byKey: byKey, entry: entry, nodeName: nodeName)
    }

    /// A device the lab file describes, named by the script: the lab's entry (diagnosed at its
    /// own lines), then what the script may change — `settings:` replaced, `limits:` narrowed
    /// (never widened), `safe:` extended, `timeout:`/`retries:` replaced.
    mutating func compileLabDevice(_ name: String, override: Node?, at node: Node) -> DeviceConfig? {
        guard let lab = labDevices[name] else {
            let known = labDevices.keys.sorted().joined(separator: ", ")
            error("no device '\(name)' in the included lab file" + (known.isEmpty ? "s (none is included)" : "; it describes: \(known)"), at: node)
            return nil
        }
        let saved = file
        file = lab.file
        let compiled = compileDevice(name, lab.value, keyNode: lab.keyNode)
        file = saved
        guard var config = compiled, let override else { return compiled }
        if let text = override.scalar?.string {
            // `pump:` or `pump: ~`: the lab's device as it is.
            if !["", "~", "null"].contains(text) {
                error("device '\(name)' comes from the lab file; here give nothing, or a mapping of settings, limits, safe, timeout, retries", at: override)
            }
            return config
        }
        let byKey = fields(override, allowed: ["settings", "limits", "safe", "timeout", "retries", "driver", "match", "node"], what: "device '\(name)'")
        for key in ["driver", "match", "node"] {
            if let n = byKey[key] {
                let at = lab.keyNode.mark.map { "\(lab.file):\($0.line):\($0.column)" } ?? lab.file
                error("device '\(name)' is described by the lab file (\(at)); a script may change its settings and narrow its limits, not its '\(key)'", at: n)
            }
        }
        guard var descriptor = devices[name] else { return config }
        if let settingsNode = byKey["settings"] {
            for s in entries(settingsNode, allowed: nil, what: "settings of '\(name)'") {
                guard let spec = descriptor.setting(s.key) else {
                    error("driver '\(descriptor.id)' has no setting '\(s.key)'; it accepts: \(descriptor.settings.map(\.name).joined(separator: ", "))", at: s.keyNode)
                    continue
                }
                if let v = value(s.value, for: spec, what: "\(name).\(s.key)") { config.settings[s.key] = v }
            }
        }
        if let limitsNode = byKey["limits"] {
            for l in entries(limitsNode, allowed: nil, what: "limits of '\(name)'") {
                guard let index = descriptor.properties.firstIndex(where: { $0.name == l.key }),
                    case .quantity(let dim) = descriptor.properties[index].type
                else {
                    error("'\(l.key)' is not a numeric property of driver '\(descriptor.id)'", at: l.keyNode)
                    continue
                }
                let bounds = fields(l.value, allowed: ["min", "max"], what: "limits of \(name).\(l.key)")
                let range = descriptor.properties[index].range ?? -Double.infinity...Double.infinity
                var lo = range.lowerBound, hi = range.upperBound
                let labAt = lab.keyNode.mark.map { "\(lab.file):\($0.line):\($0.column)" } ?? lab.file
                if let n = bounds["min"], let q = quantity(n, dim, what: "\(name).\(l.key) min") {
                    if q.value < lo {
                        error("min \(q) of \(name).\(l.key) would widen the lab's limit (\(Quantity(lo, dim)), \(labAt)): a script may only narrow it", at: n)
                    } else { lo = q.value }
                }
                if let n = bounds["max"], let q = quantity(n, dim, what: "\(name).\(l.key) max") {
                    if q.value > hi {
                        error("max \(q) of \(name).\(l.key) would widen the lab's limit (\(Quantity(hi, dim)), \(labAt)): a script may only narrow it", at: n)
                    } else { hi = q.value }
                }
                if lo > hi {
                    error("limits of \(name).\(l.key) leave no allowed value", at: l.value)
                } else {
                    descriptor.properties[index].range = lo...hi
                }
            }
            devices[name] = descriptor
            // Only the ranges change: the mock standing in keeps its own properties otherwise.
            for (i, p) in config.properties.enumerated() {
                if let narrowed = descriptor.property(p.name)?.range { config.properties[i].range = narrowed }
            }
        }
        if let safeNode = byKey["safe"] {
            for s in entries(safeNode, allowed: nil, what: "safe state of '\(name)'") {
                if let a = assignment(target: "\(name).\(s.key)", keyNode: s.keyNode, valueNode: s.value) { config.safeState.append(a) }
            }
        }
        if let t = byKey["timeout"], let d = duration(t, what: "\(name).timeout", allowZero: false) { config.callTimeout = d }
        if let r = byKey["retries"], let n = integer(r, what: "\(name).retries", range: 0...10) { config.retries = n }
        return config
    }

    /// The rest of a device's entry, once its driver is known.
    mutating func finishDevice(
        _ name: String, _ node: Node, keyNode: Node, byKey: [String: Node], entry found: DriverEntry, nodeName: String?
    ) -> DeviceConfig? {
        var entry = found
        let driverID = entry.descriptor.id
        let driverNode = byKey["driver"] ?? byKey["node"] ?? node
        var descriptor = entry.descriptor
        var settings: [String: Value] = [:]
        if let settingsNode = byKey["settings"] {
            for s in entries(settingsNode, allowed: nil, what: "settings of '\(name)'") {
                guard let spec = descriptor.setting(s.key) else {
                    let known = descriptor.settings.map(\.name)
                    error(
                        "driver '\(driverID)' has no setting '\(s.key)'"
                            + (known.isEmpty ? "" : "; it accepts: \(known.joined(separator: ", "))"), at: s.keyNode)
                    continue
                }
                if let v = value(s.value, for: spec, what: "\(name).\(s.key)") { settings[s.key] = v }
            }
        }
        for spec in descriptor.settings where settings[spec.name] == nil {
            if case .choice = spec.type { error("device '\(name)' needs setting '\(spec.name)' (\(spec.type))", at: node) }
        }
        // limits: {power: {max: 20 mW}} narrows the driver's range; it never widens it.
        if let limitsNode = byKey["limits"] {
            for l in entries(limitsNode, allowed: nil, what: "limits of '\(name)'") {
                guard let index = descriptor.properties.firstIndex(where: { $0.name == l.key }),
                    case .quantity(let dim) = descriptor.properties[index].type
                else {
                    error("'\(l.key)' is not a numeric property of driver '\(driverID)'", at: l.keyNode)
                    continue
                }
                let bounds = fields(l.value, allowed: ["min", "max"], what: "limits of \(name).\(l.key)")
                let range = descriptor.properties[index].range ?? -Double.infinity...Double.infinity
                var lo = range.lowerBound, hi = range.upperBound
                if let q = quantity(bounds["min"], dim, what: "\(name).\(l.key) min") { lo = max(lo, q.value) }
                if let q = quantity(bounds["max"], dim, what: "\(name).\(l.key) max") { hi = min(hi, q.value) }
                if lo > hi {
                    error("limits of \(name).\(l.key) leave no allowed value (driver range \(range))", at: l.value)
                } else {
                    descriptor.properties[index].range = lo...hi
                }
            }
        }
        devices[name] = descriptor
        var safe: [Assignment] = []
        if let safeNode = byKey["safe"] {
            for s in entries(safeNode, allowed: nil, what: "safe state of '\(name)'") {
                if let a = assignment(target: "\(name).\(s.key)", keyNode: s.keyNode, valueNode: s.value) { safe.append(a) }
            }
        }
        let timeout = byKey["timeout"].flatMap { duration($0, what: "\(name).timeout", allowZero: false) }
            ?? DeviceConfig.defaultCallTimeout
        let retries = byKey["retries"].flatMap { integer($0, what: "\(name).retries", range: 0...10) }
            ?? DeviceConfig.defaultRetries
        // --mock swaps out hardware: a driver with a simulated instrument keeps its own code
        // over it; others give way to the mock of their kind; drivers that touch none (replay)
        // stay as they are.
        let simulated = mock && entry.simulatesInstrument && nodeName == nil
        if mock && !simulated && !entry.descriptor.isMock && entry.descriptor.usesHardware {
            guard let replacement = registry.mock(for: entry.descriptor.kind) else {
                error("--mock: no simulated driver stands in for a \(entry.descriptor.kind.rawValue)", at: driverNode)
                return nil
            }
            entry = replacement
        }
        var config = DeviceConfig(
            name: name, driver: entry.descriptor.id, settings: settings, location: location(keyNode),
            properties: descriptor.properties, safeState: safe, callTimeout: timeout, retries: retries)
        // With --mock the node is not used: the device is simulated here, as every other.
        config.node = mock ? nil : nodeName
        // A match already refused (its error reported) is not checked again against the driver.
        if let matchNode = byKey["match"], let found = match(matchNode, device: name) {
            config.match = found
            // Simulated drivers ignore `match:` (a script written for hardware runs with --mock).
            if !entry.descriptor.isMock && !entry.descriptor.matchedBy.contains(config.match.kind) {
                error(
                    "driver \(entry.descriptor.id) finds its instrument by "
                        + entry.descriptor.matchedBy.sorted().map(\.rawValue).joined(separator: " or ")
                        + ", not by \(config.match.kind.rawValue)", at: matchNode)
            }
            // A port that is not there is a set-up error to report now, at its line, not at run time.
            if !mock, case .serial(let path, _) = config.match, !FileManager.default.fileExists(atPath: path) {
                error(
                    "serial port '\(path)' of device '\(name)' does not exist (is the instrument plugged in? "
                        + "`ls /dev/serial/by-id/` lists the ports)", at: matchNode)
            }
        }
        if simulated { config.match = .simulated }
        return config
    }

    /// A device's `node:` (and optional `device:`, its name on the node). Without `--mock`, the
    /// node's description gives the driver (checked against `driver:` if both are given); with
    /// `--mock` the node is not contacted and `driver:` is required.
    mutating func remoteDevice(_ name: String, _ n: Node, _ byKey: [String: Node], at node: Node) -> (node: String, entry: DriverEntry?)? {
        guard let nodeName = string(n, what: "node") else { return nil }
        guard let address = nodes[nodeName] else {
            let known = nodes.keys.sorted().joined(separator: ", ")
            error("device '\(name)' is on node '\(nodeName)', which 'nodes:' does not declare" + (known.isEmpty ? "" : " (nodes: \(known))"), at: n)
            return nil
        }
        let remoteName = byKey["device"].flatMap { string($0, what: "device") } ?? name
        if mock {
            if byKey["driver"] == nil {
                error("with --mock, device '\(name)' on node '\(nodeName)' needs its 'driver:' (the node is not contacted)", at: node)
                return nil
            }
            return (nodeName, nil)
        }
        guard let catalogue = nodeCatalogue?[nodeName] else {
            // The node could not be described: its `nodes:` entry carries the reason.
            if nodeCatalogue == nil { error("device '\(name)' is on node '\(nodeName)', which was not contacted", at: n) }
            return nil
        }
        guard let descriptor = catalogue[remoteName] else {
            error(
                "node '\(nodeName)' (\(address.address)) serves no device '\(remoteName)'; it serves: "
                    + catalogue.keys.sorted().joined(separator: ", "), at: byKey["device"] ?? n)
            return nil
        }
        if let d = byKey["driver"], let want = string(d, what: "driver"), want != descriptor.id {
            error("device '\(name)' names driver '\(want)', but node '\(nodeName)' serves it with driver '\(descriptor.id)'", at: d)
            return nil
        }
        var remote = descriptor
        remote.id = "node:\(nodeName)/\(remoteName)"
        return (nodeName, DriverEntry(descriptor: remote) { _ in throw DeviceError(device: name, .notFound, "node devices are opened by the runner") })
    }

    /// `nodes: {alice: {address: 10.99.0.2:50051}, …}`.
    mutating func compileNodes(_ node: Node) {
        for entry in entries(node, allowed: nil, what: "nodes") {
            if !Self.isName(entry.key) { error("node name '\(entry.key)' may contain only letters, digits, '_' and '-'", at: entry.keyNode) }
            let f = fields(entry.value, allowed: ["address", "on_loss"], what: "node '\(entry.key)'")
            guard let a = f["address"], let text = string(a, what: "address") else {
                error("node '\(entry.key)' needs 'address: HOST:PORT' (where its `herald node serve` listens)", at: entry.value)
                continue
            }
            guard let address = NodeAddress.parse(name: entry.key, text, location: location(a)) else {
                error("node '\(entry.key)': address must be HOST:PORT (an IPv4 address or a host name, and a port), got '\(text)'", at: a)
                continue
            }
            if let problem = nodeProblems[entry.key] { error("node '\(entry.key)' (\(address.address)): \(problem)", at: a) }
            var node = address
            if let policy = f["on_loss"] { node.reconnectWithin = onLoss(policy, node: entry.key) }
            nodes[entry.key] = node
        }
    }

    /// `on_loss: fail` or `on_loss: {reconnect_within: 30 s}` (between 1 s and 1 h): nil for fail.
    mutating func onLoss(_ node: Node, node name: String) -> Duration? {
        if let text = node.scalar?.string {
            if text != "fail" { error("on_loss of node '\(name)' is 'fail' or {reconnect_within: DURATION}, got '\(text)'", at: node) }
            return nil
        }
        let f = fields(node, allowed: ["reconnect_within"], what: "on_loss of node '\(name)'")
        guard let w = f["reconnect_within"] else {
            error("on_loss of node '\(name)' needs 'reconnect_within: DURATION' (how long to try to get the node back)", at: node)
            return nil
        }
        guard let within = duration(w, what: "reconnect_within", allowZero: false) else { return nil }
        guard within >= .seconds(1), within <= .seconds(3600) else {
            error("reconnect_within of node '\(name)' must be between 1 s and 1 h (the lease is renewed every 0.25 s), got \(within)", at: w)
            return nil
        }
        return within
    }

    /// `match: {usb: {vendor: 0x1313, product: 0x804a, serial: M001}}`, `match: {serial: /dev/ttyUSB0}`
    /// (or `{serial: {path: …, baud: 9600}}`), `match: {tcp: host:5025}`, `match: {file: path}`, or a
    /// VISA resource string (`match: "USB0::0x1313::0x804A::M001::INSTR"`).
    mutating func match(_ node: Node, device: String) -> DeviceMatch? {
        if let text = node.scalar?.string {
            switch InstrumentResource.parse(text) {
            case .success(let m): return m
            case .failure(let e):
                error("match of '\(device)': \(e.description)", at: node)
                return nil
            }
        }
        let byKey = fields(node, allowed: ["usb", "file", "serial", "tcp"], what: "match of '\(device)'")
        if let port = byKey["serial"] {
            var path: String?, baud: Int?
            if port.scalar != nil {
                path = string(port, what: "serial")
            } else {
                let f = fields(port, allowed: ["path", "baud"], what: "serial match of '\(device)'")
                path = f["path"].flatMap { string($0, what: "path") }
                if path == nil, f["path"] == nil { error("serial match of '\(device)' needs 'path:' (like /dev/serial/by-id/…)", at: port) }
                baud = f["baud"].flatMap { integer($0, what: "baud", range: 50...4_000_000) }
            }
            guard let path else { return nil }
            guard path.hasPrefix("/dev/") else {
                error("serial port of '\(device)' must be a /dev path (like /dev/ttyUSB0 or /dev/serial/by-id/…), got '\(path)'", at: port)
                return nil
            }
            return .serial(path: path, baud: baud)
        }
        if let tcp = byKey["tcp"] {
            guard let text = string(tcp, what: "tcp") else { return nil }
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port),
                colon > text.startIndex
            else {
                error("tcp match of '\(device)' is HOST:PORT (SCPI instruments listen on 5025), got '\(text)'", at: tcp)
                return nil
            }
            return .tcp(host: String(text[..<colon]), port: port)
        }
        if let usb = byKey["usb"] {
            let ids = fields(usb, allowed: ["vendor", "product", "serial"], what: "usb match of '\(device)'")
            func hex(_ key: String) -> UInt16? {
                guard let n = ids[key] else {
                    error("usb match of '\(device)' needs '\(key)' (hexadecimal, as lsusb prints it)", at: usb)
                    return nil
                }
                guard let text = string(n, what: key) else { return nil }
                let digits = text.lowercased().hasPrefix("0x") ? String(text.dropFirst(2)) : text
                guard let v = UInt16(digits, radix: 16) else {
                    error("\(key) must be a 4-digit hexadecimal USB id like 0x1313, got '\(text)'", at: n)
                    return nil
                }
                return v
            }
            let vendor = hex("vendor"), product = hex("product")
            let serial = ids["serial"].flatMap { string($0, what: "serial") }
            guard let vendor, let product else { return nil }
            return .usb(vendor: vendor, product: product, serial: serial)
        }
        if let f = byKey["file"], let path = string(f, what: "file") { return .file(path) }
        if byKey.isEmpty { error("match needs 'usb', 'serial', 'tcp' or 'file', or a VISA resource string", at: node) }
        return nil
    }

    /// `device.property: value` pairs.
    mutating func compileAssignments(_ node: Node) -> [Assignment] {
        var out: [Assignment] = []
        for entry in entries(node, allowed: nil, what: "set") {
            if let a = assignment(target: entry.key, keyNode: entry.keyNode, valueNode: entry.value) { out.append(a) }
        }
        return out
    }

    mutating func resolveProperty(_ target: String, at node: Node, needSettable: Bool = true) -> (String, PropertySpec)? {
        let parts = target.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else {
            error("'\(target)' must name a device and a property, like pump.power", at: node)
            return nil
        }
        guard let descriptor = devices[parts[0]] else {
            error("unknown device '\(parts[0])'; declared devices: \(devices.keys.sorted().joined(separator: ", "))", at: node)
            return nil
        }
        guard let spec = descriptor.property(parts[1]) else {
            let known = descriptor.properties.filter { $0.settable || !needSettable }.map(\.name)
            error(
                "unknown property '\(parts[1])' of device '\(parts[0])' (driver \(descriptor.id)); \(needSettable ? "settable " : "")properties: "
                    + (known.isEmpty ? "none" : known.joined(separator: ", ")), at: node)
            return nil
        }
        guard spec.settable || !needSettable else {
            error("property '\(parts[1])' of device '\(parts[0])' is read-only", at: node)
            return nil
        }
        return (parts[0], spec)
    }

    mutating func assignment(target: String, keyNode: Node, valueNode: Node) -> Assignment? {
        guard let (device, spec) = resolveProperty(target, at: keyNode) else { return nil }
        guard let v = value(valueNode, for: spec, what: target) else { return nil }
        return Assignment(device: device, property: spec.name, value: v, location: location(valueNode))
    }
}
