#!/usr/bin/python3
"""Runs a command against emulated USB instruments (umockdev), with fault switches.

    usblab.py [--device SPEC]... [--fault DEVICE:KIND@TRIGGER]... [--report FILE] -- COMMAND...

Device specs:  itc4001:SERIAL[:keylock]   ell14:SERIAL:ROLE (a-qwp, a-hwp, b-qwp, b-hwp)
               tdc1:SERIAL[:bench=RATE]   (RATE in detections/s: a synthetic high-rate stream)
               pm100:SERIAL   ted4015:SERIAL
Faults: unplug, stall, timeout, malformed, short, garbage, wrong-btag.
Triggers: on=TEXT (when a command containing TEXT arrives), after=N (after N commands),
at=SECONDS (after the command started). Every fault but unplug applies to one reply.

The exit status is the command's. --report writes JSON: each instrument's command log and
final state (so a test can check the laser was left off), and the faults that fired.
Needs the Debian packages umockdev, gir1.2-umockdev-1.0 and python3-gi; run with /usr/bin/python3.
"""
import argparse
import json
import os
import subprocess
import sys
import time

# The testbed's own libudev calls (uevents) must see the testbed too: re-run under the preload.
if "libumockdev-preload" not in os.environ.get("LD_PRELOAD", ""):
    os.environ["LD_PRELOAD"] = "libumockdev-preload.so.0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import usbdevfs  # noqa: E402  (selects the UMockdev 1.0 typelib)
from gi.repository import GLib, UMockdev  # noqa: E402

import instruments  # noqa: E402
from usbdevfs import UsbDevice, description, later  # noqa: E402

FAULTS = {"unplug", "stall", "timeout", "malformed", "short", "garbage", "wrong-btag"}


def build(lab, spec):
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    serial = parts[0] if parts else kind.upper() + "0001"
    if kind == "itc4001":
        return serial, instruments.ITC4001(lab, serial, keylock_tripped="keylock" in parts[1:])
    if kind == "ell14":
        if len(parts) < 2:
            sys.exit("usblab: ell14 needs a role: ell14:SERIAL:a-qwp")
        return serial, instruments.ELL14(lab, serial, parts[1])
    if kind == "tdc1":
        bench = next((float(p.split("=", 1)[1]) for p in parts[1:] if p.startswith("bench=")), None)
        return serial, instruments.TDC1(lab, serial, bench_rate=bench)
    if kind == "pm100":
        return serial, instruments.PM100(lab, serial)
    if kind == "ted4015":
        return serial, instruments.TED4015(lab, serial)
    sys.exit(f"usblab: unknown instrument '{kind}' (itc4001, ell14, tdc1, pm100, ted4015)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", action="append", default=[])
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--report")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120, help="kill the command after this many seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (after --)")

    lab = instruments.Lab(seed=args.seed)
    testbed = UMockdev.Testbed.new()
    devices = {}
    for number, spec in enumerate(args.device):
        serial, instrument = build(lab, spec)
        address, port = 10 + number, 1 + number
        sys_path, node, text = description(1, address, port, instrument.vid, instrument.pid, serial,
                                           instrument.manufacturer, instrument.product, instrument.descriptors())
        testbed.add_from_string(text)
        device = UsbDevice(instrument, serial)
        testbed.attach_ioctl(node, device)
        devices[serial] = (device, instrument, sys_path)

    fired = []
    started = time.monotonic()

    def fire(serial, kind):
        device, instrument, sys_path = devices[serial]
        fired.append({"device": serial, "fault": kind, "at_command": len(instrument.log), "t": time.monotonic() - started})
        print(f"usblab: fault {kind} on {serial} after {len(instrument.log)} commands", file=sys.stderr)
        if kind == "unplug":
            device.unplug(testbed, sys_path)
        else:
            instrument.arm(kind)
            device.pump()

    for spec in args.fault:
        target, _, rest = spec.partition(":")
        kind, _, trigger = rest.partition("@")
        if target not in devices or kind not in FAULTS:
            sys.exit(f"usblab: bad fault '{spec}' (DEVICE:KIND@TRIGGER, kinds {sorted(FAULTS)})")
        device, instrument, _ = devices[target]
        how, _, value = trigger.partition("=")
        if how == "at":
            later(float(value), lambda t=target, k=kind: fire(t, k))
        elif how in ("on", "after"):
            # Wrap the instrument's log: the fault arms as the triggering command arrives,
            # before the instrument answers it.
            class Log(list):
                def __init__(self, items, t=target, k=kind, h=how, v=value):
                    super().__init__(items)
                    self.t, self.k, self.h, self.v, self.done = t, k, h, v, False

                def append(self, item):
                    super().append(item)
                    hit = (self.h == "on" and self.v in str(item)) or (self.h == "after" and len(self) >= int(self.v))
                    if hit and not self.done:
                        self.done = True
                        fire(self.t, self.k)
            instrument.log = Log(instrument.log)
        else:
            sys.exit(f"usblab: bad trigger '{trigger}' (on=TEXT, after=N, at=SECONDS)")

    env = dict(os.environ, UMOCKDEV_DIR=testbed.get_root_dir(), LD_PRELOAD="libumockdev-preload.so.0")
    started = time.monotonic()  # `at=` faults count from here too (GLib timers start with the loop)
    child = subprocess.Popen(command, env=env)
    loop = GLib.MainLoop()

    def poll():
        if child.poll() is not None:
            loop.quit()
            return False
        if time.monotonic() - started > args.timeout:
            print(f"usblab: command still running after {args.timeout} s: killed", file=sys.stderr)
            child.kill()
        return True

    GLib.timeout_add(5, poll)
    loop.run()
    if args.report:
        report = {
            "exit": child.returncode,
            "faults": fired,
            "seconds": time.monotonic() - started,
            "devices": {s: {"log": list(i.log), "state": i.state()} for s, (_, i, _) in devices.items()},
        }
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
