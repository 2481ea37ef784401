/// The fixed binary headers of PicoQuant's pre-PTU containers that Herald decodes:
/// - HydraHarp `.ht3` / `.ht2` (format versions 1.0 and 2.0, T3 or T2 mode; HydraHarp V1 / V2 records);
/// - PicoHarp 300 `.pt3` / `.pt2` (format version 2.0, T3 or T2 mode; PicoHarp T3 / T2 records);
/// - TimeHarp 200 `.t3r` (software versions 5.0 and 6.0; its own 32-bit record).
///
/// Fields keep the names of PicoQuant's file-format demos. The PTU tags Herald's decoding
/// needs (record type, record count, resolutions, acquisition time, sync rate) are added,
/// derived from those fields and pointing at their offsets, so the rest of the reader
/// treats every container alike.
enum LegacyHeader {
    /// Cursor over the header bytes; every read is bounds-checked against the file.
    struct Fields {
        let bytes: [UInt8]
        let path: String
        var offset = 0
        var tags: [PTUTag] = []

        mutating func need(_ count: Int, _ name: String) throws -> Int {
            guard offset + count <= bytes.count else {
                throw TTTRFileError(
                    path: path, offset: offset, "file ends inside the header (field \(name)); the file is truncated")
            }
            defer { offset += count }
            return offset
        }

        @discardableResult
        mutating func string(_ name: String, _ length: Int) throws -> String {
            let at = try need(length, name)
            let s = PTUHeader.cString(bytes[at..<(at + length)])
            tags.append(PTUTag(name: name, index: -1, value: .ansiString(s), offset: at))
            return s
        }

        mutating func skip(_ name: String, _ length: Int) throws { _ = try need(length, name) }

        @discardableResult
        mutating func int(_ name: String, index: Int32 = -1) throws -> Int64 {
            let at = try need(4, name)
            let v = Int64(Int32(bitPattern: PTUHeader.le32(bytes, at)))
            tags.append(PTUTag(name: name, index: index, value: .int(v), offset: at))
            return v
        }

        @discardableResult
        mutating func uint(_ name: String) throws -> Int64 {
            let at = try need(4, name)
            let v = Int64(PTUHeader.le32(bytes, at))
            tags.append(PTUTag(name: name, index: -1, value: .int(v), offset: at))
            return v
        }

        @discardableResult
        mutating func int64(_ name: String) throws -> Int64 {
            let at = try need(8, name)
            let v = Int64(bitPattern: PTUHeader.le64(bytes, at))
            tags.append(PTUTag(name: name, index: -1, value: .int(v), offset: at))
            return v
        }

        @discardableResult
        mutating func double(_ name: String) throws -> Double {
            let at = try need(8, name)
            let v = Double(bitPattern: PTUHeader.le64(bytes, at))
            tags.append(PTUTag(name: name, index: -1, value: .float(v), offset: at))
            return v
        }

        @discardableResult
        mutating func float(_ name: String, index: Int32 = -1) throws -> Double {
            let at = try need(4, name)
            let v = Double(Float(bitPattern: PTUHeader.le32(bytes, at)))
            tags.append(PTUTag(name: name, index: index, value: .float(v), offset: at))
            return v
        }

        /// The display curves, parameters and repeat settings both containers share.
        mutating func displayAndRepeatSettings() throws {
            for i in 0..<Int32(8) {
                try int("DispCurveMapTo", index: i)
                try int("DispCurveShow", index: i)
            }
            for i in 0..<Int32(3) {
                try float("ParamStart", index: i)
                try float("ParamStep", index: i)
                try float("ParamEnd", index: i)
            }
            for name in ["RepeatMode", "RepeatsPerCurve", "RepeatTime", "RepeatWaitTime"] { try int(name) }
            try string("ScriptName", 20)
        }

