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
