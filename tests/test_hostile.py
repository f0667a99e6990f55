"""Hostile input: a broken checkpoint ends in one line `ckptkit: error: ...` and exit 2, or for
`verify` in a CORRUPT report and exit 1; never a traceback, an internal error, a hang, an
allocation larger than the file justifies, or a changed input file.

Every case runs `ckptkit.cli.main()` in a process of its own, forked from a helper that
imported ckptkit once (hostile.run_isolated), under an address-space limit and a timeout: a
huge allocation, a crash or a hang fails the case. The cases are independent, so all the
selected ones run, a few at a time, before the first test body; each test judges its own.
"""
import os
import re
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from ckptkit import open_checkpoint
from helpers.bundle_writer import Bundle, varint, write_bundle, write_v1
from helpers.hostile import delete, flip, overwrite, run_isolated, snapshot, truncate

MEMORY_LIMIT = 1536 << 20     # bytes of address space per ckptkit process
TIMEOUT = 20                  # seconds per ckptkit process

BASE = {
    "dense/bias": np.arange(4, dtype=np.float32),
    "dense/kernel": (np.arange(12, dtype=np.float32) / 7).reshape(3, 4),
    "global_step": np.array(42, dtype=np.int64),
    "vocab": np.array([b"alpha", b"beta", b"gamma"], dtype=object),
}
HUGE = 2 ** 31                # two such dimensions hold 2**62 elements


# ---------------------------------------------------------------- building the inputs

def base(d):
    """BASE as a bundle at d/model.ckpt, not written yet."""
    bundle = Bundle(d / "model.ckpt")
    for name, value in BASE.items():
        bundle.put(name, value)
    return bundle


def v2(d, overrides=None, **index_options):
    """BASE written at d/model.ckpt (5 index entries in 3 data blocks), then any lies."""
    bundle = base(d).write(block_entries=2)
    if overrides or index_options:
        bundle.write_index(overrides, **index_options)
    return bundle


def data_block(n):
    """Where a byte inside data block n of the index lies."""
    return lambda layout: layout.data[n][0] + 3


def lie(**fields_by_name):
    """A builder whose index overrides entry fields: lie(**{"dense/bias": {"size": 9}})."""
    return lambda d: v2(d, fields_by_name)


def cut_index(where):
    """Truncate the index at `where(layout)` bytes."""
    def build(d):
        bundle = v2(d)
        truncate(bundle.index, where(bundle.layout))
    return build


def flip_index(where):
    def build(d):
        bundle = v2(d)
        flip(bundle.index, where(bundle.layout))
    return build


def lying_footer(d):
    """The footer's index handle claims a 1 TB index block."""
    bundle = v2(d)
    meta_offset, meta_size = bundle.layout.metaindex
    handles = b"".join(varint(x) for x in (meta_offset, meta_size, bundle.layout.index[0],
                                           1 << 40))
    overwrite(bundle.index, bundle.layout.footer, handles.ljust(40, b"\0"))


def tampered(tamper, compression=0):
    """Data blocks rewritten after compression and sealed with a correct checksum."""
    return lambda d: v2(d, tamper=tamper, compression=compression)


def restarts_lie(block):
    return block[:-4] + struct.pack("<I", 0xFFFFFFFF)


def key_length_lies(block):
    return varint(0) + varint(1 << 31) + varint(1) + b"k" + struct.pack("<II", 0, 1)


def snappy_claims(size):
    def tamper(stored):
        pos = 0
        while stored[pos] & 0x80:
            pos += 1
        return varint(size) + stored[pos + 1:]
    return tamper


def snappy_bad_copy(stored):
    return varint(8) + bytes([0b001]) + b"\x05"    # copy 4 bytes from 5 back, of nothing


def missing_shard(d):
    delete(v2(d).data())


def with_data(action):
    """Damage the data file; action(bundle) knows where."""
    def build(d):
        action(v2(d))
    return build


def flip_kernel(bundle):
    flip(bundle.data(), bundle.entries["dense/kernel"]["offset"] + 5)


def cut_after_kernel(bundle):
    entry = bundle.entries["dense/kernel"]
    truncate(bundle.data(), entry["offset"] + entry["size"])


def string_lengths(stored):
    """vocab's bytes replaced by `stored`, its size and crc32c honestly recomputed."""
    def build(d):
        bundle = base(d)
        bundle.store("vocab", stored)
        bundle.write(block_entries=2)
    return build


def huge_uint8(d):
    """`big`: uint8 of shape [2**31, 2**31], its entry consistent (2**62 bytes), but the
    data file holds 2 bytes of it."""
    bundle = base(d)
    bundle.put("big", np.zeros(2, np.uint8))
    bundle.write(overrides={"big": {"shape": (HUGE, HUGE), "size": 1 << 62}})


def v2_shape(shape):
    """d/model.ckpt: float32 `w` listed with `shape`, its entry consistent, every byte there."""
    def build(d):
        bundle = Bundle(d / "model.ckpt")
        n = int(np.prod(shape, dtype=object))
        bundle.put("w", np.zeros(n, np.float32))
        bundle.write(overrides={"w": {"shape": tuple(shape)}})
    return build


def v1_shape(shape):
    """d/model.ckpt (V1): float32 `w` listed with `shape`, all its values stored."""
    def build(d):
        n = int(np.prod(shape, dtype=object))
        write_v1(d / "model.ckpt", {"w": np.zeros(n, np.float32)}, shapes={"w": shape})
    return build


def header(raw):
    return lambda d: v2(d, header=raw)


def partitioned(store_slice):
    """`big` claims 2**40 float32 elements in one slice of 2; the slice is stored or not."""
    def build(d):
        bundle = Bundle(d / "model.ckpt")
        bundle.put("dense/bias", BASE["dense/bias"])
        bundle.put_partitioned("big", (1 << 40,), [([(0, 2)], np.ones(2, np.float32))])
        if not store_slice:
            key = next(k for k in bundle.entries if isinstance(k, bytes))
            del bundle.entries[key], bundle.blobs[key]
        bundle.write()
    return build


def v1(d, **options):
    return write_v1(d / "model.ckpt", BASE, block_entries=2, **options)


def v1_damaged(action):
    def build(d):
        layout = v1(d)
        action(d / "model.ckpt", layout)
    return build