        /// The PTU tags decoding and import need, derived from a container's own fields:
        /// the record count, the time unit (sync period or global clock), the bin width, the
        /// acquisition time and how it stopped. `syncField` names where the sync rate came from.
        mutating func timing(
            records: Int64, globalResolution: Double, resolution: Double, syncRate: Int64, syncField: String,
            globalField: String? = nil, acquisitionMs: Int64, acquisitionField: String, stopAfter: Int64, stopReason: Int64
        ) {
            derived("TTResult_NumberOfRecords", .int(records), from: tags.contains { $0.name == "nRecords" } ? "nRecords" : "NumberOfRecords")
            derived("MeasDesc_GlobalResolution", .float(globalResolution), from: globalField ?? syncField)
            derived("MeasDesc_Resolution", .float(resolution), from: "Resolution")
            derived("MeasDesc_AcquisitionTime", .int(acquisitionMs), from: acquisitionField)
            derived("TTResult_SyncRate", .int(syncRate), from: syncField)
            derived("TTResult_StopAfter", .int(stopAfter), from: "StopAfter")
            derived("TTResult_StopReason", .int(stopReason), from: "StopReason")
        }

        /// The measurement block PicoHarp 300 and TimeHarp 200 headers share, from
        /// MeasurementMode to the script name; returns the mode and the acquisition time (ms).
        mutating func measurementSettings() throws -> (mode: Int64, acquisitionMs: Int64) {
            let mode = try int("MeasurementMode")
            try int("SubMode")
            try int("RangeNo")
            try int("Offset")
            let tacq = try int("AcquisitionTime")
            try uint("StopAt")
            for name in ["StopOnOvfl", "Restart", "DispLinLog", "DispTimeAxisFrom", "DispTimeAxisTo", "DispCountAxisFrom", "DispCountAxisTo"] {
                try int(name)
            }
            try displayAndRepeatSettings()
            return (mode, tacq)
        }

        /// The identification block HydraHarp and PicoHarp containers open with.
        mutating func identification() throws {
            try string("Ident", 16)
            try string("FormatVersion", 6)
            try string("CreatorName", 18)
            try string("CreatorVersion", 12)
            try string("FileTime", 18)
            try skip("CRLF", 2)
            try string("Comment", 256)
        }

        /// A tag Herald derives (a PTU name for a legacy field), placed at the field's offset.
        mutating func derived(_ name: String, _ value: PTUValue, from field: String) {
            let at = tags.last { $0.name == field }?.offset ?? 0
            tags.append(PTUTag(name: name, index: -1, value: value, offset: at))
        }
    }

    /// Recognises a legacy container by its identifier and parses its header; nil if the file
    /// does not start with one. Legacy formats Herald does not decode fail with what to do.
    static func parse(path: String, read: (Int, Int) throws -> [UInt8]) throws -> (PTUHeader, RecordFormat)? {
        let probe = try read(0, 22)
        let ident = PTUHeader.cString(probe.prefix(16)[...])
        let version = PTUHeader.cString(probe.dropFirst(16)[...])
        switch ident {
        case "HydraHarp":
            guard version == "1.0" || version == "2.0" else {
                throw TTTRFileError(path: path, offset: 16, "HydraHarp container format version '\(version)' is not 1.0 or 2.0")
            }
            return try hydraHarp(path: path, version: version, bytes: try read(0, 696 + 64 * 20 + 24))
        case "TimeHarp 200":
            switch version {
            case "5.0": return try timeHarp200(path: path, version: version, bytes: try read(0, 592))
            case "6.0": return try timeHarp200(path: path, version: version, bytes: try read(0, 640))
            default:
                throw TTTRFileError(
                    path: path, offset: 16, "TimeHarp 200 software version '\(version)' files are not decoded (only 5.0 and 6.0 .t3r are)")
            }
        case "PicoHarp 300" where version == "2.0":
            return try picoHarp300(path: path, bytes: try read(0, 728))
        case "PicoHarp 300", "TimeHarp 260", "MultiHarp":
            throw TTTRFileError(
                path: path, offset: 0,
                "a legacy \(ident) container (format \(version)); Herald decodes legacy .ht3/.ht2, .pt3/.pt2 (2.0) and .t3r only "
                    + "(there is no layout to check the others against): re-save it as .ptu with PicoQuant's software")
        default:
            return nil
        }
    }

