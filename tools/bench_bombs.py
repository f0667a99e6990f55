#!/usr/bin/env python3
"""Peak memory of ckptkit on decompression bombs (issue 15's figures in BENCHMARKS.md).

    tools/bench_bombs.py DIR [PYTHONPATH]

writes into DIR a 3.1 MB .npz whose member inflates to 3 GB of zeros and a 2 MB .keras whose
model.weights.h5 inflates to 2 GB, then runs `inspect`, `inspect --stats`, `verify`, `diff`
and `convert` on each in a child process and prints its peak RSS (the child's getrusage),
wall time and exit status. PYTHONPATH picks the ckptkit to measure (a checkout of another
commit, for a before/after figure); default: the installed one.
"""
import io
import os
import struct
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np

MIB = 1 << 20


def deflated_zip(path, name, head, zeros, tail=b""):
    """A zip of one deflated member: head, `zeros` zero bytes, tail (zeros compressed once
    per MiB, so writing it costs seconds, not gigabytes)."""
    mib = bytes(MIB)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    unit = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    data = first + unit * (zeros // MIB) + c.compress(tail) + c.flush()
    crc = zlib.crc32(head)
    for _ in range(zeros // MIB):
        crc = zlib.crc32(mib, crc)
    crc = zlib.crc32(tail, crc)
    size, encoded = len(head) + zeros + len(tail), name.encode()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size,
                        len(encoded), 0) + encoded
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data),
                          size, len(encoded), 0, 0, 0, 0, 0, 0) + encoded
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + len(data), 0)
    with open(path, "wb") as f:
        f.write(local + data + central + end)


def npz_bomb(path, zeros):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (zeros // 4,)})
    deflated_zip(path, "w.npy", header.getvalue(), zeros)


def keras_bomb(path, zeros):
    """A .keras zip whose weights file holds one contiguous dataset of `zeros` bytes."""
    h5 = f"{path}.tmp.h5"
    with h5py.File(h5, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        at = f.create_dataset("layers/dense/vars/0", (zeros // 4,), "f4", dcpl=dcpl).id \
            .get_offset()
    with open(h5, "rb") as raw:
        head = raw.read(at)
        raw.seek(at + zeros)
        tail = raw.read()
    os.unlink(h5)
    deflated_zip(path, "model.weights.h5", head, zeros, tail)


PROBE = ("import atexit, resource, sys\n"
         "atexit.register(lambda: print('PEAK', resource.getrusage(resource.RUSAGE_SELF)"
         ".ru_maxrss, file=sys.__stderr__))\n"
         "from ckptkit.cli import main\nmain()")


def measure(pythonpath, args):
    """(peak RSS in MB, seconds, exit status, last output line) of one ckptkit command."""
    env = dict(os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True,
                          text=True)
    seconds = time.monotonic() - started
    lines = (done.stdout + done.stderr).strip().splitlines()
    peak = int(lines.pop().split()[1]) / 1024 if lines and lines[-1].startswith("PEAK") else 0
    return peak, seconds, done.returncode, lines[-1][:120] if lines else ""


def main():
    folder, pythonpath = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    os.makedirs(folder, exist_ok=True)
    npz_bomb(os.path.join(folder, "bomb.npz"), 3000 * MIB)
    keras_bomb(os.path.join(folder, "bomb.keras"), 2000 * MIB)
    for name in ("bomb.npz", "bomb.keras"):
        path = os.path.join(folder, name)
        print(f"{name}: {os.path.getsize(path) / MIB:.1f} MB")
        for args in (["inspect", path], ["inspect", path, "--stats"], ["verify", path],
                     ["diff", path, path], ["convert", path, os.path.join(folder, "out.npz")]):
            peak, seconds, code, last = measure(pythonpath, args)
            print(f"  {peak:6.0f} MB peak  {seconds:5.1f} s  exit {code}  "
                  f"{' '.join(args[:1] + args[2:])}: {last}")


if __name__ == "__main__":
    main()
