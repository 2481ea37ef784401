import Foundation

/// VISA resource strings, as instrument manuals and NI MAX print them, read as another
/// spelling of a device's `match:`:
///
/// - `USB0::0x1313::0x804A::M00412345::INSTR` — USB vendor, product, serial (USBTMC or any USB);
/// - `ASRL/dev/ttyUSB0::INSTR` — a serial port by its path (as pyvisa-py spells it);
/// - `TCPIP0::192.168.1.20::5025::SOCKET` — a raw SCPI socket.
///
/// Other resource kinds (GPIB, VXI-11 `::INSTR` over TCP/IP, HiSLIP, PXI) are refused with what
/// to write instead, never silently read as something else.
public enum InstrumentResource {
    /// Why a resource string was refused; `description` says what to write instead.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// Parses a VISA resource string into a match. Case-insensitive in its keywords, as VISA is.
    public static func parse(_ text: String) -> Result<DeviceMatch, ParseError> {
        let trimmed = text.trimmingWhitespace
        let parts = trimmed.components(separatedBy: "::")
        guard parts.count >= 2, let head = parts.first, !head.isEmpty else {
            return .failure(ParseError("'\(trimmed)' is not a VISA resource string (like USB0::0x1313::0x804A::M00412345::INSTR)"))
        }
        let upper = head.uppercased()
        if upper.hasPrefix("USB") {
            return usb(parts, text: trimmed)
        }
        if upper.hasPrefix("ASRL") {
            return serial(parts, head: head, text: trimmed)
        }
        if upper.hasPrefix("TCPIP") {
            return tcp(parts, text: trimmed)
        }
        for (prefix, what) in [("GPIB", "GPIB"), ("VXI", "VXI"), ("PXI", "PXI"), ("GPIB-VXI", "GPIB-VXI")] where upper.hasPrefix(prefix) {
            return .failure(ParseError("'\(trimmed)': \(what) resources are not supported; Herald reaches instruments over USB, serial ports and raw TCP sockets"))
        }
        return .failure(ParseError("'\(trimmed)': unknown interface '\(head)' (expected USB…, ASRL… or TCPIP…)"))
    }

    static func resourceClass(_ parts: [String], text: String, allowed: [String]) -> Result<String, ParseError> {
        guard let last = parts.last?.uppercased(), !last.isEmpty else {
            return .failure(ParseError("'\(text)' ends without a resource class (\(allowed.joined(separator: " or ")))"))
        }
        guard allowed.contains(last) else {
            return .failure(ParseError("'\(text)': unknown resource class '\(parts.last ?? "")' (expected \(allowed.joined(separator: " or ")))"))
        }
        return .success(last)
    }

    /// USB[board]::vendor::product::serial[::interface]::INSTR (or RAW).
    static func usb(_ parts: [String], text: String) -> Result<DeviceMatch, ParseError> {
        if case .failure(let e) = resourceClass(parts, text: text, allowed: ["INSTR", "RAW"]) { return .failure(e) }
        let fields = Array(parts.dropLast())
        guard fields.count >= 3, fields.count <= 5 else {
            return .failure(ParseError("'\(text)': a USB resource is USB0::VENDOR::PRODUCT::SERIAL::INSTR"))
        }
        guard let vendor = number(fields[1]), let product = number(fields[2]) else {
            return .failure(ParseError("'\(text)': vendor and product must be USB ids like 0x1313 (or decimal), got '\(fields[1])' and '\(fields[2])'"))
        }
        let serial = fields.count >= 4 && !fields[3].isEmpty ? fields[3] : nil
        return .success(.usb(vendor: vendor, product: product, serial: serial))
    }

    /// ASRL/dev/ttyUSB0::INSTR; the number form (ASRL3::INSTR) means a COM port, which Linux has not.
    static func serial(_ parts: [String], head: String, text: String) -> Result<DeviceMatch, ParseError> {
        if case .failure(let e) = resourceClass(parts, text: text, allowed: ["INSTR"]) { return .failure(e) }
        guard parts.count == 2 else { return .failure(ParseError("'\(text)': a serial resource is ASRL/dev/ttyUSB0::INSTR")) }
        let port = String(head.dropFirst(4))
        guard port.hasPrefix("/") else {
            return .failure(ParseError(
                "'\(text)' names a serial port by number, as Windows does; on Linux write its path: "
                    + "ASRL/dev/ttyUSB0::INSTR, or better the stable ASRL/dev/serial/by-id/…::INSTR"))
        }
        return .success(.serial(path: port, baud: nil))
    }

    /// TCPIP[board]::host::port::SOCKET. VXI-11 (`TCPIP0::host::INSTR`) and HiSLIP are not spoken.
    static func tcp(_ parts: [String], text: String) -> Result<DeviceMatch, ParseError> {
        if parts.last?.uppercased() == "INSTR" {
            return .failure(ParseError(
                "'\(text)' is a VXI-11 or HiSLIP resource, which Herald does not speak; use the instrument's raw SCPI socket: "
                    + "TCPIP0::\(parts.count > 1 ? parts[1] : "HOST")::5025::SOCKET"))
        }
        if case .failure(let e) = resourceClass(parts, text: text, allowed: ["SOCKET"]) { return .failure(e) }
        guard parts.count == 4 else { return .failure(ParseError("'\(text)': a socket resource is TCPIP0::HOST::PORT::SOCKET")) }
        let host = parts[1]
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" }) else {
            return .failure(ParseError("'\(text)': '\(host)' is not a host name or IP address"))
        }
        guard let port = Int(parts[2]), (1...65535).contains(port) else {
            return .failure(ParseError("'\(text)': port must be 1–65535, got '\(parts[2])'"))
        }
        return .success(.tcp(host: host, port: port))
    }

    static func number(_ text: String) -> UInt16? {
        let t = text.lowercased()
        if t.hasPrefix("0x") { return UInt16(t.dropFirst(2), radix: 16) }
        return UInt16(t)
    }
}

fileprivate extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
