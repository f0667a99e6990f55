"""Checkpoint factories for the reader tests.

Kept apart so `pytest -m "not tf"` never loads TensorFlow (importing this module does not):
- TF writers (`save_graph`, `restore_graph`, `save_raw_v2`, `save_tf2`, `save_slim_net`):
  TensorFlow writes the checkpoint, the tests compare ckptkit with `tf.train.load_checkpoint`
  (or, where that cannot read, with what TF's Saver.restore reads back). TF is imported inside
  the functions, through ckptkit.tfcompat (graph mode), except `save_tf2`, which runs TF2
  eager code in a subprocess.
- golden bytes (`GOLDEN_*`, `write_golden`): a tiny V2 bundle and V1 file TF 2.21 wrote.
  test_formats_tf_v2 checks that TF writes the golden bytes and reads what the pure writer
  (tests/helpers/bundle_writer.py, no TF) writes.

Values come from `sample(dtype, shape)`: deterministic, each dtype's edge values first
(nan, -0.0, inf, min/max, strings with NUL and 0xff bytes, empty strings).
"""
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from glob import escape, glob

import numpy as np

# every dtype tf.compat.v1.train.Saver writes in V2 bundles (checked on TF 2.21)
SAVER_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
                "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
                "string")
# what the V1 Saver refuses on TF 2.21: "Saving data type bfloat16 not yet supported",
# "Tensor slice serialization not implemented for dtype 22" (uint32) / "... 23" (uint64)
V1_UNSAVABLE = ("bfloat16", "uint32", "uint64")
V1_DTYPES = tuple(d for d in SAVER_DTYPES if d not in V1_UNSAVABLE)

STRINGS = [b"", b"\x00", b"\xff", b"a\x00b\xffc", "\u00fcn\u00ef c\u00f8d\u00e9".encode(),
           b"x" * 200, b"\x00" * 3, b"\xff\xfe\x80\x7f"]


# --- values ---------------------------------------------------------------------------------

def _numpy_dtype(dtype):
    """The numpy dtype for one of our dtype names (object for `string`)."""
    if dtype == "string":
        return np.dtype(object)
    if dtype.startswith(("bfloat16", "float8", "int4", "uint4", "int2", "uint2")):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, dtype))
    return np.dtype(dtype)


def _edges(dtype):
    npd = _numpy_dtype(dtype)
    if dtype == "string":
        return list(STRINGS)
    if dtype == "bool":
        return [True, False, False, True]
    if dtype.startswith("complex"):
        real = np.finfo(npd).max
        return [0, 1 + 2j, complex(-0.0, 0.0), complex(np.inf, -1), complex(np.nan, 3),
                complex(real, -real), -1.5j]
    if dtype.startswith(("float", "bfloat")):
        import ml_dtypes

        info = ml_dtypes.finfo(npd)
        return [0.0, -0.0, 1.5, -2.25, np.inf, -np.inf, np.nan, float(info.max),
                float(info.min), float(info.tiny), float(info.smallest_subnormal)]
    info = np.iinfo(npd)
    return [0, 1, info.max, info.min, info.max - 1, info.min + 1]


def sample(dtype, shape, seed=0):
    """A deterministic array of `dtype` and `shape`, its first elements the dtype's edges."""
    npd = _numpy_dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(seed)
    edges = _edges(dtype)
    if dtype == "string":
        rest = [bytes(rng.integers(0, 256, rng.integers(0, 40), dtype=np.uint8))
                for _ in range(max(0, size - len(edges)))]
        flat = np.empty(size, dtype=object)
        flat[:] = (edges + rest)[:size]
        return flat.reshape(shape)
    if dtype == "bool":
        rest = rng.integers(0, 2, size).astype(bool).tolist()
    elif dtype.startswith("complex"):
        rest = (rng.standard_normal(size) + 1j * rng.standard_normal(size)).tolist()
    elif dtype.startswith(("float", "bfloat")):
        rest = (rng.standard_normal(size) * 100).tolist()
    else:
        info = np.iinfo(npd)
        rest = rng.integers(info.min, info.max, size, dtype=npd, endpoint=True).tolist()
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array((edges + rest)[:size], dtype=npd).reshape(shape)


