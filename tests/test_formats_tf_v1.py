"""V1 single-file checkpoints (Saver(write_version=V1)) read by ckptkit, compared with TF.

tf.train.load_checkpoint reads V1 files except sliced tensors ("Sliced checkpoints are not
supported") and float16/uint16/complex tensors ("Data type not supported"); TF's own
Saver.restore into a fresh graph reads them all, so it is the oracle for every value here, and
load_checkpoint is asked too wherever it can answer.
TF 2.21's V1 writer does not split large tensors: a 40 MB tensor is one slice.
Sharded saves (Saver(sharded=True), variables on two CPU devices) are one V1 file per device,
named by TF as `NAME-?????-of-NNNNN`: read through that pattern, any one file, the directory,
and compared with tf.compat.v1.train.NewCheckpointReader and tf.train.latest_checkpoint.
"""
import os
import shutil
import subprocess
import sys
from glob import escape, glob

import numpy as np
import pytest

import ckptkit
from ckptkit.cli import cli
from ckptkit.formats import slices
from ckptkit.formats.sstable import Table
from ckptkit.paths import Resolved, resolve
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


# --- sharded saves ----------------------------------------------------------------------------

def _piece_per_device(op):
    """Device function: piece k of sharded/part on /cpu:k, so the tensor spans two files."""
    if op.name.startswith("sharded/part/part_"):
        return f"/cpu:{op.name.split('/')[2].split('_')[1]}"
    return ""


@pytest.fixture(scope="module")
def sharded_vars(tf):
    return [Var("sharded/cpu0", sample("float32", (4, 3), 1), device="/cpu:0"),
            Var("sharded/cpu1", sample("int64", (5,), 2), device="/cpu:1"),
            Var("sharded/strings", sample("string", (3,), 3), device="/cpu:1"),
            Var("sharded/part", sample("float64", (6, 2), 4),
                partitioner=tf.fixed_size_partitioner(2), device=_piece_per_device)]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, sharded_vars):
    saved = save_graph(tmp_path_factory.mktemp("v1sharded"), sharded_vars, version="V1",
                       sharded=True, step=3)
    saved.files = sorted(glob(escape(saved.path[:-len("?????-of-00002")]) + "*-of-*"))
    saved.restored = restore_graph(saved.path, sharded_vars)
    return saved


def test_sharded_save_is_files_named_by_a_pattern(sharded):
    """One file per device; sharded/part has a piece in each."""
    assert sharded.path.endswith("model.ckpt-3-?????-of-00002")
    assert [os.path.basename(f) for f in sharded.files] == \
        ["model.ckpt-3-00000-of-00002", "model.ckpt-3-00001-of-00002"]
    for f, piece in zip(sharded.files, (((0, 3), (0, 2)), ((3, 3), (0, 2)))):
        assert slices.slice_key("sharded/part", piece) in [k for k, _ in Table(f).items()]


def _assert_reads_the_sharded_save(reader, saved, tf):
    """All shards, as TF's reader lists them; values as TF's reader and Saver.restore."""
    oracle = tf.compat.v1.train.NewCheckpointReader(saved.path)
    assert (reader.path, reader.format, reader.files) == (saved.path, "tf-v1", saved.files)
    assert_matches_tf(reader, oracle, values=False)
    assert reader.variables["sharded/part"].slices == (((0, 3), (0, 2)), ((3, 3), (0, 2)))
    for name in reader.variables:
        value = reader.read(name)
        assert_same_value(value, saved.restored[name], name)
        if name != "sharded/part":   # TF's reader: "Sliced checkpoints are not supported"
            assert_same_value(value, oracle.get_tensor(name), name)
    assert list(reader.problems()) == []


def test_sharded_save_reads_through_its_pattern(sharded, tf):
    with ckptkit.open_checkpoint(sharded.path) as reader:
        _assert_reads_the_sharded_save(reader, sharded, tf)


@pytest.mark.parametrize("k", range(2))
def test_any_shard_file_opens_the_whole_save(sharded, tf, k):
    with ckptkit.open_checkpoint(sharded.files[k]) as reader:
        _assert_reads_the_sharded_save(reader, sharded, tf)


def test_sharded_directory_resolves_to_what_latest_checkpoint_names(sharded, tf):
    d = os.path.dirname(sharded.path)
    assert tf.train.latest_checkpoint(d) == sharded.path
    assert resolve(d) == resolve(sharded.path) == Resolved("tf-v1", sharded.path)
    with ckptkit.open_checkpoint(d) as reader:
        _assert_reads_the_sharded_save(reader, sharded, tf)


