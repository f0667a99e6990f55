"""`inspect` and `convert --names source` on a .keras that `ckptkit port` wrote: each weight
shown with the checkpoint tensor it came from, and a ported model converted back into a slim
checkpoint whose tensors are, byte for byte, those the port took (TensorFlow's reader is the
oracle). The port runs in a process of its own: TF1's graph mode (which the `tf` fixture
switches on here) and Keras 3 on TensorFlow cannot share one."""
import json
import re
import subprocess
import sys
import zipfile
from math import prod

import numpy as np
import pytest

from ckptkit.scopes import role
from helpers.port import random_checkpoint

pytestmark = pytest.mark.tf


def port(checkpoint, net, out, *options):
    done = subprocess.run([sys.executable, "-c", "from ckptkit.cli import main; main()",
                           "port", str(checkpoint), "--net", net, "-o", str(out),
                           "--no-check", *options], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def lenet(tf, tmp_path_factory):
    """(checkpoint prefix, its port) for LeNet."""
    folder = tmp_path_factory.mktemp("lenet")
    checkpoint = random_checkpoint(tf, "lenet", folder / "model.ckpt", seed=2)
    return checkpoint, port(checkpoint, "lenet", folder / "lenet.keras")


LENET = [   # (dataset, shape, the checkpoint tensor)
    ("layers/conv2d/vars/0", [5, 5, 1, 32], "LeNet/conv1/weights"),
    ("layers/conv2d/vars/1", [32], "LeNet/conv1/biases"),
    ("layers/conv2d_1/vars/0", [5, 5, 32, 64], "LeNet/conv2/weights"),
    ("layers/conv2d_1/vars/1", [64], "LeNet/conv2/biases"),
    ("layers/dense/vars/0", [3136, 1024], "LeNet/fc3/weights"),
    ("layers/dense/vars/1", [1024], "LeNet/fc3/biases"),
    ("layers/dense_1/vars/0", [1024, 10], "LeNet/fc4/weights"),
    ("layers/dense_1/vars/1", [10], "LeNet/fc4/biases"),
]
TREE = """\
layers/           8 tensors             3,274,634
  conv2d/vars/    2 tensors                   832
    0             [5,5,1,32]   float32        800  <- LeNet/conv1/weights
    1             [32]         float32         32  <- LeNet/conv1/biases
  conv2d_1/vars/  2 tensors                51,264
    0             [5,5,32,64]  float32     51,200  <- LeNet/conv2/weights
    1             [64]         float32         64  <- LeNet/conv2/biases
  dense/vars/     2 tensors             3,212,288
    0             [3136,1024]  float32  3,211,264  <- LeNet/fc3/weights
    1             [1024]       float32      1,024  <- LeNet/fc3/biases
  dense_1/vars/   2 tensors                10,250
    0             [1024,10]    float32     10,240  <- LeNet/fc4/weights
    1             [10]         float32         10  <- LeNet/fc4/biases
8 tensors, 3,274,634 parameters, 13.1 MB
"""
FLAT = """\
layers/conv2d/vars/0    [5,5,1,32]   float32        800  <- LeNet/conv1/weights
layers/conv2d/vars/1    [32]         float32         32  <- LeNet/conv1/biases
layers/conv2d_1/vars/0  [5,5,32,64]  float32     51,200  <- LeNet/conv2/weights
layers/conv2d_1/vars/1  [64]         float32         64  <- LeNet/conv2/biases
layers/dense/vars/0     [3136,1024]  float32  3,211,264  <- LeNet/fc3/weights
layers/dense/vars/1     [1024]       float32      1,024  <- LeNet/fc3/biases
layers/dense_1/vars/0   [1024,10]    float32     10,240  <- LeNet/fc4/weights
layers/dense_1/vars/1   [10]         float32         10  <- LeNet/fc4/biases
8 tensors, 3,274,634 parameters, 13.1 MB
"""


def header(out, checkpoint, net):
    return f"{out}  (keras-h5; ported by ckptkit from {checkpoint} for {net})\n"


@pytest.mark.parametrize("options, expected", [((), TREE), (("--flat",), FLAT)],
                         ids=["tree", "flat"])
def test_inspect_names_each_weights_checkpoint_tensor(ckptkit, lenet, options, expected):
    checkpoint, out = lenet
    assert ckptkit("inspect", out, *options) == (
        0, header(out, checkpoint, "lenet") + expected, "")


def test_inspect_json_adds_each_weights_source(ckptkit, lenet):
    """The contract's fields as they are, plus "source" per weight and "ported_from"."""
    checkpoint, out = lenet
    code, stdout, stderr = ckptkit("inspect", out, "--json")
    params = sum(prod(shape) for _, shape, _ in LENET)
    assert (code, stderr) == (0, "")
    assert json.loads(stdout) == {
        "path": str(out), "format": "keras-h5",
        "variables": [{"name": name, "shape": shape, "dtype": "float32",
                       "nbytes": 4 * prod(shape), "source": source}
                      for name, shape, source in LENET],
        "total_params": params, "total_bytes": 4 * params,
        "ported_from": {"checkpoint": checkpoint, "net": "lenet"}}


def test_a_port_converts_back_to_the_tensors_it_took(tf, ckptkit, tmp_path):
    """port -> convert --names source: every model variable of the checkpoint, under its
    own name, equal in bytes (TensorFlow's reader reads both); the preprocessing port nests
    its net in a model of its own, which the names follow."""
    checkpoint = random_checkpoint(tf, "mobilenet_v1_050", tmp_path / "model.ckpt", seed=3)
    out = port(checkpoint, "mobilenet_v1_050", tmp_path / "m.keras",
               "--include-preprocessing")
    code, stdout, _ = ckptkit("inspect", out, "--json")
    listed = json.loads(stdout)["variables"]
    assert code == 0 and all(v["name"].startswith("layers/functional/layers/") and
                             v["source"] for v in listed)
    code, stdout, stderr = ckptkit("convert", out, tmp_path / "back.ckpt", "--names", "source")
    assert (code, stderr) == (0, "") and stdout.startswith(
        f"wrote {tmp_path / 'back.ckpt'} (tf-v2): {len(listed)} tensors")
    source = tf.train.load_checkpoint(str(checkpoint))
    back = tf.train.load_checkpoint(str(tmp_path / "back.ckpt"))
    names = sorted(back.get_variable_to_shape_map())
    assert names == sorted(n for n in source.get_variable_to_shape_map()
                           if role(n) == "model")
    for name in names:
        want, got = source.get_tensor(name), back.get_tensor(name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name


def with_weights(out, path, change):
    """A copy of the port `out` at `path` whose metadata's weights are change(weights)."""
    with zipfile.ZipFile(out) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata["ckptkit"]["weights"] = change(metadata["ckptkit"]["weights"])
                data = json.dumps(metadata).encode()
            target.writestr(info, data)
    return path


def test_a_mapping_the_archive_contradicts_is_a_note(ckptkit, lenet, tmp_path):
    """The listing as for any .keras, a note on stderr saying why; --names source refuses
    with the same reason."""
    checkpoint, out = lenet
    bad = with_weights(out, tmp_path / "bad.keras",
                       lambda weights: {k: v for k, v in weights.items()
                                        if v != "LeNet/conv1/biases"})
    why = f"{bad}: layer layers/conv2d holds 2 variables, metadata.json names 1; the " \
        "checkpoint tensors of its weights are unknown"
    assert ckptkit("inspect", bad) == (
        0, header(bad, checkpoint, "lenet") + re.sub(r"  <- \S+$", "", TREE, flags=re.M),
        f"note: {why}\n")
    assert ckptkit("convert", bad, tmp_path / "x.npz", "--names", "source") == (
        2, "", f"ckptkit: error: --names source: {why} (only a .keras that `ckptkit port` "
               "wrote says so)\n")
    assert not (tmp_path / "x.npz").exists()


def test_names_source_needs_a_port(ckptkit, lenet, tmp_path):
    checkpoint, _ = lenet
    assert ckptkit("convert", checkpoint, tmp_path / "x.npz", "--names", "source") == (
        2, "", f"ckptkit: error: --names source: {checkpoint} does not say which checkpoint "
               "tensors its weights came from (only a .keras that `ckptkit port` wrote says "
               "so)\n")


def test_a_new_heads_weights_keep_their_names(ckptkit, lenet, tmp_path):
    """Weights the port did not take from the checkpoint (a new head's) have no source: no
    label, and --names source leaves their names as they are."""
    checkpoint, out = lenet
    new = with_weights(out, tmp_path / "new.keras", lambda weights: {
        k: None if "fc4" in (v or "") else v for k, v in weights.items()})
    code, stdout, _ = ckptkit("inspect", new, "--flat", "--filter", "dense_1")
    assert (code, stdout) == (0, header(new, checkpoint, "lenet") + """\
layers/dense_1/vars/0  [1024,10]  float32  10,240
layers/dense_1/vars/1  [10]       float32      10
2 tensors, 10,250 parameters, 41.0 KB
""")
    code, stdout, _ = ckptkit("convert", new, tmp_path / "n.npz", "--names", "source")
    with np.load(tmp_path / "n.npz") as written:
        assert sorted(written.files) == sorted(
            [source for _, _, source in LENET if "fc4" not in source]
            + ["layers/dense_1/vars/0", "layers/dense_1/vars/1"])