def v1_huge_constant(d):
    """One stored float for a tensor whose listed shape has 2**40 elements."""
    write_v1(d / "model.ckpt", {"bias": np.array([0.5], np.float32)},
             shapes={"bias": (1 << 40,)})


def text_file(d):
    (d / "model.ckpt").write_text("this is not a checkpoint\n" * 3)


def empty_index(d):
    (d / "model.ckpt.index").write_bytes(b"")


def state_naming(text):
    """BASE, and a `checkpoint` state file whose path is `text` as written (escapes and all)."""
    def build(d):
        v2(d)
        (d / "checkpoint").write_bytes(b'model_checkpoint_path: "' + text + b'"\n')
    return build


def garbage_state(with_bundle):
    def build(d):
        (d / "checkpoint").write_bytes(bytes(range(256)) * 4 + b'model_checkpoint_path: "x')
        if with_bundle:
            v2(d)
    return build


def two_h5(d):
    for name in ("a.h5", "b.h5"):
        (d / name).write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))


def pickled_npz(d):
    np.savez(d / "weights.npz", w=np.ones(2, np.float32),
             obj=np.array([{"a": 1}, None], dtype=object))


def garbage_h5(d):
    (d / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)


def safetensors(header_length, header_bytes, body=b""):
    def build(d):
        (d / "model.safetensors").write_bytes(struct.pack("<Q", header_length) + header_bytes
                                              + body)
    return build


def nothing(d):
    pass


def fifo(name):
    """A named pipe where a checkpoint file is looked for: opening it would wait forever."""
    return lambda d: os.mkfifo(d / name)


def fifo_shard(d):
    """BASE with its data shard replaced by a named pipe."""
    bundle = v2(d)
    path = d / "model.ckpt.data-00000-of-00001"
    os.unlink(path)
    os.mkfifo(path)
    return bundle


def garbage_footer(d):
    bundle = v2(d)
    overwrite(bundle.index, bundle.layout.footer, b"\xff" * 40)


def object_graph(raw):
    """A TF2 checkpoint whose object graph is `raw` bytes."""
    return lambda d: write_bundle(d / "model.ckpt", {
        **BASE, "_CHECKPOINTABLE_OBJECT_GRAPH": np.array(raw, dtype=object)})


def npz(damage):
    """weights.npz (stored, not deflated) holding `a` = 0..99 as float32, then damaged."""
    def build(d):
        path = d / "weights.npz"
        values = np.arange(100, dtype=np.float32)
        np.savez(path, a=values)
        damage(path, path.read_bytes().index(values.tobytes()))
    return build


def singles(d):
    """BASE's float tensors as d/w.npz, d/w.safetensors and d/w.h5 (ckptkit writes them),
    d/link.npz a symbolic link to d/w.npz, and BASE itself at d/model.ckpt."""
    from ckptkit.surgery import run_surgery

    v2(d)
    floats = {k: v for k, v in BASE.items() if v.dtype.kind == "f"}
    write_bundle(d / "src" / "m", floats)
    for ext in ("npz", "safetensors", "h5"):
        run_surgery(d / "src" / "m", d / f"w.{ext}")
    (d / "link.npz").symlink_to(d / "w.npz")


# ---------------------------------------------------------------- npz, safetensors, Keras HDF5

def h5_outside(kind):
    """d/model.h5 whose `w` takes its values from a file beside it that the builder writes:
    HDF5 external raw storage (d/other.bin), a virtual dataset or an external link
    (d/other.h5); `ok` is an ordinary dataset."""
    def build(d):
        import h5py

        (d / "other.bin").write_bytes(b"not the checkpoint's own bytes " * 2)
        with h5py.File(d / "other.h5", "w") as f:
            f["x"] = np.arange(4.0)
        with h5py.File(d / "model.h5", "w") as f:
            f["ok"] = np.ones(2, np.float32)
            if kind == "external-storage":
                f.create_dataset("w", (62,), "u1", external=[(str(d / "other.bin"), 0, 62)])
            elif kind == "virtual":
                layout = h5py.VirtualLayout((4,), "f8")
                layout[:] = h5py.VirtualSource(str(d / "other.h5"), "x", (4,))
                f.create_virtual_dataset("w", layout)
            else:
                f["w"] = h5py.ExternalLink(str(d / "other.h5"), "x")
    return build


def h5_unwritten(shape, **options):
    """d/model.h5 declaring float32 `w` of `shape`, none of it written (HDF5 reads it as the
    fill value): ~1.4 KB whatever the shape."""
    def build(d):
        import h5py

        with h5py.File(d / "model.h5", "w") as f:
            f.create_dataset("w", shape, "f4", **options)
    return build


MIB = 1 << 20


def deflated_zip(name, head, zeros, tail=b""):
    """The bytes of a zip whose one member `name` is head + `zeros` MiB of zero bytes + tail,
    deflated: ~1 KB a MiB, a decompression bomb. After a full flush the deflater starts
    afresh, so every zero MiB compresses to the same bytes, made once."""
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    unit = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    data = first + unit * zeros + c.compress(tail) + c.flush()
    crc, zero = zlib.crc32(head), bytes(MIB)
    for _ in range(zeros):
        crc = zlib.crc32(zero, crc)
    crc = zlib.crc32(tail, crc)
    raw, size = name.encode(), len(head) + zeros * MIB + len(tail)
    fields = (8, 0, 0x21, crc, len(data), size, len(raw))   # deflated, 1980-01-01
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, *fields, 0) + raw
    entry = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, *fields, 0, 0, 0, 0, 0, 0)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(entry) + len(raw),
                      len(local) + len(data), 0)
    return local + data + entry + raw + end


_BOMBS = {}


def bomb(kind):
    """1 GiB of zeros in ~1 MB: as npz member `w.npy` (float32), or as the one contiguous
    dataset `w` of a .keras's deflated model.weights.h5; made once, written by each case."""
    if kind not in _BOMBS:
        import io
        import tempfile

        import h5py

        if kind == "npz":
            f = io.BytesIO()
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (1 << 28,)})
            _BOMBS[kind] = deflated_zip("w.npy", f.getvalue(), 1024)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "w.h5"
                with h5py.File(path, "w") as f:   # a sparse file: the data never written
                    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
                    at = f.create_dataset("w", (1 << 28,), "f4", dcpl=dcpl).id.get_offset()
                image = path.read_bytes()
            _BOMBS[kind] = deflated_zip("model.weights.h5", image[:at], 1024,
                                        image[at + 1024 * MIB:])
    name = "weights.npz" if kind == "npz" else "model.keras"
    return lambda d: (d / name).write_bytes(_BOMBS[kind])