    /// HydraHarp .ht3: the layout is fixed up to the per-input block, whose length depends on
    /// the number of inputs present.
    static func hydraHarp(path: String, version: String, bytes: [UInt8]) throws -> (PTUHeader, RecordFormat) {
        var f = Fields(bytes: bytes, path: path)
        try f.identification()
        for name in ["NumberOfCurves", "BitsPerRecord", "ActiveCurve"] { try f.int(name) }
        let mode = try f.int("MeasurementMode")
        try f.int("SubMode")
        try f.int("Binning")
        let resolutionPs = try f.double("Resolution")
        try f.int("Offset")
        let tacq = try f.int("Tacq")
        try f.uint("StopAt")
        for name in ["StopOnOvfl", "Restart", "DispLinLog", "DispTimeFrom", "DispTimeTo", "DispCountsFrom", "DispCountsTo"] {
            try f.int(name)
        }
        try f.displayAndRepeatSettings()
        try f.string("HardwareIdent", 16)
        try f.string("HardwarePartNo", 8)
        try f.int("HardwareSerial")
        try f.int("NumberOfModules")
        for i in 0..<10 {
            try f.int("ModelCode", index: Int32(i))
            try f.int("VersionCode", index: Int32(i))
        }
        try f.double("BaseResolution")
        try f.int64("InputsEnabled")
        let inputs = try f.int("InpChansPresent")
        guard (0...64).contains(inputs) else {
            throw TTTRFileError(path: path, offset: f.offset - 4, "InpChansPresent is \(inputs); a HydraHarp has at most 64 inputs")
        }
        for name in ["RefClockSource", "ExtDevices", "MarkerSettings", "SyncDivider", "SyncCFDLevel", "SyncCFDZeroCross", "SyncOffset"] {
            try f.int(name)
        }
        // The input block is what makes the header variable: re-read it at its real length.
        let rest = Int(inputs) * 20 + 24
        if f.offset + rest > f.bytes.count {
            throw TTTRFileError(path: path, offset: f.offset, "file ends inside the header (input settings); the file is truncated")
        }
        for i in 0..<Int32(inputs) {
            for name in ["InputModuleIndex", "InputCFDLevel", "InputCFDZeroCross", "InputOffset"] { try f.int(name, index: i) }
        }
        for i in 0..<Int32(inputs) { try f.int("InputRate", index: i) }
        let syncRate = try f.int("SyncRate")
        let stopAfter = try f.int("StopAfter")
        let stopReason = try f.int("StopReason")
        let imageHeader = try f.int("ImgHdrSize")
        let records = try f.int64("nRecords")
        // T3 (3, .ht3) or T2 (2, .ht2): the same container, T2 records tagged in the base resolution.
        guard mode == 3 || mode == 2 else {
            throw TTTRFileError(path: path, offset: 340, "MeasurementMode \(mode) is neither T2 (2, .ht2) nor T3 (3, .ht3): the file holds no time tags")
        }
        let t2 = mode == 2
        guard (0...(1 << 20)).contains(imageHeader) else {
            throw TTTRFileError(path: path, offset: f.offset - 12, "ImgHdrSize is \(imageHeader); the header is corrupt")
        }
        guard t2 || syncRate > 0 else {
            throw TTTRFileError(path: path, offset: f.offset - 24, "SyncRate is \(syncRate); a T3 file needs the sync rate for its time unit")
        }
        guard resolutionPs > 0, resolutionPs.isFinite, resolutionPs < 1e6 else {
            throw TTTRFileError(path: path, offset: 352, "Resolution is \(resolutionPs) ps, not a positive bin width")
        }
        let dataOffset = f.offset + Int(imageHeader) * 4
        // Format 1.0 was written by HydraHarp software 1.x (V1 records), 2.0 by 2.x (V2).
        let code: UInt32 = (version == "1.0" ? 0x0001_0004 : 0x0101_0004) | (t2 ? 0x0200 : 0x0300)
        guard let format = RecordFormat(recordType: code) else {
            throw TTTRFileError(path: path, offset: 16, "no record format for HydraHarp container \(version)")
        }
        f.derived("TTResultFormat_TTTRRecType", .int(Int64(code)), from: "FormatVersion")
        // T3: time tags count sync periods; T2: they are in the bin width itself.
        f.timing(
            records: records, globalResolution: t2 ? resolutionPs * 1e-12 : 1 / Double(syncRate), resolution: resolutionPs * 1e-12,
            syncRate: syncRate, syncField: "SyncRate", globalField: t2 ? "Resolution" : nil, acquisitionMs: tacq, acquisitionField: "Tacq",
            stopAfter: stopAfter, stopReason: stopReason)
        return (PTUHeader(version: version, tags: f.tags, dataOffset: dataOffset), format)
    }

