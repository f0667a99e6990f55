"""npz reader against archives written by numpy.savez / savez_compressed."""
import io
import mmap
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest

from ckptkit import open_checkpoint
from ckptkit.errors import CkptError, Corrupt, FormatError, Unsupported
from ckptkit.formats.npz import NpzReader

rng = np.random.default_rng(3)
ARRAYS = {
    "conv/weights": rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
    "conv/biases": np.array([np.nan, -0.0, np.inf, 1e-45], np.float32),
    "fortran": np.asfortranarray(rng.standard_normal((5, 7))),
    "fortran_int": np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
    "half": rng.standard_normal(6).astype(np.float16),
    "global_step": np.array(2**40 + 1, np.int64),
    "mask": np.array([True, False, True]),
    "big_endian": np.arange(4, dtype=">i4"),
    "labels": np.array(["cat", "dog"]),
    "raw": np.array([b"a", b"bc"]),
    "empty": np.zeros((0, 2), np.float32),
    "c128": np.array([1 + 2j], np.complex128),
}
SAVERS = {"stored": np.savez, "deflated": np.savez_compressed}


def mapped(array):
    """True when the array's memory lies in a memory-mapped file."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(getattr(base, "obj", base), mmap.mmap)


@pytest.fixture(params=sorted(SAVERS))
def path(request, tmp_path):
    p = tmp_path / "weights.npz"
    SAVERS[request.param](p, **ARRAYS)
    return p


def test_lists_every_member_in_name_order(path):
    with open_checkpoint(path) as reader:
        assert reader.format == "npz"
        assert reader.files == [str(path)]
        assert [(v.name, v.shape, v.dtype, v.nbytes) for v in reader] == [
            (name, ARRAYS[name].shape,
             "string" if ARRAYS[name].dtype.kind in "SU" else ARRAYS[name].dtype.name,
             ARRAYS[name].nbytes) for name in sorted(ARRAYS)]


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_values_are_bit_exact(path, name):
    want = np.load(path)[name]
    with NpzReader(str(path)) as reader:
        got = reader.read(name)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes(order="A") == want.tobytes(order="A")
        np.testing.assert_array_equal(got, ARRAYS[name])


def test_stored_members_are_memory_mapped(tmp_path):
    p = tmp_path / "w.npz"
    np.savez(p, **ARRAYS)
    with NpzReader(str(p)) as reader:
        assert all(mapped(reader.read(name)) for name in ARRAYS if ARRAYS[name].size)


def test_listing_reads_headers_only(tmp_path):
    """A member whose data is corrupt still lists; reading or checking it finds the damage."""
    p = tmp_path / "w.npz"
    np.savez_compressed(p, a=rng.standard_normal(4000), b=np.ones(3, np.float32))
    data = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("a.npy")
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    end = info.header_offset + 30 + name_len + extra_len + info.compress_size
    data[end - 100] ^= 0xFF   # near the end of a's deflate stream, far from its header
    p.write_bytes(bytes(data))
    with NpzReader(str(p)) as reader:
        assert list(reader.variables) == ["a", "b"]
        np.testing.assert_array_equal(reader.read("b"), np.ones(3, np.float32))
        with pytest.raises(Corrupt, match="'a.npy'"):
            reader.read("a")
        assert [line.split(":")[0] for line in reader.problems()] == ["a"]


def test_problems_reports_a_bad_crc_once(tmp_path):
    p = tmp_path / "w.npz"
    np.savez(p, a=np.arange(10, dtype=np.float32), b=np.ones(2, np.float32))
    clean = p.read_bytes()
    with NpzReader(str(p)) as reader:
        assert list(reader.problems()) == []
    at = clean.index(np.arange(10, dtype=np.float32).tobytes())
    p.write_bytes(clean[:at] + b"\x7f" + clean[at + 1:])
    seen = []
    with NpzReader(str(p)) as reader:
        lines = list(reader.problems(progress=seen.append))
    assert len(lines) == 1 and lines[0].startswith("a: member 'a.npy'")
    assert "CRC" in lines[0] and seen == [40, 8]


def npz_with(tmp_path, member, payload):
    """An npz holding one member with hand-made bytes."""
    p = tmp_path / "hostile.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(member, payload)
    return p


def npy_bytes(header, data=b""):
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, header)
    return f.getvalue() + data


def test_pickled_object_array_is_listed_and_refused(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, obj=np.array([{"a": 1}, None], dtype=object), x=np.ones(2))
    with open_checkpoint(p) as reader:
        assert reader.variables["obj"].dtype == "object"
        with pytest.raises(Unsupported, match="pickled object array, refused"):
            reader.read("obj")
        np.testing.assert_array_equal(reader.read("x"), np.ones(2))


def test_bfloat16_saved_by_numpy_is_refused(tmp_path):
    p = tmp_path / "bf.npz"
    np.savez(p, w=np.ones(2, ml_dtypes.bfloat16))
    with NpzReader(str(p)) as reader:
        assert reader.variables["w"].dtype == "void16"
        with pytest.raises(Unsupported, match="bfloat16 saved by numpy"):
            reader.read("w")


@pytest.mark.parametrize("payload, error, match", [
    (npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (10**12,)}, b"\0" * 8),
     FormatError, r"claims shape \[1000000000000\] float32 \(4000000000000 bytes\) but holds "
                  "8 bytes"),
    (npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (3,)}, b"\0" * 8),
     FormatError, "holds 8 bytes"),
    (npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (-2,)}, b"\0" * 8),
     FormatError, r"claims shape \[-2\]"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': 'zz'}\n" + b"\0" * 4, FormatError,
     "is not a .npy array"),
    (b"PK\x03\x04 not an npy file at all", FormatError, "is not a .npy array"),
    (b"\x93NUMPY\x03\x00" + b"\0" * 40, Unsupported, ".npy version 3.0"),
])
def test_hostile_members_are_format_errors(tmp_path, payload, error, match):
    with pytest.raises(error, match=match):
        NpzReader(str(npz_with(tmp_path, "w.npy", payload)))


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file_is_a_format_error(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(FormatError, match=f"{path} is not a readable npz"):
        NpzReader(str(path))


def test_garbage_with_the_extension_is_a_format_error(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(FormatError, match="junk.npz"):
        NpzReader(str(p))
    with pytest.raises(CkptError, match="junk.npz"):
        open_checkpoint(p)


def test_other_members_are_not_tensors(tmp_path):
    p = tmp_path / "mixed.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("README.txt", "not a tensor")
        with zf.open("w.npy", "w") as f:
            np.save(f, np.arange(3))
    with NpzReader(str(p)) as reader:
        assert list(reader.variables) == ["w"]
        np.testing.assert_array_equal(reader.read("w"), np.arange(3))


def test_deflated_members_inflate_in_pieces_bit_exact(tmp_path):
    """Members spanning many inflate pieces: long runs of zeros (deflate's long matches)
    and random bytes come back exact, their CRC-32 and size checked."""
    runs = np.zeros(3_000_000, np.float32)
    runs[::999_983] = 7
    noise = rng.standard_normal(300_000)
    p = tmp_path / "w.npz"
    np.savez_compressed(p, runs=runs, noise=noise)
    with NpzReader(str(p)) as reader:
        np.testing.assert_array_equal(reader.read("runs"), runs)
        np.testing.assert_array_equal(reader.read("noise"), noise)
        assert list(reader.problems()) == []


def test_a_decompression_bomb_is_listed_but_never_inflated(tmp_path, monkeypatch):
    """A deflated member may decode to 64x its stored bytes + a slack (256 MiB; 0 here):
    past that, reading it is refused before anything is allocated."""
    from ckptkit.formats import base

    monkeypatch.setattr(base, "EXPANSION_SLACK", 0)
    p = tmp_path / "w.npz"
    np.savez_compressed(p, zeros=np.zeros(1 << 20, np.float32), noise=rng.standard_normal(99))
    with NpzReader(str(p)) as reader:
        assert reader.variables["zeros"].shape == (1 << 20,)
        with pytest.raises(Unsupported, match=r"member 'zeros\.npy' would decode \d+ stored "
                                              r"bytes into 4194432; ckptkit decodes at most "
                                              r"64x the stored size \+ 0 MiB: a decompression"):
            reader.read("zeros")
        assert reader.read("noise").shape == (99,)
        assert [line.split(":")[0] for line in reader.problems()] == ["zeros"]


def directory_entry(data, name):
    """Where the central directory entry of member `name` starts in the archive `data`."""
    at = struct.unpack_from("<I", data, data.rindex(b"PK\x05\x06") + 16)[0]
    while data[at + 46:at + 46 + struct.unpack_from("<H", data, at + 28)[0]] != name:
        at += 46 + sum(struct.unpack_from("<3H", data, at + 28))
    return at


def entry_name(data):
    data[directory_entry(data, b"b.npy") + 46] = ord("c")


def entry_crc(data):
    struct.pack_into("<I", data, directory_entry(data, b"b.npy") + 16, 1234)


def directory_size_0(data):
    struct.pack_into("<I", data, data.rindex(b"PK\x05\x06") + 12, 0)


def entry_offset(data):
    """b's entry points at a's local header: two entries, one member."""
    struct.pack_into("<I", data, directory_entry(data, b"b.npy") + 42, 0)


def entry_dropped(data):
    at, end = directory_entry(data, b"b.npy"), data.rindex(b"PK\x05\x06")
    length = 46 + sum(struct.unpack_from("<3H", data, at + 28))
    count, size = struct.unpack_from("<HI", data, end + 10)
    struct.pack_into("<HHI", data, end + 8, count - 1, count - 1, size - length)
    del data[at:at + length]


@pytest.mark.parametrize("damage, match", [
    (entry_name, r"member 'c\.npy': its local header at byte \d+ gives name b'b\.npy', the "
                 r"central directory b'c\.npy'"),
    (entry_crc, r"member 'b\.npy': its local header at byte \d+ gives CRC-32 \d+, the "
                r"central directory 1234"),
    (directory_size_0, r"bytes 0\.\.\d+ belong to no member the central directory lists"),
    (entry_offset, r"members overlap at bytes 0\.\.\d+ \(a damaged central directory\)"),
    (entry_dropped, r"bytes \d+\.\.\d+ belong to no member the central directory lists"),
])
def test_a_damaged_central_directory_is_corrupt_not_a_lost_tensor(tmp_path, damage, match):
    """zipfile lists what the directory says; checked against the local headers and the
    bytes, a damaged one is Corrupt (verify reports it) instead of a tensor fewer."""
    p = tmp_path / "w.npz"
    np.savez(p, a=np.ones(2, np.float32), b=np.zeros(3), c2=np.arange(4))
    data = bytearray(p.read_bytes())
    damage(data)
    p.write_bytes(bytes(data))
    with pytest.raises(Corrupt, match=match):
        NpzReader(str(p))


class Unseekable(io.RawIOBase):
    """A write-only stream, so that zipfile puts each member's CRC and sizes in a data
    descriptor after its bytes (flag bit 3), as streaming zip writers do."""

    def __init__(self, f):
        self.f = f

    def writable(self):
        return True

    def write(self, b):
        return self.f.write(b)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("zip64", [False, True])
def test_members_with_data_descriptors_are_read(tmp_path, compression, zip64):
    p = tmp_path / "w.npz"
    with open(p, "wb") as raw, zipfile.ZipFile(Unseekable(raw), "w", compression) as zf:
        for name, value in ARRAYS.items():
            with zf.open(name + ".npy", "w", force_zip64=zip64) as f:
                np.save(f, value)
    with NpzReader(str(p)) as reader:
        assert all(v.where[0].flag_bits & 8 for v in reader)
        for name, value in ARRAYS.items():
            np.testing.assert_array_equal(reader.read(name), value)
        assert list(reader.problems()) == []


def test_a_member_name_with_nul_is_refused(tmp_path):
    """zipfile cuts a name at NUL: 'w\\0.npy' would become a member 'w' that is skipped."""
    p = npz_with(tmp_path, "w.npy", npy_bytes(
        {"descr": "<f4", "fortran_order": False, "shape": (1,)}, bytes(4)))
    data = p.read_bytes().replace(b"w.npy", b"\0.npy")
    p.write_bytes(data)
    with pytest.raises(FormatError, match=r"member name '\\x00\.npy' holds a NUL byte"):
        NpzReader(str(p))


@pytest.mark.parametrize("shape, match", [
    ((0, 2**62), r"shape \[0, 4611686018427387904\], which numpy cannot hold"),
    ((1,) * 65, r"shape \[1(, 1){64}\], which numpy cannot hold"),
])
def test_shapes_numpy_cannot_hold_are_listed_but_not_read(tmp_path, shape, match):
    payload = npy_bytes({"descr": "<f4", "fortran_order": False, "shape": shape},
                        bytes(4 * (shape[0] != 0)))
    with NpzReader(str(npz_with(tmp_path, "w.npy", payload))) as reader:
        assert reader.variables["w"].shape == shape
        with pytest.raises(Unsupported, match=match):
            reader.read("w")
        assert [line.split(":")[0] for line in reader.problems()] == ["w"]


@pytest.mark.parametrize("name, match", [
    ("a\0b", r"tensor 'a\\x00b': its name holds a NUL byte, where zip names end"),
    ("x" * 65532, r"tensor 'x{60}'\.\.\. \(65532 characters\): its name is 65536 bytes as a "
                  "member name; zip names stop at 65,535"),
])
def test_writer_refuses_names_zip_cannot_hold_before_writing(tmp_path, name, match):
    from ckptkit.formats.npz import NpzWriter

    with NpzWriter(str(tmp_path / "out.npz")) as writer:
        with pytest.raises(Unsupported, match=match):
            writer.begin([("w", (1,), "float32"), (name, (1,), "float32")])
    assert list(tmp_path.iterdir()) == []


def test_writer_takes_the_longest_name_zip_holds(tmp_path):
    from ckptkit.formats.npz import NpzWriter

    name = "x" * 65531
    with NpzWriter(str(tmp_path / "out.npz")) as writer:
        writer.begin([(name, (1,), "float32")])
        writer.add(name, np.ones(1, np.float32))
        writer.commit()
    with NpzReader(str(tmp_path / "out.npz")) as reader:
        assert list(reader.variables) == [name]
