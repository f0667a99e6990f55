"""V2 bundles TensorFlow writes, read by ckptkit and compared with tf.train.load_checkpoint.

Checkpoints are written once per module: every dtype the Saver writes (matrix, scalar, empty
[0] and [3,0]); a layout checkpoint with partitioned variables, saved in one data file and
sharded (variables on three CPU devices of a session with device_count={"CPU": 3} and
Saver(sharded=True): four data files, one of them missing in turn); raw SaveV2 tensors of
the dtypes only raw ops write; the tf_slim resnet_v1_50 / inception_v3 checkpoints. Where
load_checkpoint cannot read a tensor (partitioned strings), TF's Saver.restore is the oracle.
The last tests check what the pure tests rely on: the golden bytes and the pure writers.
"""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ckptkit
from ckptkit.formats import slices
from ckptkit.formats.sstable import Table
from helpers.bundle_writer import write_bundle, write_table
from helpers.tf_factories import (SAVER_DTYPES, Var, assert_matches_tf, assert_same_value,
                          golden_variables, restore_graph, sample, save_graph, save_raw_v2,
                          save_slim_net, shard_files, write_golden)

pytestmark = pytest.mark.tf

SHAPES = {"matrix": (4, 5), "scalar": (), "empty": (0,), "empty_3x0": (3, 0)}


def load(tf, path):
    return tf.train.load_checkpoint(path)


# --- every dtype ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dtypes_ckpt(tmp_path_factory, tf):
    variables = [Var(f"{dtype}/{kind}", sample(dtype, shape, seed=i), dtype)
                 for i, dtype in enumerate(SAVER_DTYPES) for kind, shape in SHAPES.items()]
    variables += [Var("string/long", np.array([b"y" * 70000, b"\x00" * 129, b""], object)),
                  Var("string/scalar_bytes", np.array(b"\x00\xffz", object)),
                  Var("float32/scalar_nan", np.float32("nan")),
                  Var("uint64/scalar_max", np.uint64(2**64 - 1))]
    return save_graph(tmp_path_factory.mktemp("dtypes"), variables)


def test_dtypes_checkpoint_matches_tf(dtypes_ckpt, tf):
    with ckptkit.open_checkpoint(dtypes_ckpt.path) as reader:
        assert reader.format == "tf-v2"
        assert reader.num_shards == 1
        assert reader.files == [dtypes_ckpt.path + ".index",
                                dtypes_ckpt.path + ".data-00000-of-00001"]
        assert_matches_tf(reader, load(tf, dtypes_ckpt.path))


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("dtype", SAVER_DTYPES)
def test_every_dtype_reads_as_tf_reads_it(dtypes_ckpt, tf, dtype, kind):
    name = f"{dtype}/{kind}"
    with ckptkit.open_checkpoint(dtypes_ckpt.path) as reader:
        var = reader.variables[name]
        value = reader.read(name)
    assert var.shape == SHAPES[kind]
    assert var.dtype == dtype
    assert_same_value(value, load(tf, dtypes_ckpt.path).get_tensor(name), name)
    assert_same_value(value, dtypes_ckpt.values[name], name)   # and what the session held


def test_tf_checksums_verify(dtypes_ckpt):
    """problems() recomputes every crc32c (strings included) the way TF wrote it."""
    with ckptkit.open_checkpoint(dtypes_ckpt.path) as reader:
        assert list(reader.problems()) == []


# --- partitioned variables, one shard and several -------------------------------------------

