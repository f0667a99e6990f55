"""safetensors reader against files written by the `safetensors` package."""
import json
import mmap

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from ckptkit import open_checkpoint
from ckptkit.errors import CkptError, FormatError, Unsupported
from ckptkit.formats.safetensors import SafetensorsReader

rng = np.random.default_rng(7)
ARRAYS = {
    "dense/kernel": rng.standard_normal((3, 4)).astype(np.float32),
    "dense/bias": np.array([np.nan, -0.0, np.inf], np.float32),
    "half": rng.standard_normal(5).astype(np.float16),
    "bf16": rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16),
    "f8_e4m3": np.array([0.5, -2, 448], ml_dtypes.float8_e4m3fn),
    "f8_e5m2": np.array([0.25, 3], ml_dtypes.float8_e5m2),
    "double": np.array(3.25, np.float64),
    "step": np.array(2**40 + 3, np.int64),
    "mask": np.array([[True, False], [False, True]]),
    "bytes": np.arange(6, dtype=np.uint8),
    "small": np.array([-128, 127], np.int8),
    "u64": np.array([2**64 - 1], np.uint64),
    "c64": np.array([1 + 2j], np.complex64),
    "empty": np.zeros((0, 3), np.float32),
}


def mapped(array):
    """True when the array's memory lies in a memory-mapped file."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(getattr(base, "obj", base), mmap.mmap)


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "model.safetensors"
    save_file(ARRAYS, str(p), metadata={"format": "np", "step": "12"})
    return p


def test_lists_every_tensor_in_name_order(path):
    with open_checkpoint(path) as reader:
        assert reader.format == "safetensors"
        assert reader.files == [str(path)]
        assert [(v.name, v.shape, v.dtype, v.nbytes) for v in reader] == [
            (name, ARRAYS[name].shape, ARRAYS[name].dtype.name, ARRAYS[name].nbytes)
            for name in sorted(ARRAYS)]
        assert reader.metadata == {"format": "np", "step": "12"}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_values_are_bit_exact_and_zero_copy(path, name):
    with open_checkpoint(path) as reader:
        got = reader.read(name)
        want = ARRAYS[name]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
        np.testing.assert_array_equal(got, want)
        assert mapped(got) or got.size == 0


def test_no_metadata_gives_an_empty_dict(tmp_path):
    p = tmp_path / "m.safetensors"
    save_file({"a": np.ones(2, np.float32)}, str(p))
    with SafetensorsReader(str(p)) as reader:
        assert reader.metadata == {}


def raw_file(tmp_path, header, buffer=b"", length=None):
    """A safetensors file with a hand-written header (and header length, if given)."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = tmp_path / "bad.safetensors"
    p.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text +
                  buffer)
    return p


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, buffer, length, error, match", [
    ({"a": F32x2}, b"\0" * 8, 2**62, FormatError, "header length 4611686018427387904 does not fit"),
    ({"a": F32x2}, b"\0" * 8, 10**6, FormatError, "header length .* does not fit"),
    (b"{not json", b"", None, FormatError, "its header is not JSON"),
    (b"\xff\xfe{}", b"", None, FormatError, "its header is not JSON"),
    ([1, 2], b"", None, FormatError, "not a JSON object"),
    ({"a": F32x2}, b"\0" * 4, None, FormatError, r"data_offsets \[0, 8\] lie outside the 4-byte"),
    ({"a": {**F32x2, "data_offsets": [0, 4]}}, b"\0" * 8, None, FormatError,
     r"claims shape \[2\] float32 \(8 bytes\) but data_offsets \[0, 4\] span 4 bytes"),
    ({"a": {**F32x2, "data_offsets": [8, 0]}}, b"\0" * 8, None, FormatError, "lie outside"),
    ({"a": F32x2, "b": {**F32x2, "data_offsets": [4, 12]}}, b"\0" * 12, None, FormatError,
     "tensors 'a' and 'b' overlap"),
    ({"a": {**F32x2, "shape": [-2]}}, b"\0" * 8, None, FormatError, "non-negative integers"),
    ({"a": {**F32x2, "shape": [True, 2]}}, b"\0" * 8, None, FormatError,
     "non-negative integers"),
    ({"a": {**F32x2, "shape": 2}}, b"\0" * 8, None, FormatError, "non-negative integers"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, FormatError,
     "exactly dtype, shape, data_offsets"),
    ({"a": {**F32x2, "dtype": "F4"}}, b"\0" * 8, None, Unsupported, "has dtype 'F4'"),
    ({"a": F32x2, "__metadata__": {"n": 1}}, b"\0" * 8, None, FormatError,
     "__metadata__ must map strings to strings"),
    (b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "a": {}}', b"\0" * 8,
     None, FormatError, "repeats key 'a'"),
    (b"[" * 100000, b"", None, FormatError, "its header is not JSON"),
    ({"a": {**F32x2, "dtype": ["F32"]}}, b"\0" * 8, None, Unsupported, r"has dtype \['F32'\]"),
])
def test_hostile_headers_are_format_errors(tmp_path, header, buffer, length, error, match):
    path = raw_file(tmp_path, header, buffer, length)
    with pytest.raises(error, match=match):
        open_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 5, 8, 20, -3])
