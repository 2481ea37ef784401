import HeraldCore
import SimulatedLab
import Synchronization

/// The devices of a simulated quantum network (`simulation.network`): each node's entangler
/// and qubit readout, the analyser's tagger, a fibre's polarisation controller and a fibre
/// spool switch. The physics lives in the lab; these are its instruments, so a script
/// written against them drives real entanglers and readouts unchanged.

/// The node a network device belongs to, checked against the simulated network.
func networkNode(_ config: DeviceConfig, lab: SimulatedLab) throws -> String {
    guard let node = config.settings["node"]?.text else {
        throw DeviceError(device: config.name, .rejected, "setting 'node' must name a node of simulation.network")
    }
    guard lab.network.nodes[node] != nil else {
        let known = lab.network.nodes.keys.sorted().joined(separator: ", ")
        throw DeviceError(
            device: config.name, .rejected,
            "node '\(node)' is not in simulation.network" + (known.isEmpty ? " (the script simulates no network)" : " (nodes: \(known))"))
    }
    return node
}

/// A node's real-time entangler on the simulated network. The master's attempt loop
/// draws heralds from the link's physics; an injected `garbage` fault makes it report a
/// herald after its own timeout, as a confused gateware would.
public final class MockEntangler: Entangler {
    public static let descriptor = DriverDescriptor(
        id: "mock.entangler", version: "0.1.0", summary: "Simulated node entangler (attempt loop of the simulated network)",
        kind: .entangler,
        properties: [
            PropertySpec("emission_delay", .quantity(.time), range: -1e-3...1e-3, summary: "delay of this node's excitation"),
            PropertySpec("armed", .bool, settable: false, summary: "configured for an attempt loop"),
        ],
        settings: [PropertySpec("node", .text, summary: "the node of simulation.network")],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let node: String
    private let configuration = Mutex<EntanglerConfiguration?>(nil)

    public init(config: DeviceConfig, lab: SimulatedLab) throws {
        name = config.name
        self.lab = lab
        node = try networkNode(config, lab: lab)
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func configure(_ c: EntanglerConfiguration) async throws {
        try await lab.checkFault(device: name, operation: "configure")
        do {
            try await lab.configureEntangler(node: node, c)
        } catch let e as DeviceError {
            throw DeviceError(device: name, e.kind, e.detail)
        }
        configuration.withLock { $0 = c }
    }

    public func runAttemptLoop() async throws -> EntanglerOutcome {
        let fault = try await lab.checkFault(device: name, operation: "attempt loop")
        let outcome: EntanglerOutcome
        do {
            outcome = try await lab.runAttemptLoop(master: node)
        } catch let e as DeviceError {
            throw DeviceError(device: name, e.kind, e.detail)
        }
        if fault == .garbage, case .herald(let t, let p, _) = outcome, let c = configuration.withLock({ $0 }) {
            // A herald stamped after the loop's own timeout: the engine must refuse it.
            return .herald(timePs: t + c.timeoutPs + c.cyclePs, pattern: p, attempts: c.timeoutPs / max(1, c.cyclePs) + 1)
        }
        return outcome
    }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        if let q = value.quantity?.value { await lab.setEmissionDelay(node: node, seconds: q) }
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}") }
        if property == "armed" { return .bool(configuration.withLock { $0 } != nil) }
        return .quantity(.seconds(await lab.emissionDelay(node: node)))
    }

    /// Stops arming: no excitation pulses leave an entangler that is not looping.
    public func enterSafeState() async throws {
        configuration.withLock { $0 = nil }
        try await lab.checkFault(device: name, operation: "enter safe state")
    }

    public func disconnect() async {}
}

/// A node's qubit readout: state-dependent fluorescence against a threshold.
public final class MockQubitReadout: QubitReadout {
    public static let descriptor = DriverDescriptor(
        id: "mock.qubit-readout", version: "0.1.0", summary: "Simulated qubit readout (fluorescence counts against a threshold)",
        kind: .qubitReadout,
        properties: [PropertySpec("threshold", .quantity(.dimensionless), settable: false, summary: "bright when counts ≥ this")],
        settings: [PropertySpec("node", .text, summary: "the node of simulation.network")],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let node: String

    public init(config: DeviceConfig, lab: SimulatedLab) throws {
        name = config.name
        self.lab = lab
        node = try networkNode(config, lab: lab)
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func measure(in basis: ReadoutBasis) async throws -> QubitMeasurement {
        if try await lab.checkFault(device: name, operation: "measure") == .garbage {
            throw DeviceError(device: name, .invalidResponse, "measure: unreadable reply (injected fault)")
        }
        return try await lab.measureQubit(node: node, basis: basis)
    }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}") }
        return .quantity(Quantity(Double(lab.network.nodes[node]?.threshold ?? 0), .dimensionless))
    }

    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}

