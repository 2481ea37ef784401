"""The numpy way to merge two taggers' streams into one time base: correct the second's clock
(t - (offset + drift * (t - epoch))), concatenate, and order by argsort (a stable merge sort, as
numpy users write it). Reads the streams herald-bench clocks --dump wrote, reports tags/s of the
correction and merge alone, and a checksum of the merged order to compare with Herald's.

usage: clock_merge_numpy.py DIR OFFSET_PS DRIFT
"""
import json
import sys
import time

import numpy as np


def main():
    d, offset, drift = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    a = np.fromfile(f"{d}/a.bin", dtype="<i8")
    b = np.fromfile(f"{d}/b.bin", dtype="<i8")
    start = time.perf_counter()
    corrected = b - np.rint(offset + drift * b.astype(np.float64)).astype(np.int64)
    times = np.concatenate([a, corrected])
    order = np.argsort(times, kind="stable")
    merged = times[order]
    channels = np.where(order < len(a), 1, 2).astype(np.uint8)
    seconds = time.perf_counter() - start
    checksum = 0
    for t in merged[::1024]:
        checksum = (checksum * 31 + int(np.int64(t).view(np.uint64))) % (1 << 64)
    print(json.dumps({"tags": int(len(merged)), "seconds": seconds, "tags_per_s": len(merged) / seconds,
                      "checksum": str(checksum), "channels_2": int((channels == 2).sum())}))


if __name__ == "__main__":
    main()
