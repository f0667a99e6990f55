"""Write the checkpoints tools/bench measures into bench-data/ (or the folder given), each
written by TensorFlow itself, and skip those already there:

- resnet_v1_50/model.ckpt  tf_slim resnet_v1_50 (1000 classes, resnet_arg_scope), random
                           init, tf.train.Saver V2: 267 variables, ~100 MB.
- resnet_v1_152/model.ckpt the same for resnet_v1_152: 777 variables, ~240 MB.
- mobilenet_v1/model.ckpt  the net as ckptkit's zoo builds it (ckptkit.train.architectures:
                           the net function, 1001 classes, its arg_scope, its image size 224),
                           random init, Saver V2: 137 variables, ~17 MB.
- inception_resnet_v2/model.ckpt  the same at 299 px: 908 variables (AuxLogits included),
                           ~237 MB.
- big/model.ckpt           ~700 MB: five 128 MiB float32 variables plus 300 small ones.
- many/model.ckpt          exactly 100,000 small variables with scoped names such as
                           net/block_0042/unit_3/conv/weights.

Each one is made in its own subprocess: the nets need graph mode (ckptkit.tfcompat), while
big and many save from eager mode with tf.raw_ops.SaveV2 (the kernel every TF V2 save uses),
which takes seconds where 100,000 graph-mode variables would take many minutes. Every new
checkpoint is read back with tf.train.load_checkpoint and its key count checked.

    python tools/make_bench_checkpoints.py [OUT_DIR]
"""
import os
import subprocess
import sys
import time

RESNET_VARIABLES = {50: 267, 152: 777}   # with resnet_arg_scope, 1000 classes
# image size, variables with the arg_scope and 1001 classes: tests/test_train_arch_mobilenet.py's
# 137; tests/test_train_arch_inception.py's 896 outside the classifiers + Logits 2 + AuxLogits 10
ZOO_NETS = {"mobilenet_v1": (224, 137), "inception_resnet_v2": (299, 908)}
BIG_LARGE = 5                    # large float32 tensors ...
BIG_LARGE_ELEMENTS = 32 << 20    # ... of 128 MiB each
BIG_SMALL = 300
MANY, MANY_300K = 100_000, 300_000
# per unit of the "many" network: name -> shape (10 tensors, ~0.6 KB per unit)
MANY_UNIT = {
    "conv/weights": (3, 3, 4, 4), "conv/biases": (4,),
    "conv/BatchNorm/beta": (4,), "conv/BatchNorm/gamma": (4,),
    "conv/BatchNorm/moving_mean": (4,), "conv/BatchNorm/moving_variance": (4,),
    "shortcut/weights": (1, 1, 4, 4), "shortcut/BatchNorm/beta": (4,),
    "shortcut/BatchNorm/gamma": (4,), "shortcut/BatchNorm/moving_mean": (4,),
}
MANY_UNITS_PER_BLOCK = 4


def _prefix(out_dir, name):
    return os.path.join(out_dir, name, "model.ckpt")


def _present(prefix):
    return os.path.isfile(prefix + ".index") and os.path.isfile(
        prefix + ".data-00000-of-00001")


def _write_state(prefix):
    with open(os.path.join(os.path.dirname(prefix), "checkpoint"), "w") as f:
        name = os.path.basename(prefix)
        f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')


def _check(prefix, expected=None, min_bytes=0):
    """Read the new checkpoint back with TensorFlow's own reader."""
    import tensorflow as tf

    keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    if expected is not None and len(keys) != expected:
        sys.exit(f"{prefix}: TensorFlow reads {len(keys)} keys, expected {expected}")
    size = os.path.getsize(prefix + ".data-00000-of-00001")
    if size < min_bytes:
        sys.exit(f"{prefix}: data file is {size} bytes, expected >= {min_bytes}")
    print(f"{prefix}: {len(keys):,} keys, {size / 1e6:.1f} MB of data (checked with "
          "tf.train.load_checkpoint)", file=sys.stderr)


