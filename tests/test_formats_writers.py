"""The writers (formats/*: TFV2Writer, NpzWriter, SafetensorsWriter, KerasH5Writer) and the
table/proto encoders: round trips through our readers, exact bytes against what TF and the
safetensors library write, atomicity (no temp files, nothing visible before commit)."""
import gc
import os

import ml_dtypes
import numpy as np
import pytest

import ckptkit
from ckptkit.errors import FormatError, Unsupported
from ckptkit.formats import open_writer
from ckptkit.formats.base import no_cyclic_gc
from ckptkit.formats.protos import (BUNDLE_ENTRY, BUNDLE_HEADER, decode, encode_entry,
                                    encode_header, encode_varint, varint)
from ckptkit.formats.sstable import Table, TableWriter, mask_crc
from ckptkit.formats.tf_v2 import TFV2Reader
from ckptkit.fileio import write_state
from ckptkit.formats.tf_v2_write import TFV2Writer
from ckptkit.variable import dtype_name
from helpers.tf_factories import STRINGS, sample

V2_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
             "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
             "string")


def values(dtypes=V2_DTYPES):
    out = {f"t/{d}": sample(d, (2, 3), seed=i) for i, d in enumerate(dtypes)}
    out["scalar"] = np.array(7, np.int64)
    out["empty"] = np.zeros((0, 4), np.float32)
    return out


def write(path, tensors, **options):
    with open_writer(path, **options) as w:
        w.begin([(n, tensors[n].shape, dtype_name(tensors[n].dtype)) for n in sorted(tensors)])
        for name in sorted(tensors):
            w.add(name, tensors[name])
        return w.commit()


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.dtype, b.dtype)
    if a.dtype.kind in "OSU":
        assert a.tolist() == b.tolist()
    else:
        assert a.tobytes() == b.tobytes()


def no_temps(folder):
    return [n for n in os.listdir(folder) if "ckptkit-tmp" in n]


# --- encoders ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**32, 2**63 - 1, -1])
def test_varint_round_trip(n):
    assert varint(encode_varint(n), 0)[0] == n & (2**64 - 1)


def test_entry_and_header_decode():
    entry = decode(encode_entry(1, (2, 0, 5), 3, 1000, 40, 0xDEADBEEF), BUNDLE_ENTRY)
    assert entry["dtype"] == 1 and entry["shard_id"] == 3 and entry["offset"] == 1000
    assert [d.get("size", 0) for d in entry["shape"]["dim"]] == [2, 0, 5]
    assert entry["size"] == 40 and entry["crc32c"] == 0xDEADBEEF
    assert decode(encode_header(4), BUNDLE_HEADER)["num_shards"] == 4


def test_table_writer_many_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(TableWriter, "BLOCK_SIZE", 200)
    items = [(f"k{i:05d}\xff".encode("latin-1"), os.urandom(i % 50)) for i in range(1000)]
    with open(tmp_path / "t", "wb") as f:
        table = TableWriter(f)
        for key, value in items:
            table.add(key, value)
        table.finish()
    assert len(table.index) > 50
    read = Table(str(tmp_path / "t"))
    assert [(k, bytes(v)) for k, v in read.items()] == items
    assert [k for k, _ in read.items(b"k00500")] == [k for k, _ in items[500:]]
    read.close()


def test_table_writer_refuses_unsorted_keys(tmp_path):
    with open(tmp_path / "t", "wb") as f:
        table = TableWriter(f)
        table.add(b"b", b"")
        with pytest.raises(FormatError, match="out of order"):
            table.add(b"a", b"")


# --- V2 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("shards", [1, 3])
def test_v2_round_trip_every_dtype(tmp_path, shards):
    tensors = values()
    files = write(str(tmp_path / "m"), tensors, shards=shards)
    assert sorted(os.path.basename(f) for f in files) == sorted(
        [f"m.data-{i:05d}-of-{shards:05d}" for i in range(shards)] + ["m.index"])
    assert files[-1].endswith(".index")   # visible last
    with ckptkit.open_checkpoint(tmp_path / "m") as r:
        assert list(r.problems()) == []
        assert list(r.variables) == sorted(tensors)
        for name, value in tensors.items():
            same(r.read(name), value)
    assert no_temps(tmp_path) == []


def test_v2_strings_keep_nul_and_ff(tmp_path):
    write(str(tmp_path / "m"), {"s": np.array(STRINGS, dtype=object)})
    with TFV2Reader(str(tmp_path / "m")) as r:
        assert r.read("s").tolist() == STRINGS
        assert list(r.problems()) == []


