import Foundation

/// One run as the catalogue indexes it. The run's HDF5 file stays the record of truth: every
/// field here is read from it again by `herald catalogue rebuild`.
public struct CatalogueRecord: Sendable, Codable, Equatable {
    /// How far a run got, as the catalogue knows it.
    public enum Status: String, Sendable, Codable, CaseIterable {
        /// Registered at its start and not yet stopped (or killed: see ``CatalogueRecord/displayStatus``).
        case running
        case success, failed, aborted
        /// Killed before it could stop, then closed by `herald recover`.
        case incomplete
    }

    /// A device as it took part: its name, driver and, for a device served by a node, the node.
    public struct DeviceEntry: Sendable, Codable, Equatable {
        public var name: String
        public var driver: String
        public var node: String?
        public init(name: String, driver: String, node: String? = nil) {
            self.name = name
            self.driver = driver
            self.node = node
        }
    }

    /// A headline figure of one analysis entry (`000_tomography`'s fidelity, …).
    public struct FigureEntry: Sendable, Codable, Equatable {
        /// The analysis entry in the file (`/user/herald/analysis/<entry>`).
        public var entry: String
        /// The analysis kind: tomography, chsh, g2, entanglement, …
        public var analysis: String
        /// The figure's key, as in the file (`fidelity`, `S`, `g2_0`, `herald_rate`).
        public var name: String
        public var value: Double
        public var error: Double?
        public init(entry: String, analysis: String, name: String, value: Double, error: Double? = nil) {
            self.entry = entry
            self.analysis = analysis
            self.name = name
            self.value = value
            self.error = error
        }
    }

    public var uid: String
    /// The script's `name:`.
    public var name: String
    public var scriptPath: String
    public var scriptRevision: String?
    public var scriptDirty: Bool?
    public var description: String = ""
    public var operatorName: String?
    public var sample: String?
    public var tags: [String] = []
    /// Every parameter as the run used it (text as written or given to `--set`).
    public var parameters: [String: String] = [:]
    /// The `--set` overrides alone.
    public var overrides: [String: String] = [:]
    /// The script's nodes (empty for a run on one host).
    public var nodes: [String] = []
    public var devices: [DeviceEntry] = []
    public var host: String?
    /// The runner's process id on `host`, so a run killed with its record still `running` is told from one that is.
    public var pid: Int?
    public var heraldVersion: String = ""
    public var mock: Bool = false
    public var startedAt: Date
    public var stoppedAt: Date?
    public var status: Status
    public var reason: String?
    /// The file as written (absolute), and its size in bytes when the run stopped.
    public var filePath: String
    public var fileSize: Int64?
    public var figures: [FigureEntry] = []

    public init(uid: String, name: String, scriptPath: String, startedAt: Date, status: Status, filePath: String) {
        self.uid = uid
        self.name = name
        self.scriptPath = scriptPath
        self.startedAt = startedAt
        self.status = status
        self.filePath = filePath
    }

    /// The status to show: a record still `running` whose runner is gone from this host was
    /// killed (`kill -9`, a power cut) and is `incomplete` until `herald recover` closes its file.
    public var displayStatus: String {
        guard status == .running else { return status.rawValue }
        if let pid, host == ProcessInfo.processInfo.hostName, !Self.processAlive(pid) { return "incomplete" }
        return status.rawValue
    }

    static func processAlive(_ pid: Int) -> Bool {
        guard pid > 0, let p = Int32(exactly: pid) else { return false }
        return kill(p, 0) == 0 || errno == EPERM
    }

    /// The value of a figure in this run, if one analysis gave it (the first, when several did).
    public func figure(_ name: String) -> FigureEntry? { figures.first { $0.name == name } }
}