/// The Bell-state analyser's time tagger: channels 1–4 are the detectors behind c_H, c_V,
/// d_H and d_V. It streams while the entangler sets the pace; a plain acquisition records
/// the analyser's clicks (none while no attempt loop runs) for that long.
public final class MockAnalyserTagger: StreamingTagger {
    public static let descriptor: DriverDescriptor = {
        var d = DriverDescriptor(
        id: "mock.analyser-tagger", version: "0.1.0", summary: "Simulated Bell-state analyser tagger (channels 1–4: c_H c_V d_H d_V)",
        kind: .timeTagger, properties: [],
        settings: [PropertySpec("links", .text, summary: "comma-separated links it records (default: all)")],
        isMock: true)
        d.standsInForKind = false
        return d
    }()

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    public var channelCount: Int { 4 }
    private let lab: SimulatedLab
    private let links: [String]

    public init(config: DeviceConfig, lab: SimulatedLab) throws {
        name = config.name
        self.lab = lab
        links = (config.settings["links"]?.text ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        for link in links where lab.network.links[link] == nil {
            throw DeviceError(device: name, .rejected, "link '\(link)' is not in simulation.network.links")
        }
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func collect() async throws -> (TagBlock, AcquisitionInterval) {
        try await lab.checkFault(device: name, operation: "collect")
        return await lab.collectAnalyserClicks(links: links)
    }

    public func acquire(for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void) async throws -> AcquisitionInterval {
        try await lab.checkFault(device: name, operation: "acquire")
        _ = await lab.collectAnalyserClicks(links: links)
        try await lab.advance(by: duration)
        let (block, interval) = await lab.collectAnalyserClicks(links: links)
        if block.count > 0 { try await deliver(block) }
        return interval
    }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
    }

    public func get(_ property: String) async throws -> Value {
        throw DeviceError(device: name, .unsupported, "no property \(property)")
    }

    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}

/// An element in a node's fibre to the analyser: a motorised polarisation controller (its
/// `angle` takes back the fibre's rotation and drift, so sweeping it finds the compensation)
/// or an optical switch between fibre spools (its `length` selects the spool, for
/// rate-against-distance scans).
public final class MockFibreElement: Device {
    public enum Element: Sendable { case polarisationController, spoolSwitch }

    static let fibreSettings = [
        PropertySpec("link", .text, summary: "the link of simulation.network"),
        PropertySpec("node", .text, summary: "whose fibre it sits in"),
    ]

    public static let polarisationController: DriverDescriptor = {
        var d = DriverDescriptor(
            id: "mock.polarisation-controller", version: "0.1.0", summary: "Simulated fibre polarisation controller", kind: .rotator,
            properties: [PropertySpec("angle", .quantity(.angle), range: -360...360, summary: "rotation taken back out of the fibre")],
            settings: fibreSettings, isMock: true)
        // A rotator, but not one --mock may put in place of a waveplate mount.
        d.standsInForKind = false
        return d
    }()

    public static let spoolSwitch = DriverDescriptor(
        id: "mock.fibre-switch", version: "0.1.0", summary: "Simulated fibre-spool switch (a link's length)", kind: .fibreSwitch,
        properties: [PropertySpec("length", .quantity(.length), range: 0...1e6, summary: "fibre length in the path")],
        settings: fibreSettings, isMock: true)

    public let name: String
    public let descriptor: DriverDescriptor
    private let element: Element
    private let lab: SimulatedLab
    private let link: String
    private let node: String

    public init(config: DeviceConfig, lab: SimulatedLab, element: Element) throws {
        name = config.name
        self.lab = lab
        self.element = element
        descriptor = element == .polarisationController ? Self.polarisationController : Self.spoolSwitch
        node = try networkNode(config, lab: lab)
        guard let link = config.settings["link"]?.text, let l = lab.network.links[link], l.nodes.contains(node) else {
            throw DeviceError(
                device: config.name, .rejected, "setting 'link' must name a link of simulation.network that joins node '\(node)'")
        }
        self.link = link
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        guard let q = value.quantity?.value else { return }
        switch element {
        case .polarisationController: await lab.setCompensation(link: link, node: node, degrees: q)
        case .spoolSwitch: await lab.setFibreLength(link: link, node: node, metres: q)
        }
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}") }
        switch element {
        case .polarisationController: return .quantity(.degrees(await lab.compensation(link: link, node: node)))
        case .spoolSwitch: return .quantity(Quantity(await lab.fibreLength(link: link, node: node) ?? 0, .length))
        }
    }

    /// Neither element has a hazardous state: it stays where it is.
    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}