def safetensors_of(header, body=b""):
    """d/model.safetensors with `header` (a dict) as its JSON."""
    import json

    raw = json.dumps(header).encode()
    return safetensors(len(raw), raw, body)


def safetensors_shape(shape):
    """float32 `w` of `shape`, every byte of it there."""
    n = int(np.prod(shape, dtype=object)) * 4
    return safetensors_of({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, n]}},
                          bytes(n))


def safetensors_named(*names):
    """One float32 scalar per name."""
    return safetensors_of({name: {"dtype": "F32", "shape": [], "data_offsets": [4 * i, 4 * i + 4]}
                           for i, name in enumerate(names)}, bytes(4 * len(names)))


def npz_shape(shape):
    """d/weights.npz: member w.npy of float32 `shape`, every byte of it there."""
    def build(d):
        import io
        import zipfile

        f = io.BytesIO()
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": tuple(shape)})
        with zipfile.ZipFile(d / "weights.npz", "w") as zf:
            zf.writestr("w.npy", f.getvalue() + bytes(int(np.prod(shape, dtype=object)) * 4))
    return build


def npz_directory(damage):
    """d/weights.npz (np.savez) of 7 tensors, w and a1..a6, then `damage(data, at)` edits its
    bytes (a bytearray) around the end of central directory record at `at`."""
    def build(d):
        path = d / "weights.npz"
        np.savez(path, w=np.ones(3, np.float32),
                 **{f"a{i}": np.full(2, i, np.float32) for i in range(1, 7)})
        data = bytearray(path.read_bytes())
        damage(data, data.rindex(b"PK\x05\x06"))
        path.write_bytes(bytes(data))
    return build


def rename_entry(data, at):
    """a1.npy becomes a1.npz in the central directory only."""
    data[data.index(b"a1.npy", struct.unpack_from("<I", data, at + 16)[0]) + 5] = ord("z")


def directory_size_0(data, at):
    struct.pack_into("<I", data, at + 12, 0)


def drop_entry(data, at):
    """a1's central directory entry cut out, the count and size made to agree."""
    count, size, pos = struct.unpack_from("<HII", data, at + 10)
    while data[pos + 46:pos + 46 + struct.unpack_from("<H", data, pos + 28)[0]] != b"a1.npy":
        pos += 46 + sum(struct.unpack_from("<3H", data, pos + 28))
    length = 46 + sum(struct.unpack_from("<3H", data, pos + 28))
    del data[pos:pos + length]
    struct.pack_into("<HHI", data, at - length + 8, count - 1, count - 1, size - length)


READERS = {   # every command that reads a checkpoint, on {f}, which holds a tensor `w`
    "inspect": "inspect {f}",
    "stats": "inspect {f} --stats",
    "tensor": "inspect {f} --tensor w",
    "verify": "verify {f}",
    "diff": "diff {f} {f}",
    "convert": "convert {f} {d}/out.safetensors",
    "surgery": "surgery {f} -o {d}/out.npz --rename w=v",
}


def every_command(case_id, build, path, refusal, listed=None, verify=2):
    """A row per command of READERS on `path`: each refuses with the one line `refusal`,
    but `inspect` lists `listed` when given (and `verify` then reports `refusal` as a
    problem), and `verify` reports it when the reader finds the file corrupt (verify=1)."""
    rows = []
    for short, args in READERS.items():
        code, pattern = 2, E + refusal
        if short == "inspect" and listed:
            code, pattern = 0, listed
        elif short == "verify" and (listed or verify == 1):
            code, pattern = 1, refusal
        rows.append(case(f"{case_id}-{short}", build, args.format(f=path, d="{d}"), code,
                         pattern))
    return rows


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class Case:
    build: Callable      # d -> None: writes the input into the empty directory d
    args: str            # command line; {d} is the directory, {ckpt} its d/model.ckpt
    code: int            # exact exit status
    pattern: str         # regex: the error line (2), a problem line (1), stdout (0)
    timeout: float = TIMEOUT
    note: str = None     # regex: the one `note:` line a successful run prints on stderr

    def argv(self, d):
        return [a.format(d=d, ckpt=d / "model.ckpt") for a in shlex.split(self.args)]


def case(case_id, build, args, code, pattern, timeout=TIMEOUT, note=None):
    """One row; a case that once hung gets a short `timeout` so a regression fails fast."""
    return pytest.param(Case(build, args, code, pattern, timeout, note), id=case_id)


E = r"ckptkit: error: "
IDX = E + r"\S+model\.ckpt\.index: "     # errors about the index name it first
LISTED = r"\nvocab +\[3\] +string +3\n4 tensors, 19 parameters, 93 B \(1 step\)\n$"   # BASE
PAST_END = (r"tensor 'dense/kernel': bytes 1000000000\.\.1000000048 lie past the end of "
            r"\S+model\.ckpt\.data-00000-of-00001 \(\d+ bytes\)")
BIG_PAST_END = r"tensor 'big': bytes 0\.\.4611686018427387904 lie past the end"


FIFO_SHARD = (r"(data file )?\S+model\.ckpt\.data-00000-of-00001 (is not a regular file|is "
              r"missing)")
STRINGS_LIE = varint(10 ** 12) + varint(4) + varint(5) + bytes(4) + b"alphabetagamma"
ENDLESS_VARINT = b"\xff" * 24