def as_bits(value):
    """An array whose equality means bit-for-bit equality (bfloat16 & co. as unsigned ints)."""
    value = np.asarray(value)
    if value.dtype == object or value.dtype.kind in "SU":
        return value
    if value.dtype.kind == "V" or value.dtype.name in ("bfloat16", "float16") or \
            value.dtype.name.startswith(("float8", "int4", "uint4", "int2", "uint2")):
        return value.view(f"u{value.dtype.itemsize}")
    return value


def assert_same_value(ours, theirs, name=""):
    """Exact equality of a ckptkit value with TF's: shape, dtype and every element (strings as
    bytes, floats bit for bit)."""
    if isinstance(ours, bytes):   # scalar strings come back as bytes (legacy API, TF)
        ours = np.array(ours, dtype=object)
    if isinstance(theirs, bytes):
        theirs = np.array(theirs, dtype=object)
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if theirs.dtype == object or theirs.dtype.kind == "S":
        assert ours.dtype == object, f"{name}: dtype {ours.dtype}, TF has strings"
        assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != {theirs.shape}"
        assert [bytes(x) for x in ours.ravel()] == [bytes(x) for x in theirs.ravel()], name
        assert all(type(x) is bytes for x in ours.ravel()), f"{name}: elements not bytes"
        return
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype} != {theirs.dtype}"
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} != {theirs.shape}"
    np.testing.assert_array_equal(as_bits(ours), as_bits(theirs), err_msg=name)


def assert_matches_tf(reader, tf_reader, *, values=True):
    """ckptkit lists exactly TF's names, shapes and dtypes (in name order) and reads every
    value TF reads, exactly."""
    shapes = tf_reader.get_variable_to_shape_map()
    dtypes = tf_reader.get_variable_to_dtype_map()
    assert list(reader.variables) == sorted(shapes)
    assert {n: (list(v.shape), v.dtype) for n, v in reader.variables.items()} == \
        {n: (list(shapes[n]), dtypes[n].name) for n in shapes}
    if values:
        for name in shapes:
            assert_same_value(reader.read(name), tf_reader.get_tensor(name), name)


# --- TF writers -----------------------------------------------------------------------------

def _tf():
    from ckptkit.tfcompat import tf

    return tf


@dataclass
class Var:
    """One variable to create: its full value, and optionally a partitioner and a device."""

    name: str
    value: np.ndarray
    dtype: str = ""
    partitioner: object = None
    device: object = ""   # "/cpu:1", or a device function


@dataclass
class Saved:
    path: str      # V2 prefix, or the V1 file
    values: dict   # saved name -> the value TF's session held when it saved
    files: list    # every file the save wrote, as basenames
    sharded: bool = False
    restored: dict = None   # what Saver.restore reads back, where a test asked for it


def _sliced(value, offset, shape):
    return value[tuple(slice(o, o + n) for o, n in zip(offset, shape))]


def _variable(tf, var):
    dtype = tf.as_dtype(var.dtype or ("string" if var.value.dtype == object
                                      else var.value.dtype.name))
    if var.partitioner is None:
        return tf.get_variable(var.name, initializer=tf.constant(var.value, dtype=dtype))

    def init(shape, dtype=dtype, partition_info=None):
        offset = partition_info.var_offset if partition_info else [0] * len(shape)
        return tf.constant(_sliced(var.value, offset, shape), dtype=dtype)

    return tf.get_variable(var.name, shape=var.value.shape, dtype=dtype, initializer=init,
                           partitioner=var.partitioner)


def save_graph(directory, variables, *, version="V2", sharded=False, step=None,
               name="model.ckpt", cpus=None):
    """Build the variables in a fresh graph, initialise them, save with tf.train.Saver.

    A variable's device is a string ("/cpu:2") or a device function; the session gets that
    many CPU devices (or `cpus`), so `sharded=True` writes one data file per device used
    (plus one for the variables without a device).
    """
    tf = _tf()
    os.makedirs(directory, exist_ok=True)
    cpus = cpus or 1 + max([int(v.device.rsplit(":", 1)[1]) for v in variables
                            if isinstance(v.device, str) and v.device] or [0])
    graph = tf.Graph()
    with graph.as_default():
        made = {}
        for var in variables:
            with tf.device(var.device or None):
                made[var.name] = _variable(tf, var)
        saver = tf.train.Saver(sharded=sharded,
                               write_version=getattr(tf.train.SaverDef, version))
        config = tf.ConfigProto(device_count={"CPU": cpus})
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            values = sess.run({n: tf.convert_to_tensor(v) for n, v in made.items()})
            path = saver.save(sess, os.path.join(directory, name), global_step=step,
                              write_meta_graph=False)
    files = sorted(f for f in os.listdir(directory) if f.startswith(os.path.basename(path)))
    return Saved(path, values, files, sharded)