# name -> (full value, partitioner factory, expected slices as ((start, length), ...) per piece)
PARTITIONED = {
    "part/fixed3": (sample("float32", (10, 4), 1), lambda tf: tf.fixed_size_partitioner(3),
                    (((0, 4), (0, 4)), ((4, 3), (0, 4)), ((7, 3), (0, 4)))),
    "part/minmax_axis1": (
        sample("float32", (6, 4096), 2),
        lambda tf: tf.min_max_variable_partitioner(max_partitions=4, axis=1,
                                                   min_slice_size=4 << 10),
        tuple(((0, 6), (s, 1024)) for s in (0, 1024, 2048, 3072))),
    "part/axis1_3d": (sample("int32", (2, 7, 3), 3),
                      lambda tf: tf.fixed_size_partitioner(3, axis=1),
                      tuple(((0, 2), ext, (0, 3)) for ext in ((0, 3), (3, 2), (5, 2)))),
    "part/big_offsets": (sample("float32", (200000,), 4),
                         lambda tf: tf.fixed_size_partitioner(2),
                         (((0, 100000),), ((100000, 100000),))),
    "part/int64": (sample("int64", (9,), 5), lambda tf: tf.fixed_size_partitioner(2),
                   (((0, 5),), ((5, 4),))),
    "part/strings": (sample("string", (7,), 6), lambda tf: tf.fixed_size_partitioner(2),
                     (((0, 4),), ((4, 3),))),
    "part/bfloat16": (sample("bfloat16", (5, 2), 7), lambda tf: tf.fixed_size_partitioner(2),
                      (((0, 3), (0, 2)), ((3, 2), (0, 2)))),
    # its pieces on three devices, so in three data files when sharded
    "part/spread": (sample("float32", (6, 5), 8), lambda tf: tf.fixed_size_partitioner(3),
                    (((0, 2), (0, 5)), ((2, 2), (0, 5)), ((4, 2), (0, 5)))),
}


# load_checkpoint raises "Dtype string not supported" for a partitioned string tensor
TF_READER_LACKS = ("part/strings",)


def _round_robin(op):
    """Device function: piece k of part/spread on /cpu:k."""
    if op.name.startswith("part/spread/part_"):
        return f"/cpu:{int(op.name.split('/')[2].split('_')[1])}"
    return ""


DEVICES = {"dev/cpu0": "/cpu:0", "dev/cpu1": "/cpu:1", "dev/cpu2": "/cpu:2"}


def _layout_vars(tf):
    variables = [Var(name, value, partitioner=make(tf),
                     device=_round_robin if name == "part/spread" else "")
                 for name, (value, make, _) in PARTITIONED.items()]
    variables += [Var(name, sample("float64", (3, i + 1), 10 + i), device=device)
                  for i, (name, device) in enumerate(DEVICES.items())]
    variables.append(Var("dev/strings", sample("string", (5,), 20), device="/cpu:1"))
    return variables


def _layout(tmp_path_factory, tf, sharded):
    saved = save_graph(tmp_path_factory.mktemp("layout"), _layout_vars(tf), sharded=sharded,
                       step=42)
    saved.restored = restore_graph(saved.path, _layout_vars(tf))
    return saved


@pytest.fixture(scope="module")
def one_shard_ckpt(tmp_path_factory, tf):
    return _layout(tmp_path_factory, tf, sharded=False)


@pytest.fixture(scope="module")
def sharded_ckpt(tmp_path_factory, tf):
    return _layout(tmp_path_factory, tf, sharded=True)


@pytest.fixture(params=["one_shard_ckpt", "sharded_ckpt"])
def layout_ckpt(request):
    return request.getfixturevalue(request.param)


def test_layout_matches_tf(layout_ckpt, tf):
    """Listing as load_checkpoint's; values as its get_tensor and as TF's Saver.restore."""
    oracle = load(tf, layout_ckpt.path)
    with ckptkit.open_checkpoint(layout_ckpt.path) as reader:
        assert_matches_tf(reader, oracle, values=False)
        for name in reader.variables:
            value = reader.read(name)
            assert_same_value(value, layout_ckpt.restored[name], name)
            if name in TF_READER_LACKS:
                with pytest.raises(ValueError, match="Dtype string not supported"):
                    oracle.get_tensor(name)
            else:
                assert_same_value(value, oracle.get_tensor(name), name)
        assert list(reader.problems()) == []


def test_sharded_save_writes_several_data_files(layout_ckpt):
    data = shard_files(layout_ckpt.path)
    with ckptkit.open_checkpoint(layout_ckpt.path) as reader:
        assert reader.num_shards == len(data)
        assert reader.files == [layout_ckpt.path + ".index"] + data
    if layout_ckpt.sharded:
        assert len(data) == 4   # /cpu:0, /cpu:1, /cpu:2 and the variables with no device
        assert data[-1].endswith(".data-00003-of-00004")
    else:
        assert data == [layout_ckpt.path + ".data-00000-of-00001"]