def _save_v1_twice(tf, path):
    """One sharded V1 Saver saving w = 1 at `path`, then w = 2 at step 1."""
    graph = tf.Graph()
    with graph.as_default():
        w = tf.get_variable("w", initializer=tf.constant(np.ones(3, np.float32)))
        saver = tf.train.Saver(sharded=True, write_version=tf.train.SaverDef.V1)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            first = saver.save(sess, path, write_meta_graph=False)
            sess.run(w.assign([2, 2, 2]))
            return first, saver.save(sess, path, global_step=1, write_meta_graph=False)


def test_state_naming_sharded_patterns_is_followed_not_an_older_checkpoint(
        tmp_path, monkeypatch, tf):
    """train/checkpoint-1 (an older V2 save, w = 0) and two sharded V1 saves, the state file
    naming the patterns as TF's Saver wrote them (relative): the directory is what
    latest_checkpoint names, never the older checkpoint."""
    monkeypatch.chdir(tmp_path)
    save_graph("train", [Var("w", np.zeros(3, np.float32))], step=1, name="checkpoint")
    first, last = _save_v1_twice(tf, "train/checkpoint")
    assert (first, last) == ("train/checkpoint-?????-of-00001",
                             "train/checkpoint-1-?????-of-00001")
    assert 'model_checkpoint_path: "checkpoint-1-?????-of-00001"' in \
        (tmp_path / "train" / "checkpoint").read_text()
    assert tf.train.latest_checkpoint("train") == last
    assert resolve("train") == Resolved("tf-v1", last)
    for path, value in (("train", 2), (last, 2), (first, 1), ("train/checkpoint-1", 0)):
        with ckptkit.open_checkpoint(path) as reader:
            assert_same_value(reader.read("w"), np.full(3, value, np.float32), path)


@pytest.mark.parametrize("k", range(2))
def test_missing_shard_is_an_error_never_a_partial_read(sharded, tmp_path, runner, k):
    for f in sharded.files:
        shutil.copy(f, tmp_path)
    with open(tmp_path / "checkpoint", "w") as state:
        state.write(f'model_checkpoint_path: "{os.path.basename(sharded.path)}"\n')
    gone = str(tmp_path / os.path.basename(sharded.files[k]))
    os.remove(gone)
    pattern = str(tmp_path / os.path.basename(sharded.path))
    left = str(tmp_path / os.path.basename(sharded.files[1 - k]))
    message = (f"{pattern}: missing 1 of its 2 shard files ({gone}); a tensor may be "
               "stored in any shard, so none is read")
    for path in (pattern, left, tmp_path):
        with pytest.raises(ckptkit.NotFound) as caught:
            ckptkit.open_checkpoint(path)
        assert str(caught.value) == message
        for command in ("inspect", "verify"):
            result = runner.invoke(cli, [command, str(path)], prog_name="ckptkit")
            assert (result.exit_code, result.stdout) == (2, "")
            assert result.stderr == f"ckptkit: error: {message}\n"


def test_every_command_reads_the_sharded_save(sharded, tmp_path, runner):
    def run(*args):
        result = runner.invoke(cli, [str(a) for a in args], prog_name="ckptkit")
        assert "Traceback" not in result.output
        return result.exit_code, result.stdout

    d = os.path.dirname(sharded.path)
    code, out = run("inspect", d)
    assert code == 0 and out.startswith(f"{sharded.path}  (tf-v1)\n")
    assert out.endswith("4 tensors, 32 parameters, 184 B\n")
    assert run("verify", sharded.files[1]) == \
        (0, f"OK {sharded.path} (tf-v1): 4 tensors, 184 B verified\n")
    converted = tmp_path / "m.ckpt"
    assert run("convert", sharded.path, converted)[0] == 0
    with ckptkit.open_checkpoint(converted) as reader:
        for name, value in sharded.restored.items():
            assert_same_value(reader.read(name), value, name)
    assert run("diff", sharded.files[0], converted)[0] == 0
    into = tmp_path / "into"           # into a directory: a prefix named without the pattern
    assert run("convert", sharded.path, f"{into}/")[0] == 0
    base = os.path.basename(sharded.path).rsplit("-?????-of-", 1)[0]
    assert sorted(os.listdir(into)) == ["checkpoint", f"{base}.data-00000-of-00001",
                                        f"{base}.index"]
    assert run("plan", d, "--target", sharded.path)[0] == 0
