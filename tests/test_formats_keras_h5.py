"""Keras HDF5 reader against files written with h5py in each Keras layout, and the corpus."""
import mmap
import zipfile

import h5py
import ml_dtypes
import numpy as np
import pytest

from ckptkit import open_checkpoint
from ckptkit.errors import CkptError, Corrupt, FormatError, Unsupported
from ckptkit.formats.keras_h5 import KerasH5Reader

rng = np.random.default_rng(5)
LAYOUTS = {
    "keras2_full": {
        "model_weights/dense_1/dense_1/kernel:0": rng.standard_normal((4, 3)).astype("f4"),
        "model_weights/dense_1/dense_1/bias:0": np.array([np.nan, -0.0, np.inf], "f4"),
        "optimizer_weights/training/Adam/Variable:0": rng.standard_normal((4, 3)).astype("f4"),
        "optimizer_weights/Adam/iterations:0": np.array(2**40 + 7, np.int64),
    },
    "keras2_weights_only": {
        "dense_106/dense_106/kernel:0": rng.standard_normal((5, 64)).astype("f4"),
        "dense_106/dense_106/bias:0": rng.standard_normal(64).astype("f4"),
    },
    "keras3_weights": {
        "layers/dense/vars/0": rng.standard_normal((6, 2)).astype(ml_dtypes.bfloat16),
        "layers/dense/vars/1": np.array([1.5, -2], ml_dtypes.bfloat16),
        "layers/functional/layers/dense/vars/0": rng.standard_normal((2, 2)).astype("f4"),
        "optimizer/vars/0": np.array(3, np.int64),
        "vars/0": np.array(0.5, np.float64),
    },
    "edge_cases": {
        "half": rng.standard_normal(7).astype(np.float16),
        "mask": np.array([[True, False], [False, True]]),
        "empty": np.zeros((0, 3), np.float32),
        "u8": np.arange(5, dtype=np.uint8),
        "c64": np.array([1 - 1j], np.complex64),
        "big_endian": np.arange(4, dtype=">f4"),
        "a-b": np.ones(1, np.int32),   # '-' sorts before '/': name order is not walk order
        "a/b": np.ones(1, np.int32),
        "vocab": np.array([b"cat", "d\u00f6g".encode()], dtype=object),
        "fixed": np.array([b"ab", b"c"]),
    },
}
STORAGE = ["contiguous", "chunked", "compact"]


def mapped(array):
    """True when the array's memory lies in a memory-mapped file."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(getattr(base, "obj", base), mmap.mmap)


def dtype_of(array):
    return "string" if array.dtype.kind in "OS" else array.dtype.name


def write_h5(path, tensors, storage="contiguous"):
    """An HDF5 file as Keras writes it: one dataset per tensor; bfloat16 as 2-byte opaque data
    tagged with attr dtype="bfloat16" (Keras 3); strings as h5py's variable-length strings."""
    with h5py.File(path, "w") as f:
        for name, value in tensors.items():
            kwargs = {}
            if storage == "chunked" and value.size and value.ndim:
                kwargs = {"chunks": True, "compression": "gzip", "shuffle": True}
            elif storage == "compact" and value.dtype.kind != "O":
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_layout(h5py.h5d.COMPACT)
                kwargs = {"dcpl": dcpl}
            dtype = h5py.string_dtype("utf-8") if value.dtype.kind == "O" else None
            ds = f.create_dataset(name, data=value, dtype=dtype, **kwargs)
            if value.dtype == ml_dtypes.bfloat16:
                ds.attrs["dtype"] = "bfloat16"