@pytest.mark.parametrize("name", PARTITIONED)
def test_partitioned_variable_is_listed_whole_and_assembled(layout_ckpt, tf, name):
    full, _, layout = PARTITIONED[name]
    with ckptkit.open_checkpoint(layout_ckpt.path) as reader:
        var = reader.variables[name]
        value = reader.read(name)
        assert not any(n.startswith(name + "/part_") for n in reader.variables)
    assert var.shape == full.shape
    assert var.slices == layout
    assert_same_value(value, full, name)
    assert_same_value(value, layout_ckpt.restored[name], name)
    if name not in TF_READER_LACKS:
        assert_same_value(value, load(tf, layout_ckpt.path).get_tensor(name), name)


def _tf_slice_keys(tf, path):
    """The raw slice keys TF's debug string lists for a V2 bundle (they start with 0x00)."""
    text = load(tf, path).debug_string()
    keys = re.findall(rb"(.*?) \(DT_[A-Z0-9_]+\) \[[\d,]*\]\n", text, re.S)
    return {k for k in keys if k.startswith(b"\x00")}


def test_slice_keys_are_encoded_as_tf_encodes_them(layout_ckpt, tf):
    with ckptkit.open_checkpoint(layout_ckpt.path) as reader:
        ours = {slices.slice_key(v.name, ext) for v in reader if v.slices for ext in v.slices}
    assert ours == _tf_slice_keys(tf, layout_ckpt.path)
    assert len(ours) == sum(len(layout) for _, _, layout in PARTITIONED.values())


def _read_without_shard(saved, tf, directory, k):
    """Copy the bundle without data file k and read everything: the tensors stored there
    raise NotFound naming it, where TF fails too; the rest read as before. Returns the names
    that failed. (TF aborts the whole process on a partitioned tensor with a piece in a
    missing file, so those are only checked against the full value.)"""
    directory.mkdir()
    for f in [saved.path + ".index"] + shard_files(saved.path):
        shutil.copy(f, directory)
    prefix = str(directory / os.path.basename(saved.path))
    gone = shard_files(prefix)[k]
    os.remove(gone)
    oracle = load(tf, prefix)
    failed = set()
    with ckptkit.open_checkpoint(prefix) as reader:
        for var in reader:
            try:
                value = reader.read(var.name)
            except ckptkit.NotFound as e:
                assert f"data file {gone} is missing" in str(e)
                failed.add(var.name)
                if not var.slices:
                    with pytest.raises(tf.errors.OpError, match=re.escape(gone)):
                        oracle.get_tensor(var.name)
                continue
            assert_same_value(value, saved.restored[var.name], var.name)
            if not var.slices and var.name not in TF_READER_LACKS:
                assert_same_value(value, oracle.get_tensor(var.name), var.name)
        assert list(reader.problems()) == [f"missing data file {gone}"]
    return failed


@pytest.mark.parametrize("k", range(4))
def test_missing_data_file_fails_exactly_where_tf_fails(sharded_ckpt, tf, tmp_path, k):
    assert _read_without_shard(sharded_ckpt, tf, tmp_path / "copy", k)


def test_each_device_wrote_its_own_data_file(sharded_ckpt, tf, tmp_path):
    """/cpu:k variables sit in one file each, the three pieces of part/spread in three
    different files, the device-less variables together in the fourth."""
    failed = [_read_without_shard(sharded_ckpt, tf, tmp_path / str(k), k) for k in range(4)]
    assert sum("part/spread" in f for f in failed) == 3
    for name in DEVICES:
        assert sum(name in f for f in failed) == 1, name
    together = {n for n in PARTITIONED if n != "part/spread"}
    assert sum(together <= f for f in failed) == 1


# the golden data file: a at 0..8, part's two pieces at 8..20 and 20..28, s at 28..35 (its
# length varint, the lengths' masked crc32c, then b"\x00\xff")
@pytest.mark.parametrize("offset, name", [(5, "a"), (9, "part"), (27, "part"), (34, "s")])
def test_a_flipped_data_byte_fails_reading_where_tf_fails(tmp_path, tf, offset, name):
    """Reading checks the stored crc32c as TF's reader does: the tensor over the flipped byte
    is an error in both, naming the file, and the others read. (A fresh TF reader per tensor:
    after a failed partitioned read, TF's next read on that reader aborts the process.)"""
    prefix = write_golden(tmp_path, "V2")
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))
    with ckptkit.open_checkpoint(prefix) as reader:
        for other in reader.variables:
            if other == name:
                with pytest.raises(ckptkit.Corrupt, match=re.escape(
                        f"{name}: crc32c mismatch: its bytes in {data} are corrupt")):
                    reader.read(name)
                with pytest.raises(tf.errors.OpError, match="Checksum does not match"):
                    load(tf, prefix).get_tensor(name)
            else:
                assert_same_value(reader.read(other), load(tf, prefix).get_tensor(other), other)


