import HeraldCore
import Synchronization

/// The driver conformance kit: one suite of checks that any driver — built-in, plugin or
/// mock — runs to prove it honours what its descriptor declares: its kind's capability
/// contract, property types and units, ranges (refused out of range, by the driver itself),
/// read-back of what was set, its safe state, bounded calls, cancellation, and for time
/// taggers the streaming contract (time order, interval, counts).
///
/// Call it from a test of the driver's package:
/// ```swift
/// let report = await DriverConformance(entry: entry, config: config).run()
/// #expect(report.failures.isEmpty, "\(report)")
/// ```
/// It sets every settable property over its range, so run it against a simulated or
/// emulated instrument, or with the beam blocked.
public struct DriverConformance: Sendable {
    public var entry: DriverEntry
    public var config: DeviceConfig
    /// Every call must return within this much real time.
    public var callLimit: Duration = .seconds(5)
    /// How long a time tagger acquires in the streaming check.
    public var acquisition: Duration = .milliseconds(50)
    /// Read-back tolerance per property (absolute, in SI units); default 1e-9 of the range span.
    public var tolerances: [String: Double] = [:]
    /// Properties not to touch (e.g. one whose change needs a person at the table).
    public var skip: Set<String> = []

    public init(entry: DriverEntry, config: DeviceConfig) {
        self.entry = entry
        self.config = config
    }

    /// One check and its outcome.
    public struct Check: Sendable, CustomStringConvertible {
        public var name: String
        public var problem: String?
        public var description: String { (problem == nil ? "ok    " : "FAIL  ") + name + (problem.map { ": \($0)" } ?? "") }
    }

    public struct Report: Sendable, CustomStringConvertible {
        public var driver: String
        public var checks: [Check]
        public var failures: [Check] { checks.filter { $0.problem != nil } }
        public var description: String {
            "conformance of \(driver): \(checks.count - failures.count)/\(checks.count) checks passed\n"
                + checks.map { "  \($0)" }.joined(separator: "\n")
        }
    }

    final class Log: Sendable {
        let checks = Mutex<[Check]>([])
        func record(_ name: String, _ problem: String?) { checks.withLock { $0.append(Check(name: name, problem: problem)) } }
    }

    struct Failure: Error { var message: String }