def keras_zip(path, h5_path, compression=zipfile.ZIP_STORED):
    """A Keras 3 .keras file: config, metadata and the weights as model.weights.h5."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr("metadata.json", '{"keras_version": "3.15.1"}')
        zf.writestr("config.json", "{}")
        zf.write(h5_path, "model.weights.h5")


CONTAINERS = {
    "h5": lambda tmp_path, h5: h5,
    "keras-stored": lambda tmp_path, h5: keras_zip(tmp_path / "m.keras", h5) or
    tmp_path / "m.keras",
    "keras-deflated": lambda tmp_path, h5: keras_zip(
        tmp_path / "m.keras", h5, zipfile.ZIP_DEFLATED) or tmp_path / "m.keras",
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request):
    return request.param


@pytest.mark.parametrize("container", sorted(CONTAINERS))
@pytest.mark.parametrize("storage", STORAGE)
def test_lists_and_reads_every_dataset_exactly(tmp_path, layout, storage, container):
    tensors = LAYOUTS[layout]
    write_h5(tmp_path / "w.h5", tensors, storage)
    path = CONTAINERS[container](tmp_path, tmp_path / "w.h5")
    with open_checkpoint(path) as reader:
        assert reader.format == "keras-h5" and reader.files == [str(path)]
        assert [(v.name, v.shape, v.dtype) for v in reader] == [
            (name, tensors[name].shape, dtype_of(tensors[name])) for name in sorted(tensors)]
        for name, want in tensors.items():
            got = reader.read(name)
            assert got.shape == want.shape, name
            if want.dtype.kind in "OS":   # strings come back as an object array of bytes
                assert got.dtype == object and got.tolist() == want.tolist(), name
            else:
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name
                np.testing.assert_array_equal(got, want)
                assert reader.variables[name].nbytes == want.nbytes
        assert list(reader.problems()) == []


@pytest.mark.parametrize("container", ["h5", "keras-stored"])
def test_contiguous_datasets_are_memory_mapped(tmp_path, container):
    write_h5(tmp_path / "w.h5", LAYOUTS["keras2_full"])
    with open_checkpoint(CONTAINERS[container](tmp_path, tmp_path / "w.h5")) as reader:
        assert all(mapped(reader.read(name)) for name in reader.variables)


def test_corpus_matches_h5py(oracle, corpus):
    cases = {case: record for case, record in oracle.items() if record["kind"] == "keras_h5"}
    assert cases, "the corpus oracle lists no keras_h5 case"
    for case, record in sorted(cases.items()):
        path = corpus / case / record["file"]
        with open_checkpoint(path) as reader, h5py.File(path, "r") as h5:
            assert reader.format == "keras-h5", case
            assert [{"name": v.name, "shape": list(v.shape), "dtype": v.dtype}
                    for v in reader] == sorted(record["datasets"], key=lambda d: d["name"])
            for var in reader:
                want = h5[var.name][()]
                got = reader.read(var.name)
                assert got.dtype == want.dtype and got.shape == np.shape(want), var.name
                assert got.tobytes() == np.asarray(want).tobytes(), f"{case}: {var.name}"
            assert list(reader.problems()) == [], case


def test_corrupt_chunk_is_reported(tmp_path):
    path = tmp_path / "w.h5"
    write_h5(path, {"good": np.arange(4.0), "bad": rng.standard_normal((64, 64))}, "chunked")
    with h5py.File(path, "r") as f:
        chunk = f["bad"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset:chunk.byte_offset + chunk.size] = b"\xa5" * chunk.size
    path.write_bytes(bytes(data))
    with KerasH5Reader(str(path)) as reader:
        np.testing.assert_array_equal(reader.read("good"), np.arange(4.0))
        with pytest.raises(Corrupt, match="dataset 'bad' cannot be read"):
            reader.read("bad")
        assert [line.split(":")[0] for line in reader.problems()] == ["bad"]


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.98])
@pytest.mark.parametrize("container", ["h5", "keras-stored"])
def test_truncated_file_is_a_format_error(tmp_path, keep, container):
    write_h5(tmp_path / "w.h5", LAYOUTS["keras2_full"])
    path = CONTAINERS[container](tmp_path, tmp_path / "w.h5")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(FormatError, match=f"{path} is not a readable"):
        KerasH5Reader(str(path))


@pytest.mark.parametrize("name", ["junk.h5", "junk.keras"])
def test_garbage_with_the_extension_is_a_format_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(FormatError, match=f"{path} is not a readable HDF5 file"):
        KerasH5Reader(str(path))
    with pytest.raises(CkptError, match=name):
        open_checkpoint(path)


def test_keras_zip_without_weights_is_a_format_error(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.weights.npz", b"")
    with pytest.raises(FormatError, match="holds no model.weights.h5"):
        open_checkpoint(path)


def test_datasets_without_a_tensor_value_are_listed_but_refused(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("null", data=h5py.Empty("f4"))
        f["opaque"] = np.ones(2, ml_dtypes.bfloat16)   # Keras 3 legacy .h5: no dtype attr
        f["compound"] = np.zeros(2, [("a", "<i4"), ("b", "<f8")])
        f["w"] = np.ones(2, np.float32)
    with open_checkpoint(path) as reader:
        assert [(v.name, v.shape, v.dtype) for v in reader] == [
            ("compound", (2,), "void96"), ("null", (), "float32"), ("opaque", (2,), "void16"),
            ("w", (2,), "float32")]
        with pytest.raises(Unsupported, match="null dataspace"):
            reader.read("null")
        with pytest.raises(Unsupported, match="Keras 3 writes bfloat16"):
            reader.read("opaque")
        with pytest.raises(Unsupported, match="not a tensor"):
            reader.read("compound")
        assert [line.split(":")[0] for line in reader.problems()] == [
            "compound", "null", "opaque"]
