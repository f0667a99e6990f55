"""V1 single-file checkpoints (Saver(write_version=V1)) read by ckptkit, compared with TF.

tf.train.load_checkpoint reads V1 files except sliced tensors ("Sliced checkpoints are not
supported") and float16/uint16/complex tensors ("Data type not supported"); TF's own
Saver.restore into a fresh graph reads them all, so it is the oracle for every value here, and
load_checkpoint is asked too wherever it can answer.
TF 2.21's V1 writer does not split large tensors: a 40 MB tensor is one slice.
"""
import subprocess
import sys

import numpy as np
import pytest

import ckptkit
from ckptkit.formats import slices
from ckptkit.formats.sstable import Table
from helpers.tf_factories import (V1_DTYPES, V1_UNSAVABLE, Var, assert_matches_tf, assert_same_value,
                          restore_graph, sample, save_graph)

pytestmark = pytest.mark.tf

SHAPES = {"matrix": (4, 5), "scalar": (), "empty": (0,), "empty_3x0": (3, 0)}


# tf.train.load_checkpoint raises "Data type not supported" on these in V1 files
TF_READER_LACKS = ("float16", "uint16", "complex64", "complex128")


@pytest.fixture(scope="module")
def dtype_vars():
    variables = [Var(f"{dtype}/{kind}", sample(dtype, shape, seed=i), dtype)
                 for i, dtype in enumerate(V1_DTYPES) for kind, shape in SHAPES.items()]
    variables.append(Var("string/scalar_bytes", np.array(b"\x00\xffz", object)))
    return variables


@pytest.fixture(scope="module")
def dtypes_ckpt(tmp_path_factory, tf, dtype_vars):
    return save_graph(tmp_path_factory.mktemp("v1dtypes"), dtype_vars, version="V1")


@pytest.fixture(scope="module")
def dtypes_restored(dtypes_ckpt, dtype_vars):
    return restore_graph(dtypes_ckpt.path, dtype_vars)


def test_v1_is_one_file(dtypes_ckpt):
    assert dtypes_ckpt.files == ["model.ckpt"]
    with ckptkit.open_checkpoint(dtypes_ckpt.path) as reader:
        assert reader.format == "tf-v1"
        assert reader.files == [dtypes_ckpt.path]


def test_dtypes_checkpoint_lists_what_tf_lists(dtypes_ckpt, tf, dtypes_restored):
    with ckptkit.open_checkpoint(dtypes_ckpt.path) as reader:
        assert_matches_tf(reader, tf.train.load_checkpoint(dtypes_ckpt.path), values=False)
        assert sorted(reader.variables) == sorted(dtypes_restored)
        assert list(reader.problems()) == []


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("dtype", V1_DTYPES)
def test_every_v1_dtype_reads_as_tf_reads_it(dtypes_ckpt, tf, dtypes_restored, dtype, kind):
    name = f"{dtype}/{kind}"
    with ckptkit.open_checkpoint(dtypes_ckpt.path) as reader:
        var = reader.variables[name]
        value = reader.read(name)
    assert (var.shape, var.dtype, var.slices) == (SHAPES[kind], dtype, ())
    assert_same_value(value, dtypes_restored[name], name)
    assert_same_value(value, dtypes_ckpt.values[name], name)
    oracle = tf.train.load_checkpoint(dtypes_ckpt.path)
    if dtype in TF_READER_LACKS:
        with pytest.raises(tf.errors.UnimplementedError, match="Data type not supported"):
            oracle.get_tensor(name)
    else:
        assert_same_value(value, oracle.get_tensor(name), name)


def test_string_scalar_with_nul_and_ff(dtypes_ckpt, tf):
    with ckptkit.open_checkpoint(dtypes_ckpt.path) as reader:
        value = reader.read("string/scalar_bytes")
    assert value.shape == () and value[()] == b"\x00\xffz"
    assert tf.train.load_checkpoint(dtypes_ckpt.path).get_tensor("string/scalar_bytes") == \
        b"\x00\xffz"


@pytest.mark.parametrize("dtype", V1_UNSAVABLE)
def test_v1_saver_refuses_these_dtypes(tmp_path, tf, dtype):
    """Documents TF: the V1 writer has no TensorSlice encoding for these."""
    with pytest.raises((tf.errors.UnimplementedError, tf.errors.InvalidArgumentError),
                       match="not yet supported|not implemented"):
        save_graph(tmp_path, [Var("x", sample(dtype, (2,)), dtype)], version="V1")