    /// PicoHarp 300 .pt3 (format 2.0): a fixed 728-byte header (the common part, the hardware
    /// block with its four router inputs, the TTTR block), the image header, then T3 records
    /// of 4-bit channel, 12-bit dtime and 16-bit nsync. The time unit is the sync period.
    static func picoHarp300(path: String, bytes: [UInt8]) throws -> (PTUHeader, RecordFormat) {
        var f = Fields(bytes: bytes, path: path)
        try f.identification()
        for name in ["NumberOfCurves", "BitsPerRecord", "RoutingChannels", "NumberOfBoards", "ActiveCurve"] { try f.int(name) }
        let (mode, tacq) = try f.measurementSettings()
        try f.string("HardwareIdent", 16)
        try f.string("HardwarePartNo", 8)
        for name in ["HardwareSerial", "SyncDivider", "CFDZeroCross0", "CFDLevel0", "CFDZeroCross1", "CFDLevel1"] { try f.int(name) }
        let resolutionNs = try f.float("Resolution")
        try f.int("RouterModelCode")
        try f.int("RouterEnabled")
        for i in 0..<Int32(4) {
            for name in ["RtChan_InputType", "RtChan_InputLevel", "RtChan_InputEdge", "RtChan_CFDPresent", "RtChan_CFDLevel", "RtChan_CFDZeroCross"] {
                try f.int(name, index: i)
            }
        }
        for name in ["ExtDevices", "Reserved1", "Reserved2"] { try f.int(name) }
        let syncRate = try f.int("InpRate0")
        try f.int("InpRate1")
        let stopAfter = try f.int("StopAfter")
        let stopReason = try f.int("StopReason")
        let records = try f.int("nRecords")
        let imageHeader = try f.int("ImgHdrSize")
        // T3 (3, .pt3) or T2 (2, .pt2): the same container, T2 records tagged in the bin width (4 ps).
        guard mode == 3 || mode == 2 else {
            throw TTTRFileError(path: path, offset: 348, "MeasurementMode \(mode) is neither T2 (2, .pt2) nor T3 (3, .pt3): the file holds no time tags")
        }
        let t2 = mode == 2
        guard (0...(1 << 20)).contains(imageHeader), records >= 0 else {
            throw TTTRFileError(path: path, offset: f.offset - 8, "nRecords \(records) / ImgHdrSize \(imageHeader): the header is corrupt")
        }
        guard t2 || syncRate > 0 else {
            throw TTTRFileError(path: path, offset: f.offset - 24, "InpRate0 (the sync rate) is \(syncRate); a T3 file needs it for its time unit")
        }
        guard resolutionNs > 0, resolutionNs.isFinite, resolutionNs < 1e3 else {
            throw TTTRFileError(path: path, offset: 584, "Resolution is \(resolutionNs) ns, not a positive bin width")
        }
        let code: UInt32 = t2 ? 0x0001_0203 : 0x0001_0303
        // The field is a float32: 0.004 ns reads back as 0.0040000002, which over a T2 file's
        // seconds of 4 ps tags adds up to a hundred picoseconds. Its shortest decimal is what was meant.
        let t2UnitNs = Double("\(Float(resolutionNs))") ?? resolutionNs
        guard let format = RecordFormat(recordType: code) else {
            throw TTTRFileError(path: path, offset: 16, "no record format for the PicoHarp container")
        }
        f.derived("TTResultFormat_TTTRRecType", .int(Int64(code)), from: "FormatVersion")
        f.timing(
            records: records, globalResolution: t2 ? (t2UnitNs * 1e3) * 1e-12 : 1 / Double(syncRate), resolution: Double(resolutionNs) * 1e-9,
            syncRate: syncRate, syncField: "InpRate0", globalField: t2 ? "Resolution" : nil, acquisitionMs: tacq,
            acquisitionField: "AcquisitionTime", stopAfter: stopAfter, stopReason: stopReason)
        return (PTUHeader(version: "2.0", tags: f.tags, dataOffset: f.offset + Int(imageHeader) * 4), format)
    }