@pytest.fixture(scope="module")
def partial_ckpt(tmp_path_factory, tf):
    """Tensors saved as one slice of a larger whole, the rest of which was never saved."""
    prefix = str(tmp_path_factory.mktemp("partial") / "p")
    return save_raw_v2(prefix, {"huge": np.ones(4, np.float32), "mid": np.ones(4, np.float32)},
                       {"huge": "3000000000 2999999996,4", "mid": "70000 65536,4"})


def test_incomplete_slices_fail_as_in_tf(partial_ckpt, tf):
    with pytest.raises(ValueError, match="Does not have sufficient slices"):
        load(tf, partial_ckpt).get_tensor("mid")
    with ckptkit.open_checkpoint(partial_ckpt) as reader:
        assert reader.variables["mid"].shape == (70000,)
        with pytest.raises(ckptkit.FormatError, match="slices cover 4 of 70000 elements"):
            reader.read("mid")


def test_incomplete_huge_tensor_fails_without_allocating_it(partial_ckpt):
    """16 bytes stored of a 3e9-element tensor: a FormatError, not an 11 GiB allocation
    (checked under a 2 GiB address-space limit)."""
    script = ("import resource, sys, ckptkit\n"
              "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
              "try:\n"
              "    ckptkit.open_checkpoint(sys.argv[1]).read('huge')\n"
              "except BaseException as e:\n"
              "    print(type(e).__name__, e)\n")
    done = subprocess.run([sys.executable, "-c", script, partial_ckpt], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert done.stdout.startswith("FormatError tensor 'huge': its slices cover 4 of"), \
        done.stdout + done.stderr


def test_any_member_file_opens_the_bundle(layout_ckpt):
    for member in [layout_ckpt.path + ".index"] + shard_files(layout_ckpt.path):
        with ckptkit.open_checkpoint(member) as reader:
            assert reader.path == layout_ckpt.path


# --- dtypes only raw ops write, odd names ---------------------------------------------------

RAW_DTYPES = ["float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
              "float8_e5m2fnuz"]
QUANTIZED = {"qint8": "int8", "quint8": "uint8", "qint16": "int16", "quint16": "uint16",
             "qint32": "int32"}
SUB_BYTE = ["int4", "uint4", "int2", "uint2"]


@pytest.fixture(scope="module")
def raw_ckpt(tmp_path_factory, tf):
    """float8 tensors through tf.raw_ops.SaveV2, and quantized ones bitcast from integers."""
    prefix = str(tmp_path_factory.mktemp("raw") / "raw")
    save_raw_v2(prefix, {f"raw/{d}": sample(d, (2, 3), 30 + i) for i, d in enumerate(RAW_DTYPES)})
    quant = {q: sample(base, (2, 2), 40 + i) for i, (q, base) in enumerate(QUANTIZED.items())}
    graph = tf.Graph()
    with graph.as_default():
        op = tf.raw_ops.SaveV2(
            prefix=prefix + "_q", tensor_names=[f"q/{q}" for q in quant],
            shape_and_slices=[""] * len(quant),
            tensors=[tf.bitcast(tf.constant(v), getattr(tf, q)) for q, v in quant.items()])
        with tf.Session() as sess:
            sess.run(op)
    return prefix, quant


@pytest.mark.parametrize("dtype", RAW_DTYPES)
def test_float8_reads_as_tf_reads_it(raw_ckpt, tf, dtype):
    prefix, _ = raw_ckpt
    name = f"raw/{dtype}"
    with ckptkit.open_checkpoint(prefix) as reader:
        assert reader.variables[name].dtype == dtype
        assert_same_value(reader.read(name), load(tf, prefix).get_tensor(name), name)


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_quantized_dtypes_read_as_their_integer_twins(raw_ckpt, tf, qtype):
    prefix, quant = raw_ckpt
    name = f"q/{qtype}"
    with ckptkit.open_checkpoint(prefix + "_q") as reader:
        var = reader.variables[name]
        value = reader.read(name)
    assert var.dtype == load(tf, prefix + "_q").get_variable_to_dtype_map()[name].name == qtype
    assert value.dtype == np.dtype(QUANTIZED[qtype])
    assert value.tobytes() == np.asarray(load(tf, prefix + "_q").get_tensor(name)).tobytes()
    np.testing.assert_array_equal(value, quant[qtype])


@pytest.mark.parametrize("dtype", SUB_BYTE)
def test_sub_byte_integers_read_as_tf_reads_them(tmp_path, tf, dtype):
    import ml_dtypes

    value = np.array([1, 0, 1, 0, 1, 1], dtype=getattr(ml_dtypes, dtype)).reshape(2, 3)
    prefix = save_raw_v2(str(tmp_path / "m"), {"x": value, "y": np.float32(1.5)})
    with ckptkit.open_checkpoint(prefix) as reader:
        assert reader.variables["x"].dtype == dtype
        assert_same_value(reader.read("x"), load(tf, prefix).get_tensor("x"))


ODD_NAMES = ["\u00fcn\u00efc\u00f8d\u00e9/\u53d8\u91cf", "with space", "dots.and-dashes",
             "a" * 300, "z", "\u00ff\u00fe"]


def test_odd_tensor_names_match_tf(tmp_path, tf):
    prefix = save_raw_v2(str(tmp_path / "names"),
                         {n: np.arange(i + 1, dtype=np.int16) for i, n in enumerate(ODD_NAMES)})
    with ckptkit.open_checkpoint(prefix) as reader:
        assert_matches_tf(reader, load(tf, prefix))


# --- tf_slim nets -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[("resnet_v1_50", 267), ("inception_v3", 388)],
                ids=["resnet_v1_50", "inception_v3"])