    /// Runs `body` with the real-time limit; its thrown error becomes the returned problem.
    /// Unstructured on purpose: a driver that ignores cancellation must not hang the kit.
    func bounded<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async -> Result<T, Failure> {
        let limit = callLimit
        return await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, Failure>, Never>) in
            let once = Once(continuation)
            let work = Task {
                do { once.finish(.success(try await body())) } catch {
                    once.finish(.failure(Failure(message: "\(what) threw \(error)")))
                }
            }
            Task {
                try? await Task.sleep(for: limit)
                work.cancel()
                once.finish(.failure(Failure(message: "\(what) did not return within \(limit)")))
            }
        }
    }

    /// Resumes a continuation once: whichever of the call and its deadline ends first.
    final class Once<T: Sendable>: Sendable {
        let state: Mutex<CheckedContinuation<T, Never>?>
        init(_ c: CheckedContinuation<T, Never>) { state = Mutex(c) }
        func finish(_ value: T) { state.withLock { c in c?.resume(returning: value); c = nil } }
    }

    public func run() async -> Report {
        let log = Log()
        let descriptor = entry.descriptor
        let problems = descriptor.contractProblems
        log.record("descriptor honours the \(descriptor.kind.rawValue) contract", problems.isEmpty ? nil : problems.joined(separator: "; "))
        for spec in descriptor.properties + descriptor.settings {
            if let r = spec.range, !(r.lowerBound.isFinite && r.upperBound.isFinite) {
                log.record("range of \(spec.name) is finite", "\(r)")
            }
        }
        let device: any Device
        do {
            device = try entry.make(config)
        } catch {
            log.record("opens with the given settings", "\(error)")
            return Report(driver: descriptor.id, checks: log.checks.withLock { $0 })
        }
        log.record(
            "device reports its name and descriptor",
            device.name == config.name && device.descriptor.id == descriptor.id
                ? nil : "name \(device.name), id \(device.descriptor.id)")

        if case .failure(let f) = await bounded("connect", { try await device.connect() }) {
            log.record("connects", f.message)
            return Report(driver: descriptor.id, checks: log.checks.withLock { $0 })
        }
        log.record("connects", nil)

        // Once connected, a driver may narrow a range to what is attached (a power meter's
        // sensor): the device's own descriptor is what it promises from then on, and it must
        // only narrow what the registry declared.
        for spec in device.descriptor.properties where !skip.contains(spec.name) {
            if let declared = descriptor.property(spec.name)?.range, let now = spec.range,
                now.lowerBound < declared.lowerBound || now.upperBound > declared.upperBound
            {
                log.record("connected range of \(spec.name) within the declared one", "\(now) is wider than \(declared)")
            }
            await checkProperty(spec, device: device, log: log)
        }
        await checkRefusals(device: device, log: log)

        if let tagger = device as? any TimeTagger {
            await checkStreaming(tagger, log: log)
            await checkCancellation(tagger, log: log)
        }

        switch await bounded("enter safe state", { try await device.enterSafeState() }) {
        case .failure(let f): log.record("enters its safe state", f.message)
        case .success:
            log.record("enters its safe state", nil)
            let expectations: [(String, Value)] = descriptor.kind == .laser ? [("enabled", .bool(false))]
                : descriptor.kind == .shutter ? [("open", .bool(false))] : []
            for (property, safe) in expectations {
                let read = await bounded("get \(property)") { try await device.get(property) }
                let ok = (try? read.get()) == safe
                log.record("safe state leaves \(property) = \(safe)", ok ? nil : "read \(read)")
            }
        }

        await device.disconnect()
        let again = await bounded("reconnect") { try await device.connect() }
        log.record("reconnects after disconnect", (try? again.get()) == nil ? "\(again)" : nil)
        await device.disconnect()
        return Report(driver: descriptor.id, checks: log.checks.withLock { $0 })
    }

    /// Reads the property (type and unit as declared); sets it over its range and reads back.
    func checkProperty(_ spec: PropertySpec, device: any Device, log: Log) async {
        let property = spec.name
        let read = await bounded("get \(property)") { try await device.get(property) }
        switch read {
        case .failure(let f): log.record("get \(property)", f.message)
        case .success(let v):
            log.record("get \(property) returns \(spec.type)", spec.accepts(typeOf: v) ? nil : "returned '\(v)'")
        }
        guard spec.settable else { return }
        for value in Self.samples(spec) {
            let set = await bounded("set \(property) = \(value)") { try await device.set(property, to: value) }
            if case .failure(let f) = set {
                log.record("set \(property) = \(value)", f.message)
                continue
            }
            let back = await bounded("get \(property)") { try await device.get(property) }
            log.record("set \(property) = \(value) reads back", matches(back, value, spec) ? nil : "read \(back)")
        }
    }

    func matches(_ read: Result<Value, Failure>, _ wanted: Value, _ spec: PropertySpec) -> Bool {
        guard case .success(let value) = read else { return false }
        if case .quantity(let a) = value, case .quantity(let b) = wanted {
            let span = spec.range.map { $0.upperBound - $0.lowerBound } ?? abs(b.value)
            let tolerance = tolerances[spec.name] ?? max(1e-9 * span, 1e-12 * abs(b.value))
            return a.dimension == b.dimension && abs(a.value - b.value) <= tolerance
        }
        return value == wanted
    }

    /// Values to set: range ends and middle, both booleans, every choice.
    static func samples(_ spec: PropertySpec) -> [Value] {
        switch spec.type {
        case .bool: return [.bool(true), .bool(false)]
        case .choice(let options): return options.map { .text($0) }
        case .text: return []
        case .quantity(let d):
            guard let r = spec.range else { return [] }
            return [r.lowerBound, (r.lowerBound + r.upperBound) / 2, r.upperBound].map { .quantity(Quantity($0, d)) }
        }
    }

    /// Out-of-range, wrong-type, read-only and unknown requests are refused with a
    /// DeviceError that names the device, and leave the value unchanged.
    func checkRefusals(device: any Device, log: Log) async {
        let name = device.name
        func refused(_ what: String, _ body: @escaping @Sendable () async throws -> Void) async {
            let result = await bounded(what) { () -> String? in
                do {
                    try await body()
                    return "was accepted"
                } catch let e as DeviceError {
                    return e.device == name ? nil : "error names device '\(e.device)', not '\(name)'"
                } catch {
                    return "threw \(type(of: error)), not a DeviceError naming the device"
                }
            }
            switch result {
            case .failure(let f): log.record("refuses \(what)", f.message)
            case .success(let problem): log.record("refuses \(what)", problem)
            }
        }
        for spec in device.descriptor.properties where spec.settable && !skip.contains(spec.name) {
            let property = spec.name
            if case .quantity(let d) = spec.type, let r = spec.range {
                let before = try? await device.get(property)
                let beyond = r.upperBound + max(1, r.upperBound - r.lowerBound)
                await refused("\(property) = \(beyond) (above its range)") { try await device.set(property, to: .quantity(Quantity(beyond, d))) }
                let after = try? await device.get(property)
                log.record("a refused \(property) leaves the value unchanged", before == after ? nil : "\(String(describing: before)) → \(String(describing: after))")
                await refused("\(property) = true (wrong type)") { try await device.set(property, to: .bool(true)) }
            }
            if case .bool = spec.type {
                await refused("\(property) = 1 W (wrong type)") { try await device.set(property, to: .quantity(Quantity(1, .power))) }
            }
        }
        for spec in device.descriptor.properties where !spec.settable {
            let property = spec.name
            let current = try? await device.get(property)
            await refused("a write to read-only \(property)") { try await device.set(property, to: current ?? .bool(true)) }
        }
        await refused("get of an undeclared property") { _ = try await device.get("no_such_property") }
        await refused("set of an undeclared property") { try await device.set("no_such_property", to: .bool(true)) }
    }

    /// Tags arrive in time order, inside the returned interval, and add up to its count.
    func checkStreaming(_ tagger: any TimeTagger, log: Log) async {
        let duration = acquisition
        let seen = Mutex<(count: Int, last: Int64, first: Int64?, disorder: String?)>((0, .min, nil, nil))
        let result = await bounded("acquire \(duration)") {
            try await tagger.acquire(for: duration) { block in
                seen.withLock { s in
                    for t in block.timestamps {
                        if t < s.last && s.disorder == nil { s.disorder = "tag at \(t) ps after \(s.last) ps" }
                        s.last = max(s.last, t)
                        s.first = s.first ?? t
                    }
                    s.count += block.count
                }
            }
        }
        guard case .success(let interval) = result else {
            if case .failure(let f) = result { log.record("acquires for \(duration)", f.message) }
            return
        }
        let s = seen.withLock { $0 }
        log.record("acquires for \(duration)", nil)
        log.record("delivers tags in time order", s.disorder)
        log.record(
            "interval covers the duration asked for",
            interval.stopPs - interval.startPs == picoseconds(duration) ? nil : "covered \(interval.stopPs - interval.startPs) ps")
        log.record("interval's tag count equals the tags delivered", interval.tags == s.count ? nil : "\(interval.tags) vs \(s.count)")
        let inside = s.count == 0 || (s.first.map { $0 >= interval.startPs } ?? true) && s.last < interval.stopPs
        log.record("tags lie inside the interval", inside ? nil : "first \(s.first ?? 0), last \(s.last), interval \(interval.startPs)..<\(interval.stopPs)")
    }

    /// A long acquisition cancelled mid-way returns promptly (well within the call limit).
    func checkCancellation(_ tagger: any TimeTagger, log: Log) async {
        let clock = ContinuousClock()
        let started = clock.now
        let task = Task { try await tagger.acquire(for: .seconds(3600)) { _ in } }
        try? await Task.sleep(for: .milliseconds(20))
        task.cancel()
        let ended = await bounded("cancelled acquisition") { _ = try? await task.value }
        let elapsed = clock.now - started
        if case .failure(let f) = ended {
            log.record("a cancelled acquisition returns promptly", f.message)
        } else {
            log.record("a cancelled acquisition returns promptly", elapsed < callLimit ? nil : "took \(elapsed)")
        }
    }
}
