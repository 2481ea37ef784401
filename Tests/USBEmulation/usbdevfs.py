"""Emulated USB devices for Herald's tests: umockdev testbed devices whose usbdevfs ioctls
(SUBMITURB, REAPURB, DISCARDURB, ...) are answered by Python instrument models, so the
program under test runs its real libusb and libudev code paths.

Layout (see docs/usb.md): this module does USB (descriptors, URBs, faults); instruments.py
holds the instrument protocols and the shared emulated lab; usblab.py is the command line.
"""
import errno
import struct
import sys
import threading

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import GLib, UMockdev  # noqa: E402

# usbdevfs ioctl requests on x86_64 (linux/usbdevice_fs.h)
SUBMITURB, REAPURB, REAPURBNDELAY, DISCARDURB = 0x8038550A, 0x4008550C, 0x4008550D, 0x550B
GET_CAPABILITIES = 0x8004551A
URB_CONTROL, URB_BULK = 2, 3


# umockdev answers ioctls on its own thread, timers run on the main loop: one lock keeps
# the instrument models consistent between the two.
LOCK = threading.RLock()


class Stall(Exception):
    """Raised by an instrument to stall the pipe (the URB completes with -EPIPE)."""


def device_descriptor(vid, pid, dev_class=0, bcd=0x0100):
    return struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x0200, dev_class, 0, 0, 64, vid, pid, bcd, 1, 2, 3, 1)


def config_descriptor(interfaces):
    """interfaces: list of (class, subclass, protocol, [(address, attributes, max_packet)])."""
    body = b""
    for number, (cls, sub, proto, endpoints) in enumerate(interfaces):
        body += struct.pack("<BBBBBBBBB", 9, 4, number, 0, len(endpoints), cls, sub, proto, 0)
        for address, attributes, max_packet in endpoints:
            body += struct.pack("<BBBBHB", 7, 5, address, attributes, max_packet, 0)
    return struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), len(interfaces), 1, 0, 0x80, 50) + body


def description(bus, address, port, vid, pid, serial, manufacturer, product, descriptors):
    """A umockdev device description (P:, N:, E:, A:, H: lines)."""
    sys_path = f"/devices/pci0000:00/0000:00:14.0/usb{bus}/{bus}-{port}"
    node = f"bus/usb/{bus:03d}/{address:03d}"
    lines = [
        f"P: {sys_path}", f"N: {node}", f"E: DEVNAME=/dev/{node}", "E: DEVTYPE=usb_device", "E: DRIVER=usb",
        f"E: PRODUCT={vid:x}/{pid:x}/100", f"E: BUSNUM={bus:03d}", f"E: DEVNUM={address:03d}", "E: MAJOR=189",
        f"E: MINOR={(bus - 1) * 128 + address - 1}", "E: SUBSYSTEM=usb", "A: bConfigurationValue=1",
        "A: bDeviceClass=00", "A: bNumConfigurations=1", f"A: busnum={bus}", f"A: devnum={address}",
        f"A: devpath={port}", f"A: idProduct={pid:04x}", f"A: idVendor={vid:04x}", f"A: manufacturer={manufacturer}",
        f"A: product={product}", f"A: serial={serial}", "A: speed=12",
        "H: descriptors=" + descriptors.hex().upper(),
    ]
    return "/sys" + sys_path, "/dev/" + node, "\n".join(lines) + "\n"


class Urb:
    __slots__ = ("urb", "buffer", "type", "endpoint", "length", "data")

    def __init__(self, urb, buffer, kind, endpoint, length, data):
        self.urb, self.buffer, self.type, self.endpoint, self.length, self.data = urb, buffer, kind, endpoint, length, data