def test_v2_copy_reuses_bytes_and_crc(tmp_path):
    tensors = values()
    write(str(tmp_path / "a"), tensors)
    with TFV2Reader(str(tmp_path / "a")) as src, TFV2Writer(str(tmp_path / "b"), shards=2) as w:
        for var in src:
            assert w.copy(src, var, "new/" + var.name)
        w.commit()
        with TFV2Reader(str(tmp_path / "b")) as out:
            assert list(out.problems()) == []
            for var in src:
                copied = out.variable("new/" + var.name)
                assert copied.where[0]["crc32c"] == var.where[0]["crc32c"]
                same(out.read(copied.name), src.read(var.name))


def test_v2_copy_joins_adjacent_bytes_into_runs(tmp_path, monkeypatch):
    """Tensors whose stored bytes follow each other are copied with one copy_file_range per
    run; an add, or bytes out of order, end a run; the output is the same either way."""
    tensors = values()
    write(str(tmp_path / "a"), tensors)
    calls = []
    real = os.copy_file_range
    monkeypatch.setattr(os, "copy_file_range", lambda *a: calls.append(a[2]) or real(*a))
    with TFV2Reader(str(tmp_path / "a")) as src, TFV2Writer(str(tmp_path / "b")) as w:
        stored = [v for v in src if v.nbytes]
        first, rest = stored[:5], stored[5:]
        for var in first:                   # one run
            assert w.copy(src, var, var.name)
        w.add("added", np.arange(3, dtype=np.int32))
        for var in reversed(rest):          # each tensor a run of its own
            assert w.copy(src, var, var.name)
        w.commit()
        assert calls == [sum(v.where[0]["size"] for v in first)] + \
            [v.where[0]["size"] for v in reversed(rest)]
        with TFV2Reader(str(tmp_path / "b")) as out:
            assert list(out.problems()) == []
            same(out.read("added"), np.arange(3, dtype=np.int32))
            for var in stored:
                same(out.read(var.name), src.read(var.name))


def test_opening_leaves_its_objects_to_the_oldest_gc_generation(tmp_path):
    """The reader makes its records with the cyclic GC off (base.no_cyclic_gc); after that
    they sit in the oldest generation, so the next young collection does not walk them all,
    and the GC is on again. Objects someone else froze stay frozen."""
    write(str(tmp_path / "a"), values())
    assert gc.isenabled()
    with TFV2Reader(str(tmp_path / "a")) as r:
        assert gc.isenabled()
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert all(id(v) in oldest for v in r)
        gc.freeze()
        try:
            frozen = gc.get_freeze_count()
            with no_cyclic_gc():
                assert not gc.isenabled()
            assert gc.isenabled() and gc.get_freeze_count() == frozen
        finally:
            gc.unfreeze()


def test_v2_copy_declines_what_it_cannot_copy(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(3))
    with ckptkit.open_checkpoint(tmp_path / "x.npz") as src, \
            TFV2Writer(str(tmp_path / "b")) as w:
        assert w.copy(src, src.variable("a"), "a") is False


def test_v2_nothing_visible_until_commit_and_abort_cleans(tmp_path):
    w = TFV2Writer(str(tmp_path / "m"), shards=2)
    w.add("a", np.ones(4, np.float32))
    assert os.listdir(tmp_path) and not any(n.startswith("m.") for n in os.listdir(tmp_path))
    with pytest.raises(FormatError, match="written twice"):
        with w:
            w.add("a", np.ones(4, np.float32))
    assert os.listdir(tmp_path) == []


def test_unfinished_files_never_resolve(tmp_path):
    """A run killed after the index was written but before the renames leaves a complete
    table under a temp name: a directory scan must not take it for a V1 checkpoint."""
    w = TFV2Writer(str(tmp_path / "m"))
    w.add("a", np.ones(4, np.float32))
    w.finish()
    for f in w._open:
        f.close()
    with pytest.raises(ckptkit.NotFound, match="no checkpoint in directory"):
        ckptkit.open_checkpoint(tmp_path)


def test_write_state_keeps_older_paths(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "m-1"\n'
                                         'all_model_checkpoint_paths: "m-1"\n')
    write_state(str(tmp_path), "m-2")
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "m-2"\nall_model_checkpoint_paths: "m-1"\n'
        'all_model_checkpoint_paths: "m-2"\n')
    assert no_temps(tmp_path) == []


# --- npz, safetensors, h5 ---------------------------------------------------------------------

@pytest.mark.parametrize("name,dtypes", [
    ("m.npz", [d for d in V2_DTYPES if d != "bfloat16"]),
    ("m.safetensors", [d for d in V2_DTYPES if d not in ("string", "complex128")]),
    ("m.h5", [d for d in V2_DTYPES if d != "string"]),
])
def test_file_writers_round_trip(tmp_path, name, dtypes):
    tensors = values(dtypes)
    if name == "m.npz":   # fixed-width bytes: values ending in NUL cannot survive
        tensors["t/string"] = np.array([b"a", b"\x00b", b"\xffc"], dtype=object)
    write(str(tmp_path / name), tensors)
    with ckptkit.open_checkpoint(tmp_path / name) as r:
        assert list(r.variables) == sorted(tensors)
        assert list(r.problems()) == []
        for key, value in tensors.items():
            got = r.read(key)
            if value.dtype == object:
                assert [bytes(v) for v in got.reshape(-1)] == value.reshape(-1).tolist()
            else:
                same(got, value)
    assert os.listdir(tmp_path) == [name]


