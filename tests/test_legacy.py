"""ckptkit.NewCheckpointReader against tf.compat.v1.train.NewCheckpointReader, same files.

Known, intended difference: for a partitioned variable TF's debug_string() lists the raw slice
keys (0x00 + OrderedCode bytes) and omits the variable's own name; ckptkit lists the variable
once, with its full shape. Everything else is compared byte for byte / value for value.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckptkit
from ckptkit.formats import slices
from helpers.tf_factories import SAVER_DTYPES, Var, assert_same_value, sample, save_graph

pytestmark = pytest.mark.tf

# dtypes tf's reader returns from V1 files ("Data type not supported" for the others)
V1_READABLE = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
               "string")


def _variables(dtypes):
    out = []
    for i, dtype in enumerate(dtypes):
        out += [Var(f"{dtype}/matrix", sample(dtype, (3, 4), i), dtype),
                Var(f"{dtype}/scalar", sample(dtype, (), i)[()] if dtype != "string"
                    else np.array(b"\x00\xff", object), dtype),
                Var(f"{dtype}/empty", sample(dtype, (0, 2), i), dtype)]
    return out


@pytest.fixture(scope="module")
def v2_ckpt(tmp_path_factory, tf):
    return save_graph(tmp_path_factory.mktemp("legacy_v2"), _variables(SAVER_DTYPES)).path


@pytest.fixture(scope="module")
def v1_ckpt(tmp_path_factory, tf):
    return save_graph(tmp_path_factory.mktemp("legacy_v1"), _variables(V1_READABLE),
                      version="V1").path


@pytest.fixture(params=["v2_ckpt", "v1_ckpt"])
def readers(request, tf):
    path = request.getfixturevalue(request.param)
    return ckptkit.NewCheckpointReader(path), tf.train.NewCheckpointReader(path)


def test_shape_map(readers):
    ours, theirs = readers
    assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()


def test_dtype_map(readers):
    ours, theirs = readers
    ours, theirs = ours.get_variable_to_dtype_map(), theirs.get_variable_to_dtype_map()
    assert {n: d.name for n, d in ours.items()} == {n: d.name for n, d in theirs.items()}
    assert ours == theirs   # our DType compares equal to tf.DType of the same name
    for name, dtype in ours.items():
        assert np.dtype(dtype.as_numpy_dtype) == np.dtype(theirs[name].as_numpy_dtype), name


def test_get_tensor_values_and_types(readers):
    ours, theirs = readers
    for name in theirs.get_variable_to_shape_map():
        mine, tfs = ours.get_tensor(name), theirs.get_tensor(name)
        assert type(mine) is type(tfs), name   # numpy scalar / bytes / ndarray, as TF
        if isinstance(tfs, np.ndarray):
            assert mine.flags.writeable and mine.flags.owndata, name
        assert_same_value(mine, tfs, name)


def test_has_tensor(readers):
    """(TF also answers True for "", the V2 header's key, which holds no tensor.)"""
    ours, theirs = readers
    for name in list(theirs.get_variable_to_shape_map()) + ["nope", "float32", "float32/"]:
        assert ours.has_tensor(name) == theirs.has_tensor(name), name


def test_missing_tensor_raises(readers):
    ours, _ = readers
    with pytest.raises(ckptkit.NotFound, match="float32/matrx.*closest: float32/matrix"):
        ours.get_tensor("float32/matrx")


def test_debug_string_v2_is_byte_identical(v2_ckpt, tf):
    theirs = tf.train.NewCheckpointReader(v2_ckpt).debug_string()
    assert ckptkit.NewCheckpointReader(v2_ckpt).debug_string() == theirs


def test_debug_string_v1_has_the_same_lines(v1_ckpt, tf):
    """TF prints V1 tensors in hash-map order; the lines are the same."""
    theirs = tf.train.NewCheckpointReader(v1_ckpt).debug_string()
    ours = ckptkit.NewCheckpointReader(v1_ckpt).debug_string()
    assert sorted(ours.splitlines()) == sorted(theirs.splitlines())


def test_load_checkpoint_and_list_variables(v2_ckpt, tf):
    from ckptkit import legacy

    assert legacy.list_variables(v2_ckpt) == tf.train.list_variables(v2_ckpt)
    assert legacy.load_checkpoint(v2_ckpt).get_variable_to_shape_map() == \
        tf.train.load_checkpoint(v2_ckpt).get_variable_to_shape_map()


@pytest.fixture(scope="module")
def partitioned_ckpt(tmp_path_factory, tf):
    return save_graph(tmp_path_factory.mktemp("legacy_part"), [
        Var("whole", sample("float32", (2, 2))),
        Var("part", sample("int64", (7, 3), 1), partitioner=tf.fixed_size_partitioner(3))]).path


def test_partitioned_shape_map_and_values(partitioned_ckpt, tf):
    ours, theirs = (ckptkit.NewCheckpointReader(partitioned_ckpt),
                    tf.train.NewCheckpointReader(partitioned_ckpt))
    assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map() == \
        {"whole": [2, 2], "part": [7, 3]}
    assert_same_value(ours.get_tensor("part"), theirs.get_tensor("part"))


def test_partitioned_debug_string_difference(partitioned_ckpt, tf):
    """TF: the three slice keys, raw, and no line for `part`; ckptkit: one line for `part`."""
    theirs = tf.train.NewCheckpointReader(partitioned_ckpt).debug_string()
    ours = ckptkit.NewCheckpointReader(partitioned_ckpt).debug_string()
    keys = [slices.slice_key("part", ((s, n), (0, 3))) for s, n in ((0, 3), (3, 2), (5, 2))]
    assert theirs == b"".join(k + b" (DT_INT64) [%d,3]\n" % n
                              for k, n in zip(keys, (3, 2, 2))) + b"whole (DT_FLOAT) [2,2]\n"
    assert ours == b"part (DT_INT64) [7,3]\nwhole (DT_FLOAT) [2,2]\n"


# --- legacy scripts run without TensorFlow --------------------------------------------------

LOOK_CHECKPOINT = textwrap.dedent('''
    import sys
    from ckptkit import NewCheckpointReader

    checkpoint_path = sys.argv[1]
    reader = NewCheckpointReader(checkpoint_path)
    var_to_shape_map = reader.get_variable_to_shape_map()
    for key in var_to_shape_map:
        print("tensor_name: ", key)
        reader.get_tensor(key)
    print("tensorflow loaded:", "tensorflow" in sys.modules)
''')

# the seed script's own lines, unchanged, under ckptkit's stand-in `tensorflow` module
LOOK_CHECKPOINT_UNCHANGED = textwrap.dedent('''
    import sys
    from ckptkit.legacy import install_tensorflow_stand_in
    install_tensorflow_stand_in()

    import os
    from tensorflow.python import pywrap_tensorflow

    checkpoint_path = sys.argv[1]
    reader = pywrap_tensorflow.NewCheckpointReader(checkpoint_path)
    var_to_shape_map = reader.get_variable_to_shape_map()
    for key in var_to_shape_map:
        print("tensor_name: ", key)
    real = [m for m, module in sys.modules.items()
            if m.split(".")[0] == "tensorflow" and type(module).__name__ != "_StandIn"]
    print("tensorflow loaded:", bool(real))
''')


@pytest.mark.parametrize("script", [LOOK_CHECKPOINT, LOOK_CHECKPOINT_UNCHANGED],
                         ids=["import-ckptkit", "unchanged-with-stand-in"])
def test_look_checkpoint_script_runs_without_tensorflow(v2_ckpt, tf, script):
    done = subprocess.run([sys.executable, "-c", script, v2_ckpt], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "tensorflow loaded: False"
    printed = [line.split("tensor_name:  ", 1)[1] for line in lines[:-1]]
    assert sorted(printed) == sorted(tf.train.NewCheckpointReader(v2_ckpt)
                                     .get_variable_to_shape_map())
