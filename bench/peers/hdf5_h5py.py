"""h5py writing the same tag stream with the same layout as herald-bench hdf5: chunked
(65 536), growable datasets appended in blocks of 1 M tags, a flush every 10 blocks, raw and
with gzip-1 + shuffle (h5py's only stock compression). Prints one JSON line."""
import json
import os
import sys
import time

import h5py
import numpy as np


def write(path, ts, ch, compression):
    kw = dict(compression="gzip", compression_opts=1, shuffle=True) if compression else {}
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group("photon_data")
        t = g.create_dataset("timestamps", (0,), maxshape=(None,), dtype="i8", chunks=(65536,), **kw)
        d = g.create_dataset("detectors", (0,), maxshape=(None,), dtype="u1", chunks=(65536,), **kw)
        f.swmr_mode = True
        block = 1 << 20
        for k, start in enumerate(range(0, len(ts), block)):
            end = min(start + block, len(ts))
            t.resize((end,)); t[start:end] = ts[start:end]
            d.resize((end,)); d[start:end] = ch[start:end]
            if k % 10 == 9:
                f.flush()


def main():
    raw = np.fromfile(sys.argv[1], dtype=np.uint8)
    n = raw.size // 9
    ts, ch = raw[: 8 * n].view("<i8"), raw[8 * n :]
    out = {"metric": "hdf5_write", "tags": int(n), "h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version}
    d = sys.argv[2]
    for name, comp in (("raw", False), ("deflate1", True)):
        path = os.path.join(d, f"h5py-{name}.h5")
        times = []
        for _ in range(3):
            s = time.perf_counter()
            write(path, ts, ch, comp)
            times.append(time.perf_counter() - s)
        out[f"{name}_tags_per_s"] = n / sorted(times)[1]
        out[f"{name}_bytes_per_tag"] = os.path.getsize(path) / n
    print(json.dumps(out))


if __name__ == "__main__":
    main()