class UsbDevice(UMockdev.IoctlBase):
    """One emulated device node. The instrument model answers control requests and bulk
    transfers; faults are switched on by the lab (see FAULTS in usblab.py)."""

    def __init__(self, instrument, name):
        super().__init__()
        self.instrument = instrument
        self.name = name
        self.pending_in = []  # IN URBs waiting for data
        self.done = []
        self.gone = False
        self.stall_next = False
        self.silent = False  # timeout switch: IN URBs are never answered
        instrument.attach(self)

    # -- ioctl dispatch -------------------------------------------------------------------
    def do_handle_ioctl(self, client):
        with LOCK:
            return self.handle(client)

    def handle(self, client):
        request, arg = client.get_request(), client.get_arg()
        # After a disconnect the kernel still hands back the URBs it killed (reap after
        # disconnect), then answers ENODEV; libusb relies on that to finish its transfers.
        if self.gone and not (request in (REAPURB, REAPURBNDELAY) and self.done):
            client.complete(-1, errno.ENODEV)
            return True
        if request == SUBMITURB:
            self.submit(arg)
            client.complete(0, 0)
        elif request in (REAPURB, REAPURBNDELAY):
            if self.done:
                pointer = arg.resolve(0, 8)
                pointer.set_ptr(0, self.done.pop(0).urb)
                client.complete(0, 0)
            else:
                client.complete(-1, errno.EAGAIN)
        elif request == DISCARDURB:
            address = struct.unpack_from("<Q", arg.retrieve(), 0)[0]
            for i, u in enumerate(self.pending_in):
                if u.urb.client_addr == address:
                    del self.pending_in[i]
                    self.finish(u, b"", status=-errno.ENOENT)
                    client.complete(0, 0)
                    return True
            client.complete(-1, errno.EINVAL)
        elif request == GET_CAPABILITIES:
            arg.update(0, struct.pack("<I", 0x10))  # USBDEVFS_CAP_REAP_AFTER_DISCONNECT
            client.complete(0, 0)
        else:  # claim, release, clear halt, reset, set configuration, ...: succeed
            client.complete(0, 0)
        return True

    def submit(self, arg):
        urb = arg.resolve(0, 56)
        raw = urb.retrieve()
        kind, endpoint = raw[0], raw[1]
        length = struct.unpack_from("<i", raw, 24)[0]
        buffer = urb.resolve(16, length) if length > 0 else None
        data = buffer.retrieve() if buffer is not None else b""
        u = Urb(urb, buffer, kind, endpoint, length, data)
        if kind == URB_CONTROL:
            self.control(u)
        elif endpoint & 0x80:
            self.pending_in.append(u)
            self.pump()
        else:
            if self.stall_next:
                self.stall_next = False
                self.finish(u, b"", status=-errno.EPIPE)
                return
            self.finish(u, b"", actual=length)
            self.instrument.bulk_out(endpoint, bytes(data))
            self.pump()

    def control(self, u):
        setup = u.data[:8]
        request_type, request, value, index, w_length = struct.unpack("<BBHHH", setup)
        try:
            reply = self.instrument.control(request_type, request, value, index, w_length, bytes(u.data[8:8 + w_length]))
        except Stall:
            self.finish(u, b"", status=-errno.EPIPE)
            return
        if request_type & 0x80:
            reply = (reply or b"")[:w_length]
            if reply:
                u.buffer.update(8, reply)
            self.finish(u, b"", actual=len(reply))
        else:
            self.finish(u, b"", actual=0)

    def finish(self, u, data, status=0, actual=None):
        if data:
            u.buffer.update(0, data)
        u.urb.update(4, struct.pack("<i", status))
        u.urb.update(28, struct.pack("<i", len(data) if actual is None else actual))
        self.done.append(u)

    def pump(self):
        """Fills waiting IN URBs with what the instrument has to send."""
        while self.pending_in and not self.silent and not self.gone:
            u = self.pending_in[0]
            if self.stall_next:
                self.stall_next = False
                self.pending_in.pop(0)
                self.finish(u, b"", status=-errno.EPIPE)
                continue
            data = self.instrument.bulk_in(u.endpoint, u.length)
            if data is None:
                return
            self.pending_in.pop(0)
            self.finish(u, data)

    def unplug(self, testbed, sys_path):
        """What a pulled cable looks like: a udev remove event, then ENODEV for every request."""
        self.gone = True
        for u in self.pending_in:
            self.finish(u, b"", status=-errno.ESHUTDOWN)  # what the kernel gives killed URBs
        self.pending_in = []
        testbed.uevent(sys_path, "remove")
        testbed.remove_device(sys_path)
        print(f"usblab: {self.name} unplugged", file=sys.stderr)


def later(seconds, fn):
    """Runs fn once after `seconds` on the GLib main loop."""
    def once():
        with LOCK:
            fn()
        return False
    GLib.timeout_add(max(1, int(seconds * 1000)), once)
