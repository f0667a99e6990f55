"""ckptkit's TensorFlow stand-in (legacy.py) against TensorFlow itself, on checkpoints TF wrote.

- NewCheckpointReader against tf.compat.v1.train.NewCheckpointReader, same files: maps in TF's
  dict order, values and their types, debug_string, error classes and messages.
- Legacy inspection scripts, each run twice: `python script.py` with TensorFlow, and
  `ckptkit legacy script.py` with TensorFlow unimportable (a `tensorflow` package that raises
  ImportError first on PYTHONPATH); their stdout must be equal (TF logs to stderr).
- Without TensorFlow: the stand-in's refusals (one line, exit 2) and a script's own errors (its
  traceback as `python script.py` shows it, exit 1).

Known, intended differences: for a partitioned V2 variable TF's debug_string() lists the raw
slice keys (0x00 + OrderedCode bytes) and omits the variable's own name; ckptkit lists the
variable once, with its full shape. Where TF's reader fails (a V1 sliced tensor, a directory
given to NewCheckpointReader), ckptkit's reads.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ckptkit
from ckptkit import legacy
from ckptkit.formats import slices
from helpers.tf_factories import (SAVER_DTYPES, Var, assert_same_value, sample, save_graph,
                                  save_raw_v2, write_golden)

# dtypes tf's reader returns from V1 files ("Data type not supported" for the others)
V1_READABLE = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
               "string")
CLI = "from ckptkit.cli import main; main()"


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


@pytest.mark.tf
def test_shape_map_in_tf_order(readers):
    """Scripts loop over this dict: its order is TF's (a C++ unordered_map's), not by name."""
    ours, theirs = readers
    assert list(ours.get_variable_to_shape_map().items()) == \
        list(theirs.get_variable_to_shape_map().items())


@pytest.mark.tf
def test_dtype_map(readers):
    ours, theirs = readers
    ours, theirs = ours.get_variable_to_dtype_map(), theirs.get_variable_to_dtype_map()
    assert [(n, d.name) for n, d in ours.items()] == [(n, d.name) for n, d in theirs.items()]
    assert ours == theirs   # our DType compares equal to tf.DType of the same name
    for name, dtype in ours.items():
        assert np.dtype(dtype.as_numpy_dtype) == np.dtype(theirs[name].as_numpy_dtype), name
        assert (str(dtype), repr(dtype)) == (str(theirs[name]), repr(theirs[name]))


@pytest.mark.tf
def test_get_tensor_values_and_types(readers):
    ours, theirs = readers
    for name in theirs.get_variable_to_shape_map():
        mine, tfs = ours.get_tensor(name), theirs.get_tensor(name)
        assert type(mine) is type(tfs), name   # numpy scalar / bytes / ndarray, as TF
        if isinstance(tfs, np.ndarray):
            assert mine.flags.writeable and mine.flags.owndata, name
        assert_same_value(mine, tfs, name)


@pytest.mark.tf
def test_has_tensor(readers):
    """(TF also answers True for "", the V2 header's key, which holds no tensor.)"""
    ours, theirs = readers
    for name in list(theirs.get_variable_to_shape_map()) + ["nope", "float32", "float32/"]:
        assert ours.has_tensor(name) == theirs.has_tensor(name), name


@pytest.mark.tf
def test_missing_tensor_is_tfs_error(readers, tf):
    """TF's class and message (V2 `Key X not found in checkpoint`, V1 `X not found in
    checkpoint file`); ckptkit's hint rides along as a note, which str() leaves out."""
    ours, theirs = readers
    with pytest.raises(tf.errors.NotFoundError) as tfs:
        theirs.get_tensor("float32/matrx")
    with pytest.raises(legacy.NotFoundError) as mine:
        ours.get_tensor("float32/matrx")
    assert (type(mine.value).__name__, str(mine.value)) == \
        (type(tfs.value).__name__, str(tfs.value))
    assert isinstance(mine.value, ckptkit.NotFound)
    assert "closest: float32/matrix" in mine.value.__notes__[0]


@pytest.mark.tf
def test_missing_file_is_tfs_error(tmp_path, tf):
    path = str(tmp_path / "model.ckpt-7")
    with pytest.raises(tf.errors.NotFoundError) as tfs:
        tf.train.NewCheckpointReader(path)
    with pytest.raises(legacy.NotFoundError) as mine:
        ckptkit.NewCheckpointReader(path)
    assert str(mine.value) == str(tfs.value)


@pytest.mark.tf
def test_debug_string_v2_is_byte_identical(v2_ckpt, tf):
    theirs = tf.train.NewCheckpointReader(v2_ckpt).debug_string()
    assert ckptkit.NewCheckpointReader(v2_ckpt).debug_string() == theirs


@pytest.mark.tf
def test_debug_string_v1_is_byte_identical(v1_ckpt, tf):
    """TF lists V1 tensors in the order of its TensorSliceReader's map."""
    theirs = tf.train.NewCheckpointReader(v1_ckpt).debug_string()
    assert ckptkit.NewCheckpointReader(v1_ckpt).debug_string() == theirs


@pytest.mark.tf
def test_load_checkpoint_and_list_variables(v2_ckpt, tf):
    assert legacy.list_variables(v2_ckpt) == tf.train.list_variables(v2_ckpt)
    assert legacy.load_checkpoint(v2_ckpt).get_variable_to_shape_map() == \
        tf.train.load_checkpoint(v2_ckpt).get_variable_to_shape_map()
    assert_same_value(legacy.load_variable(os.path.dirname(v2_ckpt), "int64/matrix:0"),
                      tf.train.load_variable(os.path.dirname(v2_ckpt), "int64/matrix:0"))


@pytest.fixture(scope="module")
def partitioned_ckpt(tmp_path_factory, tf):
    return save_graph(tmp_path_factory.mktemp("legacy_part"), [
        Var("whole", sample("float32", (2, 2))),
        Var("part", sample("int64", (7, 3), 1), partitioner=tf.fixed_size_partitioner(3))]).path


@pytest.mark.tf
def test_partitioned_shape_map_and_values(partitioned_ckpt, tf):
    ours, theirs = (ckptkit.NewCheckpointReader(partitioned_ckpt),
                    tf.train.NewCheckpointReader(partitioned_ckpt))
    assert list(ours.get_variable_to_shape_map().items()) == \
        list(theirs.get_variable_to_shape_map().items())
    assert ours.get_variable_to_shape_map() == {"whole": [2, 2], "part": [7, 3]}
    assert_same_value(ours.get_tensor("part"), theirs.get_tensor("part"))


@pytest.mark.tf
def test_partitioned_debug_string_difference(partitioned_ckpt, tf):
    """TF: the three slice keys, raw, and no line for `part`; ckptkit: one line for `part`."""
    theirs = tf.train.NewCheckpointReader(partitioned_ckpt).debug_string()
    ours = ckptkit.NewCheckpointReader(partitioned_ckpt).debug_string()
    keys = [slices.slice_key("part", ((s, n), (0, 3))) for s, n in ((0, 3), (3, 2), (5, 2))]
    assert theirs == b"".join(k + b" (DT_INT64) [%d,3]\n" % n
                              for k, n in zip(keys, (3, 2, 2))) + b"whole (DT_FLOAT) [2,2]\n"
    assert ours == b"part (DT_INT64) [7,3]\nwhole (DT_FLOAT) [2,2]\n"


@pytest.mark.tf
def test_v1_partitioned_order_and_debug_string(tmp_path, tf):
    """A V1 file's partitioned variable: TF's order, and `, 3 slices` in its debug line."""
    path = save_graph(tmp_path, _variables(("float32", "int32")) + [
        Var("part", sample("int64", (7, 3), 1), partitioner=tf.fixed_size_partitioner(3))],
        version="V1").path
    ours, theirs = ckptkit.NewCheckpointReader(path), tf.train.NewCheckpointReader(path)
    assert list(ours.get_variable_to_shape_map().items()) == \
        list(theirs.get_variable_to_shape_map().items())
    assert ours.debug_string() == theirs.debug_string()
    assert b"part (DT_INT64) [7,3], 3 slices\n" in ours.debug_string()


@pytest.fixture(scope="module")
def sharded_v1(tmp_path_factory, tf):
    """A sharded V1 save over four devices: TF lists its files as the directory does."""
    variables = [Var(f"layer{i}/{kind}", sample("float32", (2, i + 1), i), device=f"/cpu:{i % 4}")
                 for i in range(24) for kind in ("weights", "biases")]
    return save_graph(tmp_path_factory.mktemp("legacy_sharded"), variables, version="V1",
                      sharded=True).path


@pytest.mark.tf
def test_sharded_v1_order(sharded_v1, tf):
    ours, theirs = ckptkit.NewCheckpointReader(sharded_v1), \
        tf.train.NewCheckpointReader(sharded_v1)
    assert list(ours.get_variable_to_shape_map()) == list(theirs.get_variable_to_shape_map())
    assert ours.debug_string() == theirs.debug_string()


@pytest.mark.tf
def test_order_across_rehashes(tmp_path, tf):
    """700 keys: the unordered_map grows through 13, 29, 59, 127, 257, 541 and 1109 buckets."""
    names = [f"block{i % 17}/unit_{i}/{('conv', 'bn/gamma', 'bn/beta', 'w')[i % 4]}"
             for i in range(700)]
    prefix = save_raw_v2(str(tmp_path / "many"), {n: np.float32(i) for i, n in enumerate(names)})
    assert list(ckptkit.NewCheckpointReader(prefix).get_variable_to_shape_map()) == \
        list(tf.train.NewCheckpointReader(prefix).get_variable_to_shape_map())


# --- the order, without TensorFlow ---------------------------------------------------------

def test_std_hash_is_libstdcxx():
    """std::hash<std::string>{}(s) printed by a g++ 12 program."""
    assert [legacy._std_hash(s.encode()) for s in
            ("", "a", "global_step", "dense/kernel/Adam_1", "\u00fcn\u00efc\u00f8d\u00e9",
             "0123456789abcdefg")] == \
        [6142509188972423790, 4993892634952068459, 6082324943468979753, 14426220761931740779,
         18234840357382906447, 2203838674469644272]


def test_unordered_order_as_tf_listed_it():
    """{'step': tf.int64, 's': tf.string, 'a': tf.float32}: TF 2.21's reader on a, s, step."""
    assert legacy._unordered(["a", "s", "step"]) == ["step", "s", "a"]
    assert legacy._unordered([]) == []


# --- the state file --------------------------------------------------------------------------

STATES = {
    "escapes-and-timestamps": textwrap.dedent('''\
        # written by hand
        model_checkpoint_path: "a\\"b\\\\c\\n\\001\u00e9\\'d"
        all_model_checkpoint_paths: 'ckpt-1'  # a comment
        all_model_checkpoint_paths: "/abs/ckpt-2"
        all_model_checkpoint_timestamps: 1796564226.871008
        all_model_checkpoint_timestamps: 1e20
        all_model_checkpoint_timestamps: 0.1
        all_model_checkpoint_timestamps: inf
        last_preserved_timestamp: 1e-7
        '''),
    "saver": 'model_checkpoint_path: "model.ckpt-20"\n'
             'all_model_checkpoint_paths: "model.ckpt-10"\n'
             'all_model_checkpoint_paths: "model.ckpt-20"\n',
    "unknown-field": 'model_checkpoint_path: "m"\nnot_a_field: 3\n',
    "unquoted-path": "model_checkpoint_path: m\n",
    "garbage": "\x00\x01 not a proto {",
    "empty": "",
}


@pytest.mark.tf
@pytest.mark.parametrize("case", STATES)
def test_get_checkpoint_state_as_tf(tmp_path, tf, case):
    """TF's CheckpointState, printed as its text proto; None, or TF's ValueError, alike."""
    (tmp_path / "checkpoint").write_text(STATES[case], encoding="utf-8")

    def outcome(get):
        try:
            state = get(str(tmp_path))
        except ValueError as e:
            return "ValueError", str(e)
        if state is None:
            return None
        return (str(state), repr(state), state.model_checkpoint_path,
                list(state.all_model_checkpoint_paths),
                list(state.all_model_checkpoint_timestamps), state.last_preserved_timestamp)

    assert outcome(legacy.get_checkpoint_state) == outcome(tf.train.get_checkpoint_state)


# --- legacy scripts: python with TensorFlow, ckptkit legacy without --------------------------

INSPECT_CHECKPOINT = '''\
import sys

from tensorflow.python.tools import inspect_checkpoint as chkp

for path in sys.argv[1:]:
    print("==", path)
    chkp.print_tensors_in_checkpoint_file(path, tensor_name='', all_tensors=True)
    chkp.print_tensors_in_checkpoint_file(path, tensor_name='', all_tensors=False,
                                          all_tensor_names=True)
    chkp.print_tensors_in_checkpoint_file(path, '', False)
    chkp.print_tensors_in_checkpoint_file(path, '', False, count_exclude_pattern='int|OPTIMIZER')
    chkp.print_tensors_in_checkpoint_file(path, tensor_name='float32/matrix', all_tensors=False)
    chkp.print_tensors_in_checkpoint_file(path, tensor_name='float32/matrx', all_tensors=False)
chkp.print_tensors_in_checkpoint_file(sys.argv[1] + '-9', tensor_name='', all_tensors=True)
'''

SHAPE_MAP_LOOP = '''\
import sys

import tensorflow as tf

for checkpoint_path in sys.argv[1:]:
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_path)
    var_to_shape_map = reader.get_variable_to_shape_map()
    var_to_dtype_map = reader.get_variable_to_dtype_map()
    for key in var_to_shape_map:
        print("tensor_name: ", key, var_to_shape_map[key], var_to_dtype_map[key])
        try:
            print(reader.get_tensor(key))
        except tf.errors.OpError as e:
            print("%s: %s" % (type(e).__name__, e))
    print(var_to_dtype_map)
    print(reader.debug_string().decode("utf-8"))
'''

STATE_AND_LATEST = '''\
import os
import sys

import tensorflow as tf
import tensorflow.compat.v1 as tf1

for train_dir in sys.argv[1:]:
    ckpt = tf.train.get_checkpoint_state(train_dir)
    print(ckpt)
    if ckpt and ckpt.model_checkpoint_path:
        print("Restoring from", os.path.basename(ckpt.model_checkpoint_path))
        for path in ckpt.all_model_checkpoint_paths:
            print(path, tf1.train.checkpoint_exists(path))
    latest = tf.train.latest_checkpoint(train_dir)
    print("latest:", latest, tf1.train.checkpoint_exists(latest + "-nope"))
    reader = tf1.train.NewCheckpointReader(latest)
    for name, shape in tf.train.list_variables(train_dir):
        print(name, shape, reader.get_variable_to_dtype_map()[name])
    print(tf.train.load_checkpoint(train_dir).get_variable_to_shape_map())
    try:
        reader.get_tensor("v3")
    except tf.errors.NotFoundError as e:
        print("%s: %s" % (type(e).__name__, e))
parent = os.path.dirname(sys.argv[1])
print(tf.train.get_checkpoint_state(parent), tf.train.latest_checkpoint(parent))
try:
    tf1.train.NewCheckpointReader(os.path.join(parent, "model.ckpt"))
except tf.errors.OpError as e:
    print("%s: %s" % (type(e).__name__, e))
'''

# a TF 1.x script: TF 2.21 no longer has pywrap_tensorflow.NewCheckpointReader, so TF runs it
# with the reader from where TF 2.21 keeps it
PYWRAP = '''\
import sys

from tensorflow.python import pywrap_tensorflow

checkpoint_path = sys.argv[1]
reader = pywrap_tensorflow.NewCheckpointReader(checkpoint_path)
var_to_shape_map = reader.get_variable_to_shape_map()
for key in var_to_shape_map:
    print("tensor_name: ", key)
    print(reader.get_tensor(key))
'''
PYWRAP_ON_TF2 = PYWRAP.replace(
    "from tensorflow.python import pywrap_tensorflow",
    "from tensorflow.python.training import py_checkpoint_reader as pywrap_tensorflow")


@pytest.fixture(scope="session")
def no_tf_env(tmp_path_factory):
    """The environment of a process that cannot import TensorFlow."""
    blocked = tmp_path_factory.mktemp("no_tf") / "tensorflow"
    blocked.mkdir()
    (blocked / "__init__.py").write_text(
        'raise ImportError("TensorFlow is unimportable in this test")\n')
    path = [str(blocked.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def _legacy(env, script, *args):
    return subprocess.run([sys.executable, "-c", CLI, "legacy", str(script), *map(str, args)],
                          env=env, cwd=os.path.dirname(script), capture_output=True,
                          text=True, timeout=300)


def _python(script, *args, env=None):
    env = env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=env,
                          cwd=os.path.dirname(script), capture_output=True, text=True,
                          timeout=300)


TF2_WRITER = '''\
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf

iterator = iter(tf.data.Dataset.range(10))   # its state: a variant tensor
next(iterator)
ckpt = tf.train.Checkpoint(kernel=tf.Variable(tf.reshape(tf.range(6.0), [2, 3])),
                           step=tf.Variable(7, dtype=tf.int64), iterator=iterator)
manager = tf.train.CheckpointManager(ckpt, os.path.join(sys.argv[1], "managed"), max_to_keep=2)
for _ in range(3):
    manager.save()
print(ckpt.save(os.path.join(sys.argv[1], "ckpt")))
'''


@pytest.fixture(scope="module")
def tf2_ckpt(tmp_path_factory):
    """A TF2 object-based checkpoint (with a tf.data iterator's variant state); beside it
    managed/ (CheckpointManager: two checkpoints and their timestamps in the state file)."""
    done = subprocess.run([sys.executable, "-c", TF2_WRITER,
                           str(tmp_path_factory.mktemp("legacy_tf2"))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


@pytest.fixture
def checkpoints(v2_ckpt, v1_ckpt, sharded_v1, tf2_ckpt):
    return {"v2": v2_ckpt, "v1": v1_ckpt, "sharded_v1": sharded_v1,
            "tf2": tf2_ckpt, "v2_dir": os.path.dirname(v2_ckpt),
            "v1_dir": os.path.dirname(v1_ckpt),
            "managed_dir": os.path.join(os.path.dirname(tf2_ckpt), "managed")}


SCRIPTS = {   # name: (script for ckptkit legacy, for python with TF 2.21, its arguments)
    "inspect_checkpoint": (INSPECT_CHECKPOINT, INSPECT_CHECKPOINT, ("v2", "v1", "tf2")),
    "shape-map-loop": (SHAPE_MAP_LOOP, SHAPE_MAP_LOOP, ("v2", "v1", "sharded_v1", "tf2")),
    "state-and-latest": (STATE_AND_LATEST, STATE_AND_LATEST,
                         ("v2_dir", "v1_dir", "managed_dir")),
    "pywrap_tensorflow": (PYWRAP, PYWRAP_ON_TF2, ("v2",)),
}


@pytest.mark.tf
@pytest.mark.parametrize("name", SCRIPTS)
def test_legacy_script_prints_what_it_prints_under_tensorflow(name, checkpoints, no_tf_env,
                                                              tmp_path):
    script, on_tf, uses = SCRIPTS[name]
    args = [checkpoints[u] for u in uses]
    (tmp_path / "tf").mkdir()
    (tmp_path / "tf" / "look.py").write_text(on_tf)
    (tmp_path / "look.py").write_text(script)
    theirs = _python(tmp_path / "tf" / "look.py", *args)
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    ours = _legacy(no_tf_env, tmp_path / "look.py", *args)
    assert (ours.returncode, ours.stderr) == (0, "")
    assert ours.stdout.splitlines() == theirs.stdout.splitlines()
    assert len(theirs.stdout.splitlines()) > 10


# --- the stand-in's refusals and a script's own errors, without TensorFlow -------------------

UNSUPPORTED = {   # name: (script, the TF name it needs, its line)
    "attribute": ('import tensorflow as tf\nprint(hasattr(tf, "Session"))\n\n'
                  'sess = tf.Session()\n', "tensorflow.Session", 4),
    "submodule": ("import os\nimport tensorflow.contrib.slim as slim\n", "tensorflow.contrib", 2),
    "from-import": ("from tensorflow.python.platform import gfile\n",
                    "tensorflow.python.platform", 1),
}


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_unsupported_tf_name_is_one_line(case, no_tf_env, tmp_path):
    script, needed, line = UNSUPPORTED[case]
    (tmp_path / "look.py").write_text(script)
    done = _legacy(no_tf_env, tmp_path / "look.py")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"ckptkit: error: {needed} needs real TensorFlow "
                                  f"({tmp_path / 'look.py'}, line {line}): ")
    assert done.stdout == ("False\n" if case == "attribute" else "")


SCRIPT_ERRORS = {   # name: (script, arguments)
    "ValueError": (textwrap.dedent('''\
        import sys

        def check(path):
            if not path.endswith(".ckpt"):
                raise ValueError(f"not a checkpoint prefix: {path}")

        print("checking", sys.argv[1:])
        check(sys.argv[1])
        '''), ("model.h5", "--help")),
    "sys.exit-message": ('import sys\nprint("usage: look.py PATH")\nsys.exit("no path")\n', ()),
    "sys.exit-3": ("raise SystemExit(3)\n", ()),
    "syntax-error": ("x = (\n", ()),
}


@pytest.mark.parametrize("case", SCRIPT_ERRORS)
def test_script_error_shows_as_python_shows_it(case, no_tf_env, tmp_path):
    """Exit status, stdout and stderr (the traceback) as `python look.py` gives them; arguments
    after the script (--help included) are the script's."""
    script, args = SCRIPT_ERRORS[case]
    (tmp_path / "look.py").write_text(script)
    ours = _legacy(no_tf_env, tmp_path / "look.py", *args)
    theirs = _python(tmp_path / "look.py", *args, env=no_tf_env)
    assert (ours.returncode, ours.stdout, ours.stderr) == \
        (theirs.returncode, theirs.stdout, theirs.stderr)
    assert "internal error" not in ours.stderr
    if case == "ValueError":
        assert ours.returncode == 1
        assert f'File "{tmp_path / "look.py"}", line 8, in <module>' in ours.stderr
        assert ours.stderr.endswith("ValueError: not a checkpoint prefix: model.h5\n")


def test_uncaught_tf_error_shows_its_traceback(no_tf_env, tmp_path):
    """TF's NotFoundError left uncaught: the script's traceback, TF's class and message."""
    prefix = write_golden(tmp_path)
    (tmp_path / "look.py").write_text(
        "import sys\nimport tensorflow as tf\n\n"
        "reader = tf.compat.v1.train.NewCheckpointReader(sys.argv[1])\n"
        "print(reader.get_tensor('v3'))\n")
    done = _legacy(no_tf_env, tmp_path / "look.py", prefix)
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):\n")
    assert f'File "{tmp_path / "look.py"}", line 5, in <module>' in done.stderr
    assert "NotFoundError: Key v3 not found in checkpoint\n" in done.stderr


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
''')


def test_stand_in_installed_by_a_script(no_tf_env, tmp_path):
    prefix = write_golden(tmp_path)
    done = subprocess.run([sys.executable, "-c", LOOK_CHECKPOINT_UNCHANGED, prefix],
                          env=no_tf_env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(done.stdout.splitlines()) == \
        ["tensor_name:  a", "tensor_name:  part", "tensor_name:  s"]
