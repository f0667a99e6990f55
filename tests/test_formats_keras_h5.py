"""Keras HDF5 reader against files written with h5py in each Keras layout, and the corpus;
the checkpoint tensor of each weight of a .keras that `ckptkit port` wrote, against Keras'
own save and with hostile metadata."""
import importlib.util
import json
import mmap
import os
import re
import stat
import subprocess
import sys
import zipfile

import h5py
import ml_dtypes
import numpy as np
import pytest

from ckptkit import open_checkpoint
from ckptkit.errors import CkptError, Corrupt, FormatError, Unsupported
from ckptkit.formats.keras_h5 import KerasH5Reader
from ckptkit.formats.keras_meta import snake_case

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


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_contiguous_datasets_are_memory_mapped(tmp_path, container):
    """In the file, or in the temp file a deflated .keras member is inflated to: never a
    copy in memory."""
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


def outside(kind, tmp_path):
    """An .h5 whose `w` takes its values from another file: raw storage, a virtual dataset's
    source, an external link's target."""
    (tmp_path / "other.bin").write_bytes(b"SECRET" * 10)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(4.0)
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f["ok"] = np.ones(2, np.float32)
        if kind == "external-storage":
            f.create_dataset("g/w", (60,), "u1", external=[(str(tmp_path / "other.bin"), 0, 60)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout((4,), "f8")
            layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", (4,))
            f.create_virtual_dataset("g/w", layout)
        else:
            f.create_group("g")["w"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "x")
    return path


@pytest.mark.parametrize("kind, match", [
    ("external-storage", r"dataset 'g/w' keeps its values in external file \S+other\.bin"),
    ("virtual", r"dataset 'g/w' is virtual \(its values are read from other HDF5 files\)"),
    ("external-link", r"'g/w' is a link to 'x' in \S+other\.h5 outside the file"),
])
def test_values_outside_the_file_are_refused_when_opened(tmp_path, kind, match):
    """HDF5 can make a dataset read any file; ckptkit reads only the checkpoint's own
    bytes, and an external link is not skipped in silence either."""
    with pytest.raises(Unsupported, match=match + "; ckptkit reads only the checkpoint's own "
                                                  "bytes$"):
        KerasH5Reader(str(outside(kind, tmp_path)))


def test_soft_links_inside_the_file_are_fine(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f["w"] = np.arange(3.0)
        f["alias"] = h5py.SoftLink("/w")
    with KerasH5Reader(str(path)) as reader:
        np.testing.assert_array_equal(reader.read("w"), np.arange(3.0))


@pytest.mark.parametrize("shape, options", [
    ((20000, 20000), {"chunks": (1000, 1000)}),   # 1.6 GB of unwritten chunks
    ((1 << 40,), {}),                             # 4 TB contiguous, never allocated
])
def test_unwritten_datasets_past_the_bound_are_listed_but_not_read(tmp_path, shape, options):
    """A ~1.4 KB file can declare terabytes that HDF5 reads as the fill value: refused
    before the allocation, a problem for verify."""
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", shape, "f4", **options)
    with KerasH5Reader(str(path)) as reader:
        assert reader.variables["w"].shape == shape
        with pytest.raises(Unsupported, match=r"dataset 'w' would decode 0 stored bytes into "
                                              rf"{4 * np.prod(shape)}; ckptkit decodes at most "
                                              r"64x the stored size \+ 256 MiB: HDF5 reads "
                                              "unwritten chunks as the fill value"):
            reader.read("w")
        assert [line.split(":")[0] for line in reader.problems()] == ["w"]


def test_a_small_unwritten_dataset_reads_as_its_fill_value(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", (100, 10), "f4", chunks=(10, 10), fillvalue=2.5)
    with KerasH5Reader(str(path)) as reader:
        np.testing.assert_array_equal(reader.read("w"), np.full((100, 10), 2.5, np.float32))


def test_compressed_chunks_past_the_bound_are_refused(tmp_path, monkeypatch):
    from ckptkit.formats import base

    monkeypatch.setattr(base, "EXPANSION_SLACK", 0)
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("zeros", data=np.zeros((512, 512), np.float32), compression="gzip")
        f.create_dataset("noise", data=rng.standard_normal((64, 64)), compression="gzip")
    with KerasH5Reader(str(path)) as reader:
        assert reader.read("noise").shape == (64, 64)
        with pytest.raises(Unsupported, match=r"dataset 'zeros' would decode \d+ stored bytes "
                                              r"into 1048576; ckptkit decodes at most 64x"):
            reader.read("zeros")


def test_a_deflated_keras_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    from ckptkit.formats import base

    monkeypatch.setattr(base, "EXPANSION_SLACK", 0)
    write_h5(tmp_path / "w.h5", {"zeros": np.zeros(1 << 20, np.float32)})
    path = tmp_path / "m.keras"
    keras_zip(path, tmp_path / "w.h5", zipfile.ZIP_DEFLATED)
    with pytest.raises(Unsupported, match=r"m\.keras: member 'model\.weights\.h5' would decode "
                                          r"\d+ stored bytes into \d+; .*re-zip it with "
                                          "model.weights.h5 stored, as Keras writes it$"):
        KerasH5Reader(str(path))


def test_a_keras_member_compressed_otherwise_is_refused(tmp_path):
    """bzip2 and lzma cannot be inflated a bounded piece at a time by zipfile."""
    write_h5(tmp_path / "w.h5", LAYOUTS["keras2_full"])
    path = tmp_path / "m.keras"
    keras_zip(path, tmp_path / "w.h5", zipfile.ZIP_BZIP2)
    with pytest.raises(Unsupported, match="uses zip compression method 12; ckptkit reads "
                                          "stored and deflated members"):
        KerasH5Reader(str(path))


def test_shapes_numpy_cannot_hold_are_listed_but_not_read(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w", (0, 2**62), "f4")
    with KerasH5Reader(str(path)) as reader:
        assert reader.variables["w"].shape == (0, 2**62)
        with pytest.raises(Unsupported, match=r"dataset 'w' has shape \[0, 4611686018427387904\], "
                                              "which numpy cannot hold"):
            reader.read("w")


@pytest.mark.parametrize("name", ["a\0b", "a//b", "/a", "a/", "a/./b", "."])
def test_writer_refuses_names_hdf5_would_change_before_writing(tmp_path, name):
    """h5py cuts a name at NUL and drops empty and '.' parts: the tensor would come back
    under another name."""
    from ckptkit.formats.keras_h5 import KerasH5Writer

    with KerasH5Writer(str(tmp_path / "out.h5")) as writer:
        with pytest.raises(Unsupported, match=f"tensor {re.escape(repr(name))} would be stored "
                                              "under another name in HDF5"):
            writer.begin([("w", (1,), "float32"), (name, (1,), "float32")])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- what a ported .keras came from

# a Conv2D and its BatchNormalization as Keras 3 stores them, as `ckptkit port` describes them
PORT_DATASETS = {"layers/conv2d/vars/0": (3, 3, 1, 2), "layers/conv2d/vars/1": (2,),
                 **{f"layers/batch_normalization/vars/{i}": (2,) for i in range(4)}}
PORT_CONFIG = {"config": {"layers": [
    {"class_name": "InputLayer", "config": {"name": "images"}},
    {"class_name": "Conv2D", "config": {"name": "net-c1"}},
    {"class_name": "BatchNormalization", "config": {"name": "net-c1-BatchNorm"}}]}}
PORT_SOURCES = {"layers/conv2d/vars/0": ("net-c1/kernel", "net/c1/weights"),
                "layers/conv2d/vars/1": ("net-c1/bias", "net/c1/biases"),
                **{f"layers/batch_normalization/vars/{i}": (f"net-c1-BatchNorm/{v}",
                                                            f"net/c1/BatchNorm/{v}")
                   for i, v in enumerate(["gamma", "beta", "moving_mean", "moving_variance"])}}
PORT_WEIGHTS = dict(PORT_SOURCES.values())
ORIGIN = {"checkpoint": "/ckpts/model.ckpt", "net": "tiny"}


def ported_keras(tmp_path, weights=PORT_WEIGHTS, config=PORT_CONFIG, metadata=None,
                 compression=zipfile.ZIP_STORED, mode=0o600):
    """A .keras as `ckptkit port` writes it; `metadata` (text) replaces metadata.json, `mode`
    is its member's file mode (Keras writes permissions only)."""
    write_h5(tmp_path / "w.h5", {name: np.full(shape, i, np.float32)
                                 for i, (name, shape) in enumerate(PORT_DATASETS.items())})
    documents = {"metadata.json": metadata or json.dumps(
                     {"keras_version": "3.15.1", "ckptkit": {**ORIGIN, "weights": weights}}),
                 "config.json": json.dumps(config)}
    path = tmp_path / "ported.keras"
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, text in documents.items():
            info = zipfile.ZipInfo(name)
            info.external_attr, info.compress_type = \
                (mode if name == "metadata.json" else 0o600) << 16, compression
            zf.writestr(info, text)
        zf.write(tmp_path / "w.h5", "model.weights.h5")
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_ported_keras_names_each_weights_checkpoint_tensor(tmp_path, compression):
    with open_checkpoint(ported_keras(tmp_path, compression=compression)) as reader:
        assert reader.sources == {name: source for name, (_, source) in PORT_SOURCES.items()}
        assert (reader.origin, reader.warnings) == (ORIGIN, [])
        assert list(reader.variables) == sorted(PORT_DATASETS)
        assert reader.read("layers/batch_normalization/vars/3").tolist() == [5.0, 5.0]


def test_a_new_heads_weights_have_no_source(tmp_path):
    weights = {**PORT_WEIGHTS, "net-c1/kernel": None, "net-c1/bias": None}
    with open_checkpoint(ported_keras(tmp_path, weights)) as reader:
        assert sorted(reader.sources) == [f"layers/batch_normalization/vars/{i}"
                                          for i in range(4)]
        assert reader.warnings == []


@pytest.mark.parametrize("section", ["tiny", None], ids=["not-an-object", "absent"])
def test_a_keras_ckptkit_did_not_port_says_nothing_of_sources(tmp_path, section):
    metadata = json.dumps({"keras_version": "3.15.1"} if section is None else
                          {"keras_version": "3.15.1", "ckptkit": section})
    with open_checkpoint(ported_keras(tmp_path, metadata=metadata)) as reader:
        assert (reader.sources, reader.origin, reader.warnings) == ({}, None, [])
        assert list(reader.variables) == sorted(PORT_DATASETS)


def _layers(*layers):
    return {"config": {"layers": list(layers)}}


NOT_A_MAPPING = "metadata.json's ckptkit weights are not a mapping of Keras weight paths to " \
    "checkpoint tensor names"
HOSTILE_METADATA = [   # (id, ported_keras arguments, the warning's middle, as a regex)
    ("weights-a-list", dict(weights=list(PORT_WEIGHTS)), re.escape(NOT_A_MAPPING)),
    ("a-number-for-a-tensor", dict(weights={**PORT_WEIGHTS, "net-c1/bias": 3}),
     re.escape(NOT_A_MAPPING)),
    ("an-empty-tensor-name", dict(weights={**PORT_WEIGHTS, "net-c1/bias": ""}),
     re.escape(NOT_A_MAPPING)),
    ("a-layer-it-lacks", dict(weights={**PORT_WEIGHTS, "net-c9/kernel": "net/c9/weights"}),
     re.escape("metadata.json names 1 weight(s) the archive lacks (first 'net-c9/kernel')")),
    ("a-variable-it-lacks", dict(weights={**PORT_WEIGHTS, "net-c1/extra": "net/c1/extra"}),
     re.escape("metadata.json names 1 weight(s) the archive lacks (first 'net-c1/extra')")),
    ("a-variable-left-out", dict(weights={k: v for k, v in PORT_WEIGHTS.items()
                                          if k != "net-c1/bias"}),
     re.escape("layer layers/conv2d holds 2 variables, metadata.json names 1")),
    ("config-without-layers", dict(config={"config": {"layers": "all"}}),
     re.escape("config.json does not list the model's layers")),
    ("a-layer-without-a-name", dict(config=_layers({"class_name": "Conv2D", "config": {}})),
     re.escape("config.json lists a layer without a class name or name")),
    ("two-layers-of-one-name", dict(config=_layers(
        *PORT_CONFIG["config"]["layers"], {"class_name": "Dense", "config": {"name": "net-c1"}})),
     re.escape("config.json names two layers 'net-c1'")),
    ("metadata-not-json", dict(metadata='{"ckptkit": '), r"metadata\.json is not JSON \(.+\)"),
    ("metadata-nested-too-deep", dict(metadata="[" * 200_000),
     r"metadata\.json is not JSON \(.+\)"),
    ("metadata-a-symlink", dict(mode=stat.S_IFLNK | 0o777),
     re.escape("metadata.json is not a regular file")),
    ("metadata-over-8-MiB", dict(metadata=" " * (8 << 20) + "{}",
                                 compression=zipfile.ZIP_DEFLATED),
     re.escape(f"metadata.json holds {(8 << 20) + 2} bytes, over the 8 MiB ckptkit reads "
               "of it")),
]


@pytest.mark.parametrize("case, kwargs, warning", HOSTILE_METADATA,
                         ids=[row[0] for row in HOSTILE_METADATA])
def test_hostile_port_metadata_is_set_aside_with_one_warning(tmp_path, case, kwargs, warning):
    """Never trusted: a mapping that is not one, or that the archive contradicts, is set
    aside in one line (an unreadable metadata.json takes the origin with it); the weights
    list and read as always."""
    path = ported_keras(tmp_path, **kwargs)
    with open_checkpoint(path) as reader:
        assert reader.sources == {}
        assert reader.origin == (None if case.startswith("metadata-") else ORIGIN)
        assert len(reader.warnings) == 1
        assert re.fullmatch(re.escape(f"{path}: ") + warning + re.escape(
            "; the checkpoint tensors of its weights are unknown"), reader.warnings[0])
        assert list(reader.variables) == sorted(PORT_DATASETS)
        assert reader.read("layers/conv2d/vars/1").tolist() == [1.0, 1.0]


KERAS_SAVE = """
import json, sys, numpy as np, keras
from keras.src.utils.naming import to_snake_case
images = keras.Input((4, 4, 3))
x = keras.layers.Conv2D(2, 3, padding="same", name="c1")(images)
x = keras.layers.BatchNormalization(name="c1-BN")(x)
x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
x = keras.layers.SeparableConv2D(3, 3, padding="same", name="sep")(x)
x = keras.layers.Conv2D(2, 1, use_bias=False, name="c2")(x)
x = keras.layers.BatchNormalization(center=False, name="c2-BN")(x)
inner = keras.Model(images, keras.layers.Dense(3, name="fc")(keras.layers.Flatten()(x)),
                    name="inner")
pixels = keras.Input((4, 4, 3), name="pixels")
model = keras.Model(pixels, inner(keras.layers.Rescaling(0.5, name="pre")(pixels)))
weights = {}
for i, w in enumerate(model.weights):
    w.assign(np.full(w.shape, i, "float32"))
    weights[w.path] = f"ckpt/{i}"
model.save(sys.argv[1])
print(json.dumps({"weights": weights, "snake": {n: to_snake_case(n) for n in sys.argv[2:]}}))
"""
CLASS_NAMES = ["Conv2D", "BatchNormalization", "DepthwiseConv2D", "SeparableConv2D",
               "ZeroPadding2D", "GlobalAveragePooling2D", "Dense", "InputLayer", "Functional",
               "Sequential", "ReLU", "PReLU", "Conv2DTranspose", "LayerNormalization",
               "ABCDef", "aBC"]


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="needs Keras 3")
def test_sources_match_what_keras_itself_saved(tmp_path):
    """The oracle is Keras' own save (numpy backend, its own process): a nested model with
    every kind of weighted layer a port makes, each weight filled with its index; every
    dataset the reader names by a checkpoint tensor holds that tensor's index. Our snake case
    of class names is Keras' too."""
    path = tmp_path / "saved.keras"
    done = subprocess.run([sys.executable, "-c", KERAS_SAVE, str(path), *CLASS_NAMES],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "numpy"})
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads(done.stdout.strip().splitlines()[-1])
    assert {name: snake_case(name) for name in CLASS_NAMES} == saved["snake"]
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tmp_path / "p.keras", "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "metadata.json":
                data = json.dumps({**json.loads(data), "ckptkit": {
                    **ORIGIN, "weights": saved["weights"]}}).encode()
            target.writestr(info, data)
    with open_checkpoint(tmp_path / "p.keras") as reader:
        assert reader.warnings == []
        assert sorted(reader.sources.values()) == sorted(saved["weights"].values())
        for name, source in reader.sources.items():
            value = reader.read(name)
            assert value.size and (value == int(source.split("/")[1])).all(), (name, source)
