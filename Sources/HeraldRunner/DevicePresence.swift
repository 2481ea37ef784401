import Foundation
import HeraldCore
import HeraldTransports
import HeraldUSB

/// Looks for every instrument a plan names before anything is opened for the run: USB ones
/// by enumeration (opening the device to read its serial number, claiming nothing), serial
/// ports by path, LAN ones by connecting and closing. Nothing is sent to any instrument.
/// Every missing device is reported, each at the line that describes it, so a bench with
/// three cables out is fixed in one go rather than one run at a time.
enum DevicePresence {
    static func problems(_ plan: Plan) -> [ScriptDiagnostic] {
        var out: [ScriptDiagnostic] = []
        for d in plan.devices where d.node == nil {
            let at = d.location ?? SourceLocation(file: plan.scriptPath, line: 1, column: 1)
            let what = "device '\(d.name)' (\(d.driver))"
            switch d.match {
            case .usb(let vendor, let product, let serial):
                let match = USBMatch(vendorID: vendor, productID: product, serial: serial)
                do {
                    let handle = try USBContext.shared().open(match)
                    handle.close()
                } catch let e as USBError where e.isNotFound {
                    out.append(ScriptDiagnostic("\(what): no USB instrument \(match) is plugged in (`herald devices` lists those that are)", at: at))
                } catch {
                    out.append(ScriptDiagnostic("\(what): USB instrument \(match) cannot be opened: \(error)", at: at))
                }
            case .serial(let path, _):
                if !FileManager.default.fileExists(atPath: path) {
                    out.append(ScriptDiagnostic("\(what): serial port '\(path)' does not exist (is it plugged in? `ls /dev/serial/by-id/` lists the ports)", at: at))
                }
            case .tcp(let host, let port):
                do {
                    let socket = try TCPSocket(host: host, port: port, timeout: .seconds(2))
                    socket.close()
                } catch {
                    out.append(ScriptDiagnostic("\(what): \(error)", at: at))
                }
            case .any, .file, .simulated: continue
            }
        }
        return out
    }

    /// Throws every missing device at once.
    static func check(_ plan: Plan) throws {
        let found = problems(plan)
        if !found.isEmpty { throw ScriptErrors(found) }
    }
}