def test_safetensors_bytes_equal_the_library(tmp_path):
    from safetensors.numpy import save_file

    tensors = {"b": np.arange(6, dtype=np.float32).reshape(2, 3),
               "a": np.array([1, -2], np.float32)}
    write(str(tmp_path / "ours.safetensors"), tensors)
    save_file(tensors, str(tmp_path / "lib.safetensors"))
    assert (tmp_path / "ours.safetensors").read_bytes() == \
        (tmp_path / "lib.safetensors").read_bytes()


@pytest.mark.parametrize("name,tensor,message", [
    ("m.npz", np.ones(2, ml_dtypes.bfloat16), "bfloat16, which .npz cannot hold"),
    ("m.npz", np.array([b"a\x00"], dtype=object), "ending in NUL"),
    ("m.safetensors", np.array([b"a"], dtype=object), "string, which safetensors cannot"),
    ("m.h5", np.array([b"a"], dtype=object), "string, which ckptkit does not write"),
])
def test_file_writers_refuse_and_leave_nothing(tmp_path, name, tensor, message):
    with pytest.raises(Unsupported, match=message):
        write(str(tmp_path / name), {"x": tensor})
    assert os.listdir(tmp_path) == []


def test_h5_has_keras_layer_attrs(tmp_path):
    import h5py

    write(str(tmp_path / "m.h5"), {"dense/kernel:0": np.ones((2, 3), np.float32),
                                   "dense/bias:0": np.zeros(3, np.float32)})
    with h5py.File(tmp_path / "m.h5") as f:
        assert list(f.attrs["layer_names"]) == [b"dense"]
        assert sorted(f["dense"].attrs["weight_names"]) == [b"bias:0", b"kernel:0"]


def test_file_writer_replaces_atomically(tmp_path):
    write(str(tmp_path / "m.npz"), {"a": np.ones(3)})
    with ckptkit.open_checkpoint(tmp_path / "m.npz") as old:
        write(str(tmp_path / "m.npz"), {"b": np.zeros(2)})
        same(old.read("a"), np.ones(3))   # the open reader still sees the old file
    with ckptkit.open_checkpoint(tmp_path / "m.npz") as new:
        assert list(new.variables) == ["b"]


# --- TensorFlow as the oracle -----------------------------------------------------------------

@pytest.mark.tf
def test_v2_bytes_equal_what_tf_writes(tmp_path):
    """Index and data byte for byte as tf.raw_ops.SaveV2 writes them, several index blocks."""
    from helpers.tf_factories import save_raw_v2

    tensors = {"a": np.array([1.5, -2], np.float32), "s": np.array(b"\x00\xff", dtype=object),
               "n/i": np.arange(4, dtype=np.int64).reshape(2, 2)}
    for i in range(900):   # names that share no prefix: ~300 KB of index, two data blocks
        tensors[f"{i:04d}/" + "long_scope/" * 30] = np.full(2, i, np.float32)
    save_raw_v2(str(tmp_path / "tf" / "m"), tensors)
    write(str(tmp_path / "ours" / "m"), tensors)
    assert len(Table(str(tmp_path / "ours" / "m.index"))._handles) > 1
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / "ours" / f"m{suffix}").read_bytes() == \
            (tmp_path / "tf" / f"m{suffix}").read_bytes(), suffix


@pytest.mark.tf
def test_tf_reads_and_restores_what_we_write(tf, tmp_path):
    tensors = {n: v for n, v in values().items() if n != "empty"}
    write(str(tmp_path / "m"), tensors, shards=3)
    reader = tf.train.load_checkpoint(str(tmp_path / "m"))
    assert sorted(reader.get_variable_to_shape_map()) == sorted(tensors)
    for name, value in tensors.items():
        got = reader.get_tensor(name)
        if value.dtype == object:
            assert np.asarray(got).tolist() == value.tolist()
        else:
            same(np.asarray(got, dtype=value.dtype), value)
    graph = tf.Graph()
    with graph.as_default():
        made = {n: tf.get_variable(n, initializer=tf.zeros(v.shape, tf.as_dtype(v.dtype)))
                for n, v in tensors.items() if v.dtype.kind == "f" and v.dtype.itemsize >= 4}
        with tf.Session() as sess:
            tf.train.Saver(made).restore(sess, str(tmp_path / "m"))
            for name, value in sess.run(made).items():
                same(value, tensors[name])


def test_crc_mask_matches_reader():
    from ckptkit.formats.sstable import unmask_crc

    assert unmask_crc(mask_crc(0x12345678)) == 0x12345678