# --- partitioned variables and a large tensor -----------------------------------------------

@pytest.fixture(scope="module")
def layout_vars(tf):
    return [
        Var("part/fixed3", sample("float32", (10, 4), 1),
            partitioner=tf.fixed_size_partitioner(3)),
        Var("part/axis1", sample("int64", (3, 9), 2),
            partitioner=tf.fixed_size_partitioner(2, axis=1)),
        Var("part/big_offsets", sample("float64", (200000,), 3),
            partitioner=tf.fixed_size_partitioner(2)),
        Var("big", sample("float32", (10 << 20,), 4)),          # 40 MB, one tensor
        Var("plain/strings", sample("string", (3, 2), 5)),
    ]


LAYOUT = {
    "part/fixed3": (((0, 4), (0, 4)), ((4, 3), (0, 4)), ((7, 3), (0, 4))),
    "part/axis1": (((0, 3), (0, 5)), ((0, 3), (5, 4))),
    "part/big_offsets": (((0, 100000),), ((100000, 100000),)),
    "big": (),
    "plain/strings": (),
}


@pytest.fixture(scope="module")
def layout_ckpt(tmp_path_factory, layout_vars):
    return save_graph(tmp_path_factory.mktemp("v1layout"), layout_vars, version="V1")


@pytest.fixture(scope="module")
def restored(layout_ckpt, layout_vars):
    return restore_graph(layout_ckpt.path, layout_vars)


def test_layout_lists_what_tf_lists(layout_ckpt, tf):
    """Names, full shapes, dtypes as TF lists them (its reader lists sliced tensors whole)."""
    with ckptkit.open_checkpoint(layout_ckpt.path) as reader:
        assert_matches_tf(reader, tf.train.load_checkpoint(layout_ckpt.path), values=False)
        assert {n: v.slices for n, v in reader.variables.items()} == LAYOUT


@pytest.mark.parametrize("name", LAYOUT)
def test_layout_values_equal_tf_restore(layout_ckpt, layout_vars, restored, name):
    with ckptkit.open_checkpoint(layout_ckpt.path) as reader:
        value = reader.read(name)
    assert_same_value(value, restored[name], name)
    assert_same_value(value, layout_ckpt.values[name], name)


def test_unsliced_tensors_equal_load_checkpoint(layout_ckpt, tf):
    oracle = tf.train.load_checkpoint(layout_ckpt.path)
    with ckptkit.open_checkpoint(layout_ckpt.path) as reader:
        for name in ("big", "plain/strings"):
            assert_same_value(reader.read(name), oracle.get_tensor(name), name)


def test_large_v1_tensor_reads_without_blowing_up_memory(layout_ckpt):
    """A 40 MB float32 V1 tensor: its values are a view of the mapped file, never a list of
    10M Python floats (that peaked at +720 MiB) nor copies of the block (+240 MiB); what
    grows is the mapped pages plus importing numpy."""
    # VmHWM (peak resident set of this process image), not ru_maxrss: that one carries the
    # parent's peak (pytest's, with TF loaded) across fork + exec
    script = ("import re, sys, ckptkit\n"
              "def peak():\n"
              "    status = open('/proc/self/status').read()\n"
              "    return int(re.search(r'VmHWM:\\s+(\\d+)', status)[1])\n"
              "before = peak()\n"
              "value = ckptkit.open_checkpoint(sys.argv[1]).read('big')\n"
              "print(value.nbytes, (peak() - before) * 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, layout_ckpt.path], capture_output=True,
                          text=True, timeout=120, check=True)
    nbytes, grown = map(int, done.stdout.split())
    assert nbytes == 40 << 20
    assert grown < 2 * nbytes, f"peak memory grew by {grown >> 20} MiB"


def test_v1_keys_are_slice_keys_tf_wrote(layout_ckpt, layout_vars):
    """Every V1 data key is EncodeTensorNameSlice(name, slice): a whole tensor is saved as
    one slice whose extents are all 'full' (length -1), a partition with explicit extents."""
    keys = [k for k, _ in Table(layout_ckpt.path).items()]
    assert keys[0] == b""
    expected = set()
    for var in layout_vars:
        pieces = LAYOUT[var.name] or [((0, -1),) * var.value.ndim]
        expected |= {slices.slice_key(var.name, ext) for ext in pieces}
    assert set(keys[1:]) == expected
    assert slices.slice_key("big", ((0, -1),)) == b"\x00big\x00\x01\x01\x01\x80\x7f"