def test_truncated_file_is_a_format_error(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(FormatError, match=str(path)):
        SafetensorsReader(str(path))


def test_garbage_with_the_extension_is_a_format_error(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CkptError, match="junk.safetensors"):
        open_checkpoint(p)


@pytest.mark.parametrize("shape, match", [
    ([0, 2**62], r"shape \[0, 4611686018427387904\], which numpy cannot hold"),
    ([0, 10**30], r"which numpy cannot hold"),
    ([1] * 65, r"shape \[1(, 1){64}\], which numpy cannot hold"),
])
def test_shapes_numpy_cannot_hold_are_listed_but_not_read(tmp_path, shape, match):
    """Nothing to allocate, yet numpy refuses the array: one line, never an internal error."""
    n = 4 if shape[0] else 0
    path = raw_file(tmp_path, {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, n]}},
                    bytes(n))
    with SafetensorsReader(str(path)) as reader:
        assert reader.variables["w"].shape == tuple(shape)
        with pytest.raises(Unsupported, match=match):
            reader.read("w")
        assert [line.split(":")[0] for line in reader.problems()] == ["w"]


def test_writer_refuses_a_header_readers_would_refuse(tmp_path, monkeypatch):
    """safetensors readers stop at 100 MiB of header; long names reach it before any tensor
    is written, so the writer says so instead of writing a file nobody reads."""
    from ckptkit.formats import safetensors

    monkeypatch.setattr(safetensors, "MAX_HEADER", 1000)
    with safetensors.SafetensorsWriter(str(tmp_path / "out.safetensors")) as writer:
        with pytest.raises(Unsupported, match=r"header of \S+out\.safetensors would be \d+ "
                                              "bytes; readers take at most 1000"):
            writer.begin([("x" * 2000, (1,), "float32")])
    assert list(tmp_path.iterdir()) == []


def test_writer_metadata_reaches_the_safetensors_package(tmp_path):
    """The writer's `metadata` is the header's __metadata__, as safetensors' own reader and
    ours see it."""
    from safetensors import safe_open

    from ckptkit.formats.safetensors import SafetensorsWriter

    out = tmp_path / "out.safetensors"
    meta = {"ckptkit": json.dumps({"net": "vgg_16"}), "format": "pt"}
    with SafetensorsWriter(str(out), metadata=meta) as writer:
        writer.begin([("b", (2,), "float32"), ("a", (), "int64")])
        writer.add("b", np.ones(2, np.float32))
        writer.add("a", np.zeros((), np.int64))
        writer.commit()
    with safe_open(str(out), "numpy") as f:
        assert f.metadata() == meta and sorted(f.keys()) == ["a", "b"]
        assert f.get_tensor("a").dtype == np.int64 and f.get_tensor("b").tolist() == [1, 1]
    with SafetensorsReader(str(out)) as reader:
        assert reader.metadata == meta