def slim_ckpt(request, tmp_path_factory, tf):
    net, expected = request.param
    path, count = save_slim_net(tmp_path_factory.mktemp(net), net)
    return path, count, expected


def test_slim_net_matches_tf(slim_ckpt, tf):
    path, count, expected = slim_ckpt
    assert count == expected
    with ckptkit.open_checkpoint(path) as reader:
        assert len(reader) == expected
        assert_matches_tf(reader, load(tf, path))


# --- what the pure tests rely on: golden bytes and the pure writers ---------------------------

@pytest.mark.parametrize("version", ["V2", "V1"])
def test_golden_bytes_are_what_tf_writes(tmp_path, tf, version):
    saved = save_graph(tmp_path / "tf", golden_variables(tf), version=version)
    golden = write_golden(tmp_path / "golden", version)
    suffixes = [""] if version == "V1" else [".index", ".data-00000-of-00001"]
    for suffix in suffixes:
        with open(saved.path + suffix, "rb") as a, open(golden + suffix, "rb") as b:
            assert a.read() == b.read(), suffix
    with ckptkit.open_checkpoint(golden) as reader:   # (TF's reader cannot read V1 slices)
        assert_matches_tf(reader, load(tf, golden), values=version == "V2")


def test_tf_reads_the_pure_bundle_writer(tmp_path, tf):
    tensors = {"a/w": sample("float32", (3, 4)), "a/step": np.int64(7),
               "b": sample("uint16", (0,)), "c": sample("float64", (2, 0, 2))}
    prefix = write_bundle(str(tmp_path / "pure.ckpt"), tensors).prefix
    oracle = load(tf, prefix)
    for name, value in tensors.items():
        assert_same_value(oracle.get_tensor(name), np.asarray(value), name)
    with ckptkit.open_checkpoint(prefix) as reader:
        assert_matches_tf(reader, oracle)


def test_tf_reads_a_snappy_index_with_small_blocks(tmp_path, tf):
    tensors = {f"v{i:03d}/kernel": sample("float32", (2,), i) for i in range(60)}
    prefix = write_bundle(str(tmp_path / "s"), tensors).prefix
    table = Table(prefix + ".index")
    entries = list(table.items())
    table.close()
    write_table(prefix + ".index", entries, block_size=256, restart_interval=3, compression=1)
    oracle = load(tf, prefix)
    with ckptkit.open_checkpoint(prefix) as reader:
        assert_matches_tf(reader, oracle)
