import Foundation
import HeraldCore

/// A fault injected into one simulated device from a given lab time on, written in a
/// script's `simulation.faults` list or on the command line (`--fault`) as
/// `DEVICE KIND [at TIME]`, e.g. `tagger stall at 1.5 s`.
///
/// Each kind imitates a failure real labs see, and each has one documented outcome
/// (docs/drivers.md, "Fault injection"):
public struct FaultSpec: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// The device vanishes (USB unplugged): every call fails with `disconnected`, and an
        /// acquisition in progress ends at that time after delivering the tags before it.
        case disconnect
        /// The device stops answering: calls hang until the sequencer's per-device timeout.
        case timeout
        /// The device answers garbage: reads return malformed values, writes get malformed
        /// replies, and a tagger delivers tags out of time order.
        case garbage
        /// A tagger stops producing tags but stays connected: its acquisition hangs.
        case stall
        /// A tagger's link saturates: its bandwidth falls to 100 k tags/s, its buffer
        /// overflows, and the lost intervals are marked.
        case overflow
    }

    public var device: String
    public var kind: Kind
    /// Lab time (seconds since the run began) from which the fault holds.
    public var at: Double

    public init(device: String, kind: Kind, at: Double = 0) {
        self.device = device
        self.kind = kind
        self.at = at
    }

    public var description: String { "\(device) \(kind.rawValue) at \(at) s" }

    /// The bandwidth of a tagger under an `overflow` fault, tags per second.
    public static let overflowBandwidth = 100e3

    /// Parses `DEVICE KIND [at TIME]`; the error says what was expected.
    public static func parse(_ text: String) throws(LabParameterError) -> FaultSpec {
        let words = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        let kinds = Kind.allCases.map(\.rawValue).joined(separator: ", ")
        guard words.count >= 2 else {
            throw LabParameterError("a fault is 'DEVICE KIND [at TIME]', e.g. 'tagger stall at 1.5 s'; got '\(text)'")
        }
        guard let kind = Kind(rawValue: words[1]) else {
            throw LabParameterError("unknown fault kind '\(words[1])'; expected one of \(kinds)")
        }
        var at = 0.0
        if words.count > 2 {
            guard words[2] == "at", words.count > 3 else {
                throw LabParameterError("after the fault kind, expected 'at TIME' (e.g. 'at 2 s'); got '\(words[2...].joined(separator: " "))'")
            }
            let timeText = words[3...].joined(separator: " ")
            guard let q = Quantity.parse(timeText), q.dimension == .time, q.value >= 0 else {
                throw LabParameterError("fault time '\(timeText)' is not a time such as 500 ms or 2 s")
            }
            // Lab time is counted in Int64 picoseconds (about 106 days); a run is far shorter.
            guard q.value <= 1e6 else {
                throw LabParameterError("fault time '\(timeText)' is beyond 10⁶ s (11.6 days) of lab time")
            }
            at = q.value
        }
        return FaultSpec(device: words[0], kind: kind, at: at)
    }
}

extension SimulatedLab {
    /// The fault of `device` in force at lab time `ps`, if any.
    public nonisolated func fault(for device: String, atPs ps: Int64) -> FaultSpec? {
        faults.filter { $0.device == device && Double(ps) * 1e-12 >= $0.at }.max { $0.at < $1.at }
    }

    /// The lab time, in picoseconds, at which `kind` starts for `device`, if it is injected.
    public nonisolated func faultStartPs(for device: String, _ kind: FaultSpec.Kind) -> Int64? {
        faults.first { $0.device == device && $0.kind == kind }.map { Int64(clampingRounded: $0.at * 1e12) }
    }

    /// Called by mock drivers before each operation: fails or hangs as the device's fault
    /// dictates at the current lab time, and returns the fault so reads can answer garbage.
    @discardableResult
    public nonisolated func checkFault(device: String, operation: String) async throws -> FaultSpec.Kind? {
        guard let fault = fault(for: device, atPs: nowPs) else { return nil }
        switch fault.kind {
        case .disconnect:
            throw DeviceError(device: device, .disconnected, "\(operation): the device is gone (injected fault: \(fault))")
        case .timeout:
            throw SimulatedHang()
        case .garbage, .stall, .overflow:
            return fault.kind
        }
    }

    /// What every mock does before a write: its own check against its declaration (range,
    /// type, read-only), then the device's fault.
    public nonisolated func checkWrite(
        device: String, descriptor: DriverDescriptor, _ property: String, _ value: Value
    ) async throws {
        try descriptor.check(property, value, device: device)
        if try await checkFault(device: device, operation: "set \(property)") == .garbage {
            throw DeviceError(device: device, .invalidResponse, "set \(property): unreadable reply (injected fault)")
        }
    }

    /// What every mock does before a read: an undeclared property is refused; true when
    /// the device's fault makes it answer garbage.
    public nonisolated func readIsGarbled(device: String, descriptor: DriverDescriptor, _ property: String) async throws -> Bool {
        guard descriptor.property(property) != nil else {
            throw DeviceError(device: device, .unsupported, "no property \(property)")
        }
        return try await checkFault(device: device, operation: "get \(property)") == .garbage
    }

}