    /// TimeHarp 200 .t3r: a fixed header before the image header, 592 bytes from software 5.0
    /// and 640 from 6.0, which names its version fields as the later containers do
    /// (FormatVersion, CreatorName, CreatorVersion) and adds the board's ident and version
    /// before its settings. Records and everything else are the same.
    static func timeHarp200(path: String, version: String, bytes: [UInt8]) throws -> (PTUHeader, RecordFormat) {
        var f = Fields(bytes: bytes, path: path)
        let six = version == "6.0"
        try f.string("Ident", 16)
        if six {
            try f.string("FormatVersion", 6)
            try f.string("CreatorName", 18)
            try f.string("CreatorVersion", 12)
        } else {
            try f.string("SoftwareVersion", 6)
            try f.string("HardwareVersion", 6)
        }
        try f.string("FileTime", 18)
        try f.skip("CRLF", 2)
        try f.string("Comment", 256)
        for name in ["NumberOfChannels", "NumberOfCurves", "BitsPerChannel", "RoutingChannels", "NumberOfBoards", "ActiveCurve"] {
            try f.int(name)
        }
        let (mode, tacq) = try f.measurementSettings()
        if six {
            try f.string("HardwareIdent", 16)
            try f.string("HardwareVersion", 8)
        }
        for name in ["BoardSerial", "CFDZeroCross", "CFDDiscriminatorMin", "SYNCLevel", "CurveOffset"] { try f.int(name) }
        let resolutionNs = try f.float("Resolution")
        let clockNs = try f.int("TTTRGlobclock")
        try f.int("ExtDevices")
        for i in 1...5 { try f.int("Reserved\(i)") }
        let syncRate = try f.int("SyncRate")
        try f.int("AverageCFDRate")
        let stopAfter = try f.int("StopAfter")
        let stopReason = try f.int("StopReason")
        let records = try f.int("nRecords")
        let imageHeader = try f.int("ImgHdrSize")
        guard mode == 2 else {
            throw TTTRFileError(
                path: path, offset: six ? 352 : 328, "MeasurementMode \(mode) is not TTTR (2): a TimeHarp 200 histogram file holds no time tags")
        }
        guard (0...(1 << 20)).contains(imageHeader), records >= 0 else {
            throw TTTRFileError(path: path, offset: f.offset - 8, "nRecords \(records) / ImgHdrSize \(imageHeader): the header is corrupt")
        }
        guard clockNs > 0, resolutionNs > 0, resolutionNs.isFinite else {
            throw TTTRFileError(
                path: path, offset: six ? 584 : 536, "Resolution \(resolutionNs) ns / TTTRGlobclock \(clockNs) ns must be positive")
        }
        f.timing(
            records: records, globalResolution: Double(clockNs) * 1e-9, resolution: resolutionNs * 1e-9, syncRate: syncRate,
            syncField: "SyncRate", globalField: "TTTRGlobclock", acquisitionMs: tacq, acquisitionField: "AcquisitionTime", stopAfter: stopAfter,
            stopReason: stopReason)
        return (PTUHeader(version: version, tags: f.tags, dataOffset: f.offset + Int(imageHeader) * 4), .timeHarp200)
    }
}