def _save_net(prefix, module, name, arg_scope, size, num_classes, expected):
    """Build module.name's graph under module.arg_scope() at `size` px, initialise it (seed 0)
    and save every variable with a V2 Saver; `expected` is its variable count."""
    import importlib
    import warnings

    warnings.filterwarnings("ignore", message=".*layer.apply.*")   # tf_slim's, harmless
    # tfcompat first (it makes tf_slim importable and turns on graph mode)
    from ckptkit.tfcompat import slim, tf

    module = importlib.import_module(module)
    tf.set_random_seed(0)
    images = tf.placeholder(tf.float32, [None, size, size, 3])
    with slim.arg_scope(getattr(module, arg_scope)()):
        getattr(module, name)(images, num_classes=num_classes, is_training=False)
    variables = tf.global_variables()
    if len(variables) != expected:
        sys.exit(f"{name} built {len(variables)} variables, expected {expected}")
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        tf.train.Saver(variables, write_version=tf.train.SaverDef.V2).save(
            sess, prefix, write_meta_graph=False)
    _check(prefix, expected)


def make_resnet(prefix, depth=50):
    _save_net(prefix, "tf_slim.nets.resnet_v1", f"resnet_v1_{depth}", "resnet_arg_scope", 224,
              1000, RESNET_VARIABLES[depth])


def make_zoo_net(prefix, name):
    """`name` as ckptkit's zoo builds it (ckptkit.train.architectures.NAME), at its image
    size."""
    size, expected = ZOO_NETS[name]
    _save_net(prefix, f"ckptkit.train.architectures.{name}", name, f"{name}_arg_scope", size,
              1001, expected)


def _save_v2(prefix, named):
    """Save {name: numpy array} as a V2 bundle with TF's SaveV2 kernel (eager)."""
    import tensorflow as tf

    names = sorted(named)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(named[n]) for n in names])
    _write_state(prefix)


def make_big(prefix):
    import numpy as np

    rng = np.random.default_rng(1)
    named = {}
    for i in range(BIG_LARGE):
        named[f"big/embedding_{i}/weights"] = rng.standard_normal(
            BIG_LARGE_ELEMENTS, dtype=np.float32).reshape(-1, 1024)
    for i in range(BIG_SMALL):
        named[f"big/layer_{i:03d}/kernel"] = rng.standard_normal((64, 64), dtype=np.float32)
    _save_v2(prefix, named)
    del named
    _check(prefix, BIG_LARGE + BIG_SMALL, min_bytes=600_000_000)


def many_names(count=MANY):
    blocks = count // (MANY_UNITS_PER_BLOCK * len(MANY_UNIT))   # 2,500 for 100,000
    return [f"net/block_{b:04d}/unit_{u}/{leaf}"
            for b in range(blocks) for u in range(1, MANY_UNITS_PER_BLOCK + 1)
            for leaf in MANY_UNIT]


def make_many(prefix, count=MANY):
    import numpy as np

    rng = np.random.default_rng(2)
    leaves = list(MANY_UNIT)
    values = {leaf: rng.standard_normal(MANY_UNIT[leaf], dtype=np.float32) for leaf in leaves}
    # the same few small arrays under 100,000 names: TF writes each one out separately
    named = {name: values[name.split("/", 3)[3]] for name in many_names(count)}
    assert len(named) == count
    _save_v2(prefix, named)
    _check(prefix, count)


def _tf_log_line(line):
    return line[:1] in "IWE" and line[1:5].isdigit() or line.startswith(
        "WARNING: All log messages before absl")


MAKERS = {"resnet_v1_50": make_resnet, "resnet_v1_152": lambda p: make_resnet(p, 152),
          "mobilenet_v1": lambda p: make_zoo_net(p, "mobilenet_v1"),
          "inception_resnet_v2": lambda p: make_zoo_net(p, "inception_resnet_v2"),
          "big": make_big, "many": make_many,
          "many300k": lambda p: make_many(p, MANY_300K)}


def main(argv):
    if len(argv) == 3 and argv[0] == "--one":   # child: make one checkpoint
        name, prefix = argv[1], argv[2]
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        MAKERS[name](prefix)
        return 0
    out_dir = argv[0] if argv else "bench-data"
    for name in MAKERS:
        prefix = _prefix(out_dir, name)
        if _present(prefix):
            continue
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        print(f"writing {prefix} ...", file=sys.stderr)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name,
                               prefix], check=False, stderr=subprocess.PIPE, text=True)
        for line in done.stderr.splitlines():   # TF's start-up log lines only on failure
            if done.returncode or not _tf_log_line(line):
                print(line, file=sys.stderr)
        if done.returncode:
            folder = os.path.dirname(prefix)   # leave no half-written input behind
            for leftover in os.listdir(folder):
                if leftover.startswith(os.path.basename(prefix)) or leftover == "checkpoint":
                    os.remove(os.path.join(folder, leftover))
            print(f"failed to write {prefix}", file=sys.stderr)
            return done.returncode
        print(f"wrote {prefix} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