def restore_graph(path, variables):
    """What TF's own Saver.restore puts in the variables (partitioned ones assembled): the
    oracle where tf.train.load_checkpoint cannot read (V1 sliced tensors)."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        made = {var.name: _variable(tf, var) for var in variables}
        saver = tf.train.Saver()
        with tf.Session() as sess:
            saver.restore(sess, path)
            return sess.run({n: tf.convert_to_tensor(v) for n, v in made.items()})


def save_raw_v2(prefix, tensors, slice_specs=None):
    """Save {name: numpy array} with tf.raw_ops.SaveV2: any dtype TF has, any tensor name;
    `slice_specs` {name: "full-shape start,length:..."} saves a tensor as one slice of a
    larger one, as partitioned savers do."""
    tf = _tf()
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        names = sorted(tensors)
        op = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                               shape_and_slices=[(slice_specs or {}).get(n, "") for n in names],
                               tensors=[tf.constant(tensors[n]) for n in names])
        with tf.Session() as sess:
            sess.run(op)
    return prefix


# TF2 object-based checkpoint: eager mode, so it runs in its own interpreter (ckptkit.tfcompat
# turns eager execution off for the whole process).
TF2_SCRIPT = textwrap.dedent('''
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    import tf_keras

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.dense = tf_keras.layers.Dense(3, name="dense")
            self.dense.build((None, 4))
            self.scale = tf.Variable(2.0, name="scale")
            self.table = [tf.Variable(tf.reshape(tf.range(4, dtype=tf.float64), [2, 2])),
                          tf.Variable([b"a", b"\\x00\\xff", b""])]
            self.step = tf.Variable(7, dtype=tf.int64)

    tf.random.set_seed(1)
    net = Net()
    seq = tf_keras.Sequential([tf_keras.layers.Dense(5), tf_keras.layers.Dense(2)])
    seq.build((None, 3))
    opt = tf_keras.optimizers.legacy.Adam(0.1)   # slot variables: .OPTIMIZER_SLOT keys
    with tf.GradientTape() as tape:
        loss = (tf.reduce_sum(net.dense(tf.ones([2, 4]))) * net.scale
                + tf.reduce_sum(seq(tf.ones([2, 3]))))
    train = net.dense.trainable_variables + [net.scale] + seq.trainable_variables
    opt.apply_gradients(zip(tape.gradient(loss, train), train))
    ckpt = tf.train.Checkpoint(model=net, seq=seq, optimizer=opt)
    out = sys.argv[1]
    # a train dir kept by CheckpointManager: ckpt-2 and ckpt-3 stay, the state names ckpt-3
    manager = tf.train.CheckpointManager(ckpt, os.path.join(out, "managed"), max_to_keep=2)
    for _ in range(3):
        manager.save()
    # MaxShardSizePolicy: tensors cut into irregular slices spread over several data files
    split = tf.train.Checkpoint(
        big=tf.Variable(tf.reshape(tf.range(400, dtype=tf.float32), [20, 20])),
        s=tf.Variable([b"abc", b"\\x00\\xff"] * 15))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=300)
    split.write(os.path.join(out, "split", "m"),
                options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    tf.saved_model.save(net, os.path.join(out, "saved_model"))
    print(ckpt.save(os.path.join(out, "ckpt")))
''')


def save_tf2(directory):
    """Write TF2 object-based checkpoints in a subprocess; returns the main one's prefix.

    Also under `directory`: managed/ (CheckpointManager, max_to_keep=2, three saves),
    split/m (written with MaxShardSizePolicy(300 bytes): a 20x20 float32 and a 30-string
    tensor cut into slices over several data files) and saved_model/ (tf.saved_model.save)."""
    os.makedirs(directory, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", TF2_SCRIPT, str(directory)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


SLIM_NETS = {
    # name: (module, function, arg scope, classes, image size)
    "resnet_v1_50": ("resnet_v1", "resnet_v1_50", "resnet_arg_scope", 1000, 224),
    "inception_v3": ("inception_v3", "inception_v3", "inception_v3_arg_scope", 1001, 299),
}


def save_slim_net(directory, net):
    """Build a tf_slim net with its arg scope in its own graph, initialise, save (V2)."""
    import importlib

    from ckptkit.tfcompat import slim, tf

    module, fn, scope, classes, size = SLIM_NETS[net]
    nets = importlib.import_module(f"tf_slim.nets.{module}")
    os.makedirs(directory, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        images = tf.placeholder(tf.float32, [1, size, size, 3])
        with slim.arg_scope(getattr(nets, scope)()):
            getattr(nets, fn)(images, num_classes=classes, is_training=False)
        count = len(tf.global_variables())
        saver = tf.train.Saver()
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            path = saver.save(sess, os.path.join(directory, net), write_meta_graph=False)
    return path, count


def shard_files(prefix):
    """The data files of a V2 prefix, sorted."""
    return sorted(glob(escape(prefix) + ".data-*"))


# --- bytes TF wrote (no TF needed to use them) ---------------------------------------------
# `golden_variables()` saved by tf.compat.v1.train.Saver on TF 2.21 (write_meta_graph=False):
# float32 "a" = [1.5, -2], int32 "part" = arange(5) split by fixed_size_partitioner(2) into
# [0:3] and [3:5], string scalar "s" = b"\x00\xff". test_formats_tf_v2 checks TF still
# writes exactly these bytes.
GOLDEN_V2_INDEX = bytes.fromhex(
    "00000608011a020801000b11007061727400010101808308031204120208032008280c354fa57a7a0902"
    "118382080312041202080220142808357443a3aa00010f6108011204120208022808353d33c8f4000416"
    "7061727408031204120208053a040a0210033a060a040803100200010d7308071200201c2807350a3ecb"
    "2a00000000010000000069b30dbc000000000100000000c0f2a1b0000103740087010000000001000000"
    "001ac69a6d8c010899010f000000000000000000000000000000000000000000000000000000000000"
    "0000000057fb808b247547db")
GOLDEN_V2_DATA = bytes.fromhex(
    "0000c03f000000c0000000000100000002000000030000000400000002d8d8107300ff")
GOLDEN_V1 = bytes.fromhex(
    "0000400a3e0a0f0a0161120412020802180122020a000a1c0a0470617274120412020805180322040a02"
    "100322060a04080310020a090a017312001807220012020801000815006100010101807f12130a016112"
    "020a001a0a2a080000c03f000000c0010a157061727400010101808312130a047061727412040a021003"
    "1a053a03000102090216838212140a047061727412060a04080310021a043a02030401040d7300010012"
    "0b0a017312001a04420200ff00000000010000000025ab23c7000000000100000000c0f2a1b000010301"
    "00bc0100000000010000000036ae70e7c10108ce010f0000000000000000000000000000000000000000"
    "000000000000000000000000000057fb808b247547db")
GOLDEN_VALUES = {"a": np.array([1.5, -2.0], np.float32), "part": np.arange(5, dtype=np.int32),
                 "s": np.array(b"\x00\xff", dtype=object)}
GOLDEN_SLICES = {"part": (((0, 3),), ((3, 2),))}


def golden_variables(tf):
    return [Var("a", GOLDEN_VALUES["a"]),
            Var("part", GOLDEN_VALUES["part"], partitioner=tf.fixed_size_partitioner(2)),
            Var("s", GOLDEN_VALUES["s"])]


def write_golden(directory, version="V2"):
    """The golden checkpoint's files under `directory`; returns the prefix (V2) or file (V1)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "golden.ckpt")
    files = {path: GOLDEN_V1} if version == "V1" else \
        {path + ".index": GOLDEN_V2_INDEX, path + ".data-00000-of-00001": GOLDEN_V2_DATA}
    for name, data in files.items():
        with open(name, "wb") as f:
            f.write(data)
    return path