CASES = [
    # the .index cut short or flipped
    case("index-cut-at-0", cut_index(lambda l: 0), "inspect {ckpt}", 2,
         IDX + r"too short to be a checkpoint table \(0 bytes\)$"),
    case("index-cut-at-10", cut_index(lambda l: 10), "inspect {ckpt}", 2,
         IDX + r"too short to be a checkpoint table \(10 bytes\)$"),
    case("index-cut-mid-block", cut_index(data_block(1)), "inspect {ckpt}", 2,
         IDX + r"not a TensorFlow checkpoint table \(bad magic\)$"),
    case("index-cut-in-footer", cut_index(lambda l: l.footer + 20), "inspect {ckpt}", 2,
         IDX + r"not a TensorFlow checkpoint table \(bad magic\)$"),
    case("index-cut-verify", cut_index(data_block(1)), "verify {ckpt}", 2,
         IDX + r"not a TensorFlow checkpoint table \(bad magic\)$"),
    case("index-flip-data-block", flip_index(data_block(1)), "inspect {ckpt}", 2,
         IDX + r"checksum mismatch in block at offset \d+$"),
    case("index-flip-data-block-verify", flip_index(data_block(1)), "verify {ckpt}", 1,
         r"^  \S+model\.ckpt\.index: checksum mismatch in block at offset \d+$"),
    case("index-flip-index-block", flip_index(lambda l: l.index[0] + 2), "inspect {ckpt}", 2,
         IDX + r"checksum mismatch in block at offset \d+$"),
    case("index-flip-magic", flip_index(lambda l: -1), "inspect {ckpt}", 2,
         IDX + r"not a TensorFlow checkpoint table \(bad magic\)$"),
    case("index-wrong-magic", lambda d: overwrite(v2(d).index, -8, b"NOTMAGIC"),
         "inspect {d}/model.ckpt.index", 2,
         IDX + r"not a TensorFlow checkpoint table \(bad magic\)$"),
    case("index-footer-handle-lies", lying_footer, "inspect {ckpt}", 2,
         IDX + r"block at \d+\+1099511627776 runs past the end of the file \(\d+ bytes\); "
         r"the file is truncated$"),
    case("index-block-restarts-lie", tampered(restarts_lie), "inspect {ckpt}", 2,
         IDX + r"bad block restart count 4294967295$"),
    case("index-block-key-length-lies", tampered(key_length_lies), "inspect {ckpt}", 2,
         IDX + r"bad entry in table block$"),
    case("index-snappy-claims-1tb", tampered(snappy_claims(1 << 40), 1), "inspect {ckpt}", 2,
         IDX + r"snappy block claims 1099511627776 bytes$"),
    case("index-snappy-bad-copy", tampered(snappy_bad_copy, 1), "inspect {ckpt}", 2,
         IDX + r"corrupt snappy block$"),
    case("index-unknown-compression", tampered(None, 7), "inspect {ckpt}", 2,
         IDX + r"table block compressed with unknown type 7$"),
    # files that are no checkpoint, or not there
    case("text-file-named-model.ckpt", text_file, "inspect {ckpt}", 2,
         E + r"\S+model\.ckpt is not a checkpoint ckptkit knows \(starts with b'this is '"),
    case("empty-index-file", empty_index, "inspect {ckpt}", 2,
         IDX + r"too short to be a checkpoint table \(0 bytes\)$"),
    case("nonexistent-path", nothing, "inspect {d}/nothing.ckpt", 2,
         E + r"no checkpoint at \S+/nothing\.ckpt$"),
    case("empty-directory", nothing, "inspect {d}", 2, E + r"no checkpoint in directory \S+"),
    case("state-file-garbage", garbage_state(False), "inspect {d}", 2,
         E + r"no checkpoint in directory \S+"),
    case("state-file-garbage-beside-bundle", garbage_state(True), "inspect {d}", 0,
         r"^\S+model\.ckpt  \(tf-v2\)\n(.*\n)+" + LISTED[2:]),
    *[case(f"state-file-escape-{i}", state_naming(text), "inspect {d}", 0,
           r"^\S+model\.ckpt  \(tf-v2\)\n", note=r"^note: the checkpoint state names .+, which "
           r"is not here; using the newest, \S+model\.ckpt$")
      for i, text in enumerate([b"abc\\x", b"\\N{NOPE}", b"\\u12"])],
    case("two-h5-files", two_h5, "inspect {d}", 2,
         E + r"directory \S+ holds several checkpoints; name one: a\.h5, b\.h5$"),
    case("npz-pickled-object-array", pickled_npz, "inspect {d}/weights.npz --tensor obj", 2,
         E + r"\S+weights\.npz: 'obj' is a pickled object array, refused"),
    case("npz-pickled-listed", pickled_npz, "inspect {d}/weights.npz --flat", 0,
         r"\nobj +\[2\] +object +2\n"),
    case("h5-garbage", garbage_h5, "inspect {d}/model.h5", 2,
         E + r"\S+model\.h5 is not a readable HDF5 file: "),
    case("safetensors-garbage-header", safetensors(20, b"{not json at all!!!}"),
         "inspect {d}/model.safetensors", 2,
         E + r"\S+model\.safetensors is not a safetensors file: its header is not JSON"),
    case("safetensors-header-2-to-60", safetensors(1 << 60, b"{}"),
         "inspect {d}/model.safetensors", 2,
         E + r"\S+model\.safetensors is not a safetensors file: its header length "
         r"1152921504606846976 does not fit a 10-byte file"),
    case("safetensors-offsets-past-end",
         safetensors(80, b'{"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, '
                         b'4000000]}}'.ljust(80), bytes(16)),
         "inspect {d}/model.safetensors --tensor w", 2,
         E + r"\S+model\.safetensors: tensor 'w': data_offsets \[0, 4000000\] lie outside the "
         r"16-byte buffer"),
    case("keras-zip-garbage", lambda d: (d / "model.keras").write_bytes(
         b"PK\x03\x04" + bytes(range(256))), "inspect {d}/model.keras", 2,
         E + r"\S+model\.keras is not a readable \.keras \(zip\) file: "),
    case("npz-cut-in-half", npz(lambda p, at: truncate(p, at + 200)), "inspect {d}/weights.npz",
         2, E + r"\S+weights\.npz is not a readable npz \(zip\) file: .*; is it truncated\?$"),
    case("npz-flipped-verify", npz(lambda p, at: flip(p, at + 40)), "verify {d}/weights.npz",
         1, r"^  a: member 'a\.npy' of \S+weights\.npz is corrupt: Bad CRC-32"),
    # a named pipe is not a checkpoint: skipped (opening it would block forever)
    case("fifo-index-in-directory", fifo("model.ckpt.index"), "inspect {d}", 2,
         E + r"no checkpoint in directory \S+", timeout=1),
    case("fifo-h5-in-directory", fifo("weights.h5"), "inspect {d}", 2,
         E + r"no checkpoint in directory \S+", timeout=1),
    # index entries that lie
    case("entry-size-1e12", lie(**{"dense/kernel": {"size": 10 ** 12}}), "inspect {ckpt}", 2,
         IDX + r"tensor 'dense/kernel' claims shape \[3, 4\] float32 \(48 bytes\) but holds "
         r"1000000000000 bytes$"),
    case("entry-size-1e12-verify", lie(**{"dense/kernel": {"size": 10 ** 12}}),
         "verify {ckpt}", 1, r"dense/kernel.*1000000000000 bytes"),
    *[case(f"entry-string-size-minus-1-{args.split()[0]}", lie(vocab={"size": -1}), args, code,
           (IDX if code == 2 else r"^  \S+model\.ckpt\.index: ") +
           r"tensor 'vocab' claims -1 bytes$")
      for args, code in (("inspect {ckpt}", 2), ("verify {ckpt}", 1),
                         ("convert {ckpt} {d}/out.ckpt", 2))],
    case("entry-offset-past-end", lie(**{"dense/kernel": {"offset": 10 ** 9}}),
         "inspect {ckpt}", 0, LISTED),
    case("entry-offset-past-end-tensor", lie(**{"dense/kernel": {"offset": 10 ** 9}}),
         "inspect {ckpt} --tensor dense/kernel", 2, E + PAST_END + "$"),
    case("entry-offset-past-end-verify", lie(**{"dense/kernel": {"offset": 10 ** 9}}),
         "verify {ckpt}", 1, "^  " + PAST_END + "$"),
    case("entry-offset-negative", lie(**{"dense/kernel": {"offset": -8}}), "inspect {ckpt}",
         2, IDX + r"tensor 'dense/kernel' points at shard 0 offset -8; the bundle has 1 shards$"),
    case("entry-shard-7-of-1", lie(**{"dense/kernel": {"shard_id": 7}}), "inspect {ckpt}", 2,
         IDX + r"tensor 'dense/kernel' points at shard 7 offset \d+; the bundle has 1 shards$"),
    case("entry-shape-2-to-62-float32",
         lie(**{"dense/kernel": {"shape": (HUGE, HUGE)}}), "inspect {ckpt}", 2,
         IDX + r"tensor 'dense/kernel' claims shape \[2147483648, 2147483648\] float32 "
         r"\(18446744073709551616 bytes\) but holds 48 bytes$"),
    case("entry-shape-2-to-62-listed", huge_uint8, "inspect {ckpt} --flat", 0,
         r"\nbig +\[2147483648,2147483648\] +uint8 +4,611,686,018,427,387,904\n"),
    case("entry-shape-2-to-62-tensor", huge_uint8, "inspect {ckpt} --tensor big", 2,
         E + BIG_PAST_END),
    case("entry-shape-2-to-62-stats", huge_uint8, "inspect {ckpt} --stats", 2, E + BIG_PAST_END),
    case("entry-shape-2-to-62-verify", huge_uint8, "verify {ckpt}", 1, "^  " + BIG_PAST_END),
    case("entry-shape-negative", lie(**{"dense/kernel": {"shape": (-1, 4)}}),
         "inspect {ckpt}", 2, IDX + r"tensor 'dense/kernel' has shape \[-1, 4\]$"),
    case("entry-dtype-99", lie(**{"dense/bias": {"dtype": 99}}), "inspect {ckpt}", 2,
         IDX + r"tensor 'dense/bias' has unknown dtype 99$"),
    case("entry-bad-wire-type", lie(**{"dense/bias": {"raw": b"\x0f\x00"}}), "inspect {ckpt}",
         2, IDX + r".*'dense/bias'.*wire type 7"),
    case("entry-truncated-message", lie(**{"dense/bias": {"raw": b"\x12\x50\x08"}}),
         "inspect {ckpt}", 2, IDX + r".*'dense/bias'.*truncated"),
    case("entry-dtype-resource", lie(**{"dense/bias": {"dtype": 20}}),
         "inspect {ckpt} --tensor dense/bias", 2,
         E + r"tensor 'dense/bias' is a resource tensor, which has no portable value$"),
    case("footer-handles-garbage", garbage_footer, "inspect {ckpt}", 2, IDX + r".*varint"),
    case("object-graph-garbage", object_graph(b"\xff\xff\xff"), "inspect {ckpt} --objects", 2,
         E + r".*_CHECKPOINTABLE_OBJECT_GRAPH.*varint"),
    case("object-graph-absent", v2, "inspect {ckpt} --objects", 2,
         E + r"\S+model\.ckpt is not an object-based \(TF2\) checkpoint: it has no "
         r"_CHECKPOINTABLE_OBJECT_GRAPH$"),
    case("header-missing", header(False), "inspect {ckpt}", 2,
         IDX + r"no bundle header \(not a V2 checkpoint index\)$"),
    case("header-1e9-shards", header(b"\x08\x80\x94\xeb\xdc\x03"), "inspect {ckpt}", 2,
         IDX + r"absurd shard count 1000000000$"),
    case("header-0-shards", header(b""), "inspect {ckpt}", 2,
         IDX + r"tensor 'dense/bias' points at shard 0 offset 0; the bundle has 0 shards$"),
    case("header-0-shards-verify", header(b""), "verify {ckpt}", 1,
         r"^  \S+model\.ckpt\.index: tensor 'dense/bias' points at shard 0 offset 0; the "
         r"bundle has 0 shards$"),
    case("header-says-2-shards", header(b"\x08\x02"), "verify {ckpt}", 1,
         r"^  missing data file \S+model\.ckpt\.data-00001-of-00002$"),
    case("slice-of-2-for-2-to-40-elements", partitioned(True), "inspect {ckpt} --tensor big", 2,
         E + r"tensor 'big': its slices cover 2 of 1099511627776 elements$"),
    case("slice-listed-not-stored", partitioned(False), "inspect {ckpt} --tensor big", 2,
         E + r"tensor 'big': slice \[\(0, 2\)\] is listed but not stored$"),
    case("slice-listed-not-stored-verify", partitioned(False), "verify {ckpt}", 1,
         r"^  big: a listed slice is not stored$"),
    # the data file missing or damaged
    case("shard-missing", missing_shard, "inspect {ckpt}", 0, LISTED),
    case("shard-missing-stats", missing_shard, "inspect {ckpt} --stats", 2,
         E + r"data file \S+model\.ckpt\.data-00000-of-00001 is missing"),
    case("shard-missing-tensor", missing_shard, "inspect {ckpt} --tensor dense/bias", 2,
         E + r"data file \S+model\.ckpt\.data-00000-of-00001 is missing"),
    case("shard-missing-verify", missing_shard, "verify {ckpt}", 1,
         r"^  missing data file \S+model\.ckpt\.data-00000-of-00001$"),
    case("shard-flipped-verify", with_data(flip_kernel), "verify {ckpt}", 1,
         r"^  dense/kernel: crc32c mismatch: its bytes in \S+model\.ckpt\.data-00000-of-00001 "
         r"are corrupt$"),
    case("shard-flipped-inspect", with_data(flip_kernel), "inspect {ckpt}", 0, LISTED),
    case("shard-cut-verify", with_data(cut_after_kernel), "verify {ckpt}", 1,
         r"^  tensor 'vocab': bytes \d+\.\.\d+ lie past the end of \S+ \(\d+ bytes\)$"),
    case("shard-cut-diff", with_data(cut_after_kernel), "diff {ckpt} {ckpt}", 2,
         E + r"tensor 'global_step': bytes \d+\.\.\d+ lie past the end"),
    case("string-lengths-lie", string_lengths(STRINGS_LIE), "inspect {ckpt} --tensor vocab", 2,
         E + r"tensor 'vocab': strings run past its 26 bytes$"),
    case("string-lengths-lie-verify", string_lengths(STRINGS_LIE), "verify {ckpt}", 1,
         r"^  tensor 'vocab': strings run past its 26 bytes$"),
    case("string-length-endless-varint", string_lengths(ENDLESS_VARINT),
         "inspect {ckpt} --tensor vocab", 2,
         E + r"tensor 'vocab': string lengths run past its bytes$"),
    # V1 files
    case("v1-cut-in-half", v1_damaged(lambda p, l: truncate(p, l.size // 2)), "inspect {ckpt}",
         2, E + r"\S+model\.ckpt is not a checkpoint ckptkit knows"),
    case("v1-flip-first-block", v1_damaged(lambda p, l: flip(p, 5)), "inspect {ckpt}", 2,
         E + r"\S+model\.ckpt: checksum mismatch in block at offset 0$"),
    case("v1-flip-first-block-verify", v1_damaged(lambda p, l: flip(p, 5)), "verify {ckpt}", 1,
         r"^  \S+model\.ckpt: checksum mismatch in block at offset 0$"),
    case("v1-flip-last-block-verify", v1_damaged(lambda p, l: flip(p, l.data[-1][0] + 3)),
         "verify {ckpt}", 1, r"^  \S+model\.ckpt: checksum mismatch in block at offset \d+$"),
    case("v1-one-value-for-2-to-40", v1_huge_constant, "inspect {ckpt} --tensor bias", 2,
         E + r"tensor 'bias': 1 values stored for shape \[1099511627776\]$"),
    # usage
    case("filter-bad-regex", v2, "inspect {ckpt} --filter [", 2,
         E + r"bad --filter regex '\[': .+$"),
    case("filter-matches-nothing", v2, "inspect {ckpt} --filter zzz", 2,
         E + r"--filter 'zzz' matches no tensor in \S+model\.ckpt$"),
    case("tensor-typo", v2, "inspect {ckpt} --tensor dense/kernal", 2,
         E + r"no tensor 'dense/kernal' in \S+model\.ckpt; closest: dense/kernel, dense/bias$"),
    case("printoptions-bogus", v2, "inspect {ckpt} --tensor dense/bias --printoptions bogus=1",
         2, E + r"unknown print option 'bogus' \(threshold, precision, edgeitems, linewidth, "
         r"suppress\)$"),
    case("printoptions-not-int", v2,
         "inspect {ckpt} --tensor dense/bias --printoptions precision=x", 2,
         E + r"print option precision needs an integer, not 'x'$"),
    case("diff-missing-b", v2, "diff {ckpt} {d}/other.ckpt", 2,
         E + r"no checkpoint at \S+/other\.ckpt"),
    case("unknown-option", v2, "inspect {ckpt} --bogus", 2,
         E + r"No such option '--bogus'.*\(see 'ckptkit inspect --help'\)$"),
    case("unknown-command", nothing, "frobnicate", 2, E + r"No such command 'frobnicate'"),
    case("missing-argument", nothing, "inspect", 2, E + r"Missing argument 'PATH'"),
    case("depth-0", v2, "inspect {ckpt} --depth 0", 2,
         E + r"Invalid value for '--depth': 0 is not in the range x>=1"),
    case("atol-not-a-number", v2, "diff {ckpt} {ckpt} --atol lots", 2,
         E + r"Invalid value for '--atol': 'lots' is not a valid float"),
    # an edit never writes its input, and replaces an existing output only when told
    *[case(f"surgery-{ext}-onto-itself", singles, f"surgery {{d}}/w.{ext} -o {{d}}/w.{ext} "
           "--rename dense=x", 2, E + rf"\S+w\.{ext} is a file this edit reads; write "
           r"elsewhere \(add --in-place to replace it\)$")
      for ext in ("npz", "safetensors", "h5")],
    case("surgery-onto-a-link-to-the-input", singles,
         "surgery {d}/w.npz -o {d}/link.npz --rename dense=x", 2,
         E + r"\S+link\.npz is a file this edit reads; write elsewhere"),
    *[case(f"surgery-v2-{name}-as-output", singles, f"surgery {{ckpt}} -o {{ckpt}}{suffix} "
           "--cast float16", 2, E + r"\S+model\.ckpt is the input checkpoint; a V2 prefix's "
           "files cannot be replaced all at once")
      for name, suffix in (("prefix", ""), ("index", ".index"),
                           ("data", ".data-00000-of-00001"))],
    case("surgery-merge-source-as-output", singles, "surgery {d}/w.npz -o {d}/w.safetensors "
         "--merge {d}/w.safetensors --prefer other", 2,
         E + r"\S+w\.safetensors is a file this edit reads; write elsewhere$"),
    case("convert-over-an-existing-file", singles, "convert {ckpt} {d}/w.h5", 2,
         E + r"\S+w\.h5 exists; add --overwrite to replace it$"),
    *[case(f"fifo-data-shard-{args.split()[0]}", fifo_shard, args, 2, E + FIFO_SHARD, timeout=5)
      for args in ("convert {ckpt} {d}/out", "surgery {ckpt} -o {d}/out --strip-optimizer")],
    case("fifo-data-shard-inspect-tensor", fifo_shard, "inspect {ckpt} --tensor dense/bias", 2,
         E + FIFO_SHARD, timeout=5),
    case("in-place-v2", singles, "surgery {ckpt} -o {ckpt} --in-place --cast float16", 2,
         E + r"--in-place replaces a single-file checkpoint .*never edited in place"),
    # read only the checkpoint's own bytes: HDF5 can point into other files
    *every_command("h5-external-storage", h5_outside("external-storage"), "{d}/model.h5",
                   r"\S+model\.h5: dataset 'w' keeps its values in external file "
                   r"\S+other\.bin; ckptkit reads only the checkpoint's own bytes$"),
    *every_command("h5-virtual-dataset", h5_outside("virtual"), "{d}/model.h5",
                   r"\S+model\.h5: dataset 'w' is virtual \(its values are read from other "
                   r"HDF5 files\); ckptkit reads only the checkpoint's own bytes$"),
    *every_command("h5-external-link", h5_outside("link"), "{d}/model.h5",
                   r"\S+model\.h5: 'w' is a link to 'x' in \S+other\.h5 outside the file; "
                   r"ckptkit reads only the checkpoint's own bytes$"),
    # bounded memory: a size a file declares is checked against what its bytes can hold
    *every_command("npz-deflate-bomb", bomb("npz"), "{d}/weights.npz",
                   r"\S+weights\.npz: member 'w\.npy' would decode \d+ stored bytes into "
                   r"1073741952; ckptkit decodes at most 64x the stored size \+ 256 MiB: a "
                   r"decompression bomb\?", listed=r"\nw +\[268435456\] +float32 "),
    *every_command("keras-deflate-bomb", bomb("keras"), "{d}/model.keras",
                   r"\S+model\.keras: member 'model\.weights\.h5' would decode \d+ stored "
                   r"bytes into \d+; ckptkit decodes at most 64x .*re-zip it"),
    *every_command("h5-sparse-chunks", h5_unwritten((20000, 20000), chunks=(1000, 1000)),
                   "{d}/model.h5", r"\S+model\.h5: dataset 'w' would decode 0 stored bytes "
                   r"into 1600000000; .*HDF5 reads unwritten chunks as the fill value",
                   listed=r"\nw +\[20000,20000\] +float32 "),
    *every_command("h5-4tb-unwritten", h5_unwritten((1 << 40,)), "{d}/model.h5",
                   r"\S+model\.h5: dataset 'w' would decode 0 stored bytes into "
                   r"4398046511104; ", listed=r"\nw +\[1099511627776\] +float32 "),
    # shapes numpy cannot make (a zero beside a huge dimension; 65 dimensions) are listed
    *[row for fmt, name, build in (("safetensors", "model.safetensors", safetensors_shape),
                                   ("npz", "weights.npz", npz_shape),
                                   ("v2", "model.ckpt", v2_shape), ("v1", "model.ckpt", v1_shape))
      for what, dims in (("0-and-2-to-62", [0, 1 << 62]), ("65-dimensions", [1] * 65))
      for row in every_command(
          f"{fmt}-shape-{what}", build(dims), f"{{d}}/{name}",
          rf"\S+{re.escape(name)}: tensor 'w' has shape {re.escape(str(dims))}, which numpy "
          "cannot hold: ", listed=rf"\nw +{re.escape(str(dims).replace(' ', ''))} +float32 "
          rf"+{int(np.prod(dims))}\n")],
    # nothing silently lost: the npz directory checked against the local headers and data
    *every_command("npz-directory-entry-renamed", npz_directory(rename_entry), "{d}/weights.npz",
                   r"\S+weights\.npz: member 'a1\.npz': its local header at byte \d+ gives "
                   r"name b'a1\.npy', the central directory b'a1\.npz'", verify=1),
    *every_command("npz-directory-size-0", npz_directory(directory_size_0), "{d}/weights.npz",
                   r"\S+weights\.npz: bytes 0\.\.\d+ belong to no member the central "
                   "directory lists", verify=1),
    *every_command("npz-directory-entry-dropped", npz_directory(drop_entry),
                   "{d}/weights.npz", r"\S+weights\.npz: bytes \d+\.\.\d+ belong to no "
                   "member the central directory lists", verify=1),
    # names a writer could not keep as they are: refused before writing
    *[case(f"npz-name-{what}-{args.split()[0]}", safetensors_named(name, "w"), args, 2,
           E + pattern)
      for what, name, pattern in (
          ("1mb", "x" * MIB, r"tensor 'x{60}'\.\.\. \(1048576 characters\): its name is "
           r"1048580 bytes as a member name; zip names stop at 65,535"),
          ("nul", "a\0b", r"tensor 'a\\x00b': its name holds a NUL byte, where zip names "
           "end"))
      for args in ("convert {d}/model.safetensors {d}/out.npz",
                   "surgery {d}/model.safetensors -o {d}/out.npz --rename w=v")],
    case("h5-name-nul-convert", safetensors_named("a\0b", "w"),
         "convert {d}/model.safetensors {d}/out.h5", 2,
         E + r"tensor 'a\\x00b' would be stored under another name in HDF5"),
]


# ---------------------------------------------------------------- running them

@dataclass
class Run:
    code: int = None
    stdout: str = ""
    stderr: str = ""
    before: dict = None
    after: dict = None
    error: str = ""         # the builder failed, or the process hung


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Build every selected case's input, run them all at once; key: the test id."""
    jobs, built = [], {}
    for item in request.session.items:
        if getattr(item, "originalname", None) != "test_hostile":
            continue
        key, c = item.callspec.id, item.callspec.params["case"]
        d = tmp_path_factory.mktemp("hostile")
        try:
            c.build(d)
        except Exception as e:   # reported by that case's test, not by all of them
            built[key] = Run(error=f"building the input failed: {e!r}")
            continue
        built[key] = Run(before=snapshot(d))
        jobs.append((key, c.argv(d), d, c.timeout))
    jobs.sort(key=lambda job: job[3] == TIMEOUT)     # known hangs first, while others run
    results = run_isolated([job[1:] for job in jobs], MEMORY_LIMIT,
                           width=2 * (os.cpu_count() or 1))
    for (key, _, d, timeout), (code, out, err) in zip(jobs, results):
        run = built[key]
        run.code, run.stdout, run.stderr, run.after = code, out, err, snapshot(d)
        if code is None:
            run.error = f"ckptkit gave no answer within {timeout} s (a hang)"
    return built


@pytest.mark.parametrize("case", CASES)
def test_hostile(case, runs, request):
    run = runs[request.node.callspec.id]
    assert not run.error, run.error
    shown = f"exit {run.code}\n--- stdout\n{run.stdout}--- stderr\n{run.stderr}"
    assert "Traceback" not in run.stdout + run.stderr, shown
    assert "internal error" not in run.stderr, shown
    assert "out of memory" not in run.stderr, shown
    assert run.code == case.code, shown
    if case.code == 2:
        assert run.stdout == "", shown
        assert run.stderr.endswith("\n") and run.stderr.count("\n") == 1, shown
        assert run.stderr.startswith("ckptkit: error: "), shown
        assert re.search(case.pattern, run.stderr.rstrip("\n")), shown
    elif case.code == 1:
        head, *problems = run.stdout.splitlines()
        assert run.stderr == "", shown
        assert re.fullmatch(rf"CORRUPT \S+: {len(problems)} problem(s|\(s\))?", head), shown
        assert problems and any(re.search(case.pattern, p) for p in problems), shown
    else:
        if case.note is None:
            assert run.stderr == "", shown
        else:
            assert run.stderr.count("\n") == 1 and re.search(case.note, run.stderr), shown
        assert re.search(case.pattern, run.stdout), shown
    assert run.after == run.before, "the input files changed"


HARNESS = [   # (Python run in the child instead of ckptkit, exit status, text in stderr)
    ("x = bytearray(2 << 30)", 1, "MemoryError"),             # 2 GiB: over the limit
    ("x = bytearray(64 << 20)", 0, ""),                       # 64 MiB: well under it
    ("import time; time.sleep(60)", None, ""),                # a hang is cut short
]


def test_harness_enforces_limits(tmp_path):
    """The memory limit and the timeout the table relies on are really in force."""
    results = run_isolated([([source], tmp_path, 0.5) for source, _, _ in HARNESS],
                           MEMORY_LIMIT, len(HARNESS), code="import sys; exec(sys.argv[1])")
    assert [(status, where in err, out) for (status, out, err), (_, _, where)
            in zip(results, HARNESS)] == [(status, True, "") for _, status, _ in HARNESS]


def test_table_is_wide():
    """The table covers the ground: enough cases, each id once."""
    ids = [p.id for p in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


# ---------------------------------------------------------------- the encoder itself

ALL_DTYPES = {
    "b/bool": np.array([True, False, True]),
    "b/f16": np.array([0.5, -2.0], np.float16),
    "b/f64": np.array([[1.25]], np.float64),
    "b/i32": np.array([-7, 2 ** 31 - 1], np.int32),
    "b/i8": np.array([-128, 127], np.int8),
    "b/u16": np.array([65535], np.uint16),
    "c/c64": np.array([1 + 2j], np.complex64),
    "empty": np.zeros((0, 3), np.float32),
    "scalar": np.array(3.5, np.float32),
    "strings": np.array([b"", b"\x00\xff", "é".encode() * 100], dtype=object),
}
ALL_DTYPES.update({f"many/t{i:02d}": np.full(2, i, np.int64) for i in range(20)})
V1_DTYPES = {k: v for k, v in {**BASE, **ALL_DTYPES}.items()   # what TF's V1 reader takes
             if (v.dtype.kind in "bfO" and v.dtype != np.float16) or v.dtype == np.int64}


def _partitioned(prefix):
    bundle = Bundle(Path(prefix))
    bundle.put("plain", np.ones(3, np.float32))
    bundle.put_partitioned("part/w", (4, 3), [
        ([(0, 2), (0, -1)], np.arange(6, dtype=np.float32).reshape(2, 3)),
        ([(2, 2), (0, -1)], np.arange(6, 12, dtype=np.float32).reshape(2, 3))])
    bundle.write(compression=1)


LAYOUTS = {   # name -> (write(prefix), the tensors it holds)
    "v2-base": (lambda p: write_bundle(p, BASE), BASE),
    "v2-dtypes-2-shards-blocks-of-3": (
        lambda p: write_bundle(p, ALL_DTYPES, num_shards=2, block_entries=3), ALL_DTYPES),
    "v2-snappy": (lambda p: write_bundle(p, BASE, compression=1), BASE),
    "v2-partitioned": (_partitioned, {"plain": np.ones(3, np.float32),
                                      "part/w": np.arange(12, dtype=np.float32).reshape(4, 3)}),
    "v1": (lambda p: write_v1(p, V1_DTYPES, block_entries=4), V1_DTYPES),
}


def _same(expected, got):
    expected = np.asarray(expected)
    if expected.dtype.kind == "O":
        return got.dtype.kind == "O" and got.shape == expected.shape and \
            got.reshape(-1).tolist() == expected.reshape(-1).tolist()
    return got.dtype == expected.dtype and np.array_equal(got, expected)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_encoder_read_back_by_ckptkit(layout, tmp_path):
    write, tensors = LAYOUTS[layout]
    write(tmp_path / "model.ckpt")
    with open_checkpoint(tmp_path / "model.ckpt") as reader:
        assert [v.name for v in reader] == sorted(tensors)
        for v in reader:
            assert (v.shape, v.dtype) == (np.shape(tensors[v.name]),
                                          "string" if tensors[v.name].dtype.kind == "O"
                                          else tensors[v.name].dtype.name)
            assert _same(tensors[v.name], reader.read(v.name)), v.name
        assert list(reader.problems()) == []


@pytest.mark.tf
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_encoder_read_back_by_tensorflow(layout, tmp_path):
    tf = pytest.importorskip("tensorflow")
    write, tensors = LAYOUTS[layout]
    write(tmp_path / "model.ckpt")
    reader = tf.train.load_checkpoint(str(tmp_path / "model.ckpt"))
    assert reader.get_variable_to_shape_map() == {k: list(np.shape(v))
                                                  for k, v in tensors.items()}
    for name, value in tensors.items():
        assert _same(value, np.asarray(reader.get_tensor(name))), name
