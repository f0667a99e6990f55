"""`ckptkit port --to keras`: every family ported from a random-init checkpoint TensorFlow
wrote (batch norm statistics drawn too), certified against the tf_slim graph on real photos;
the other Keras backends; the saved model loading and training anywhere; a mapping broken on
purpose caught at the right end point; and the errors.

The port runs in processes of its own: TF1's graph mode (which the `tf` fixture switches on
for this process) and Keras 3 on TensorFlow cannot share one."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers.images import digits_folder
from helpers.port import certificate, run

pytestmark = pytest.mark.tf

# one net of each family (the others differ in depth or width, which the shapes give)
FAMILIES = ["lenet", "cifarnet", "alexnet_v2", "vgg_16", "overfeat", "resnet_v1_50",
            "resnet_v2_50", "inception_v1", "inception_v2", "inception_v3", "inception_v4",
            "inception_resnet_v2", "mobilenet_v1_050", "mobilenet_v2", "mobilenet_v3_small",
            "nasnet_mobile", "pnasnet_mobile"]
OTHER_BACKENDS = [(backend, net) for backend in ("jax", "torch")
                  for net in ("resnet_v1_50", "inception_v3", "mobilenet_v1_050")] + [
    ("torch", "nasnet_mobile")]       # strided "same" average pools: Slim.avg_pool's case


def python(code, *args, backend="tensorflow"):
    """Run `code` in a fresh process on a Keras backend; its stdout parsed as JSON."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("net", FAMILIES)
def test_every_family_ports_with_parity(checkpoints, photos, tmp_path, net):
    """The certificate passes on real photos: every end point compared and within 1e-4 of
    the oracle's scale, the same top-1 (and top-5) on every photo; the metadata names the
    checkpoint tensor of every weight."""
    out = tmp_path / f"{net}.keras"
    done = run("port", checkpoints(net), "--net", net, "-o", out, "--check", photos,
               check=True)
    report = certificate(out)
    assert report["passed"] and report["first_divergence"] is None
    assert report["top1_agreement"] == 1.0 and 0 <= report["top5_agreement"] <= 1
    assert report["inputs"][0] == 6 and len(report["end_points"]) >= 3
    assert all(f["pass"] for f in report["end_points"]) and report["logits"]["pass"]
    assert report["backend"] == "tensorflow"
    assert f"wrote {out}: {net}" in done.stdout
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(archive.read("metadata.json"))["ckptkit"]
    assert meta["net"] == net and meta["new_head"] is False
    assert None not in meta["weights"].values()
    assert sorted(meta["weights"].values()) == sorted(set(meta["weights"].values()))


LOAD = """
import json, sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps(np.asarray(keras.ops.convert_to_numpy(model(x))).tolist()))
"""


@pytest.mark.parametrize("backend, net", OTHER_BACKENDS)
def test_other_backends_certify_and_load(checkpoints, photos, tmp_path, backend, net):
    """On JAX and PyTorch the certificate passes too, and the .keras written on that
    backend gives, loaded on TensorFlow, the logits it gives on its own backend."""
    out = tmp_path / f"{net}.keras"
    run("port", checkpoints(net), "--net", net, "-o", out, "--check", photos,
        "--backend", backend, check=True)
    report = certificate(out)
    assert report["passed"] and report["backend"] == backend
    size = report["inputs"][1]
    channels = report["inputs"][3]
    x = np.random.default_rng(0).normal(0, 1, (2, size, size, channels)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    here = np.array(python(LOAD, out, tmp_path / "x.npy", backend=backend))
    there = np.array(python(LOAD, out, tmp_path / "x.npy", backend="tensorflow"))
    scale = max(np.abs(there).max(), 1.0)
    assert np.abs(here - there).max() <= 1e-4 * scale


FIT = """
import json, sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
head = [w for w in model.weights if w.path.endswith("kernel")][-1]
before = keras.ops.convert_to_numpy(head).copy()
rng = np.random.default_rng(0)
shape = (4, *model.input.shape[1:])
x, y = rng.normal(0, 1, shape).astype("float32"), np.arange(4) % model.output.shape[-1]
model.compile(keras.optimizers.SGD(0.01),
              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, epochs=1, batch_size=4, verbose=0)
print(json.dumps({"changed": float(np.abs(keras.ops.convert_to_numpy(head) - before).max()),
                  "path": head.path}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_a_ported_model_trains_on_every_backend(checkpoints, tmp_path, backend):
    """One Keras `fit` step changes the (new) head's weights, on each backend."""
    out = tmp_path / "lenet.keras"
    run("port", checkpoints("lenet"), "--net", "lenet", "-o", out, "--num-classes", "5",
        "--no-check", check=True)
    result = python(FIT, out, backend=backend)
    assert result["changed"] > 0 and result["path"].startswith("LeNet-fc4")


# how each break is made: (code before the port, code after it, the first end point to fail)
BREAKS = {
    "epsilon": ("ckptkit.port.nets.resnet.EPSILON = 1e-3", "", "resnet_v1_50/conv1"),
    "transposed-kernel": (
        "", "w = ported.model.get_layer('resnet_v1_50-block2-unit_1-bottleneck_v1-conv2')"
            ".kernel\nw.assign(np.swapaxes(keras.ops.convert_to_numpy(w), 0, 1))",
        "resnet_v1_50/block2/unit_1/bottleneck_v1"),
    "symmetric-padding": (
        "def pool(self, x, size, stride, padding='valid', scope=None):\n"
        "    if padding == 'same' and stride > 1:\n"
        "        x = keras.layers.ZeroPadding2D(size // 2)(x)\n"
        "    return keras.layers.MaxPooling2D(size, stride, padding='valid')(x)\n"
        "ckptkit.port.layers.Slim.max_pool = pool", "",
        "resnet_v1_50/block1/unit_1/bottleneck_v1"),
}
BROKEN = """
import json, sys, numpy as np, keras
import ckptkit.port.layers, ckptkit.port.nets.resnet
from ckptkit.paths import open_checkpoint
from ckptkit.plan import RestoreOptions
from ckptkit.port.certificate import certify, oracle_outputs
from ckptkit.port.keras import port_keras
checkpoint, photos, options = sys.argv[1], [sys.argv[2]], RestoreOptions()
first = {}
with open_checkpoint(checkpoint) as reader:
    classes = port_keras(reader, "resnet_v1_50", options).checkpoint_classes
    oracle = oracle_outputs("resnet_v1_50", classes, checkpoint, options, photos)
    for kind, (before, after) in json.loads(sys.argv[3]).items():
        saved = ckptkit.port.nets.resnet.EPSILON, ckptkit.port.layers.Slim.max_pool
        exec(before)
        ported = port_keras(reader, "resnet_v1_50", options)
        exec(after)
        ckptkit.port.nets.resnet.EPSILON, ckptkit.port.layers.Slim.max_pool = saved
        report = certify(ported, checkpoint, options, photos, oracle=oracle)
        first[kind] = None if report["passed"] else report["first_divergence"]
print(json.dumps(first))
"""


def test_a_broken_mapping_fails_where_it_breaks(checkpoints, photos):
    """A wrong epsilon, a kernel with height and width swapped, symmetric padding where TF
    pads after: the certificate fails, first at the layer that was broken."""
    breaks = {kind: [before, after] for kind, (before, after, _) in BREAKS.items()}
    first = python(BROKEN, checkpoints("resnet_v1_50"), photos / "photo0.png",
                   json.dumps(breaks))
    assert first == {kind: where for kind, (_, _, where) in BREAKS.items()}


def test_a_new_head_and_a_dropped_background(checkpoints, photos, tmp_path):
    """--num-classes N: a new N-class classifier, everything before it certified;
    --drop-background: 1000 classes, the logits equal the oracle's without class 0."""
    ckpt = checkpoints("resnet_v2_50")
    new, dropped = tmp_path / "new.keras", tmp_path / "dropped.keras"
    run("port", ckpt, "--net", "resnet_v2_50", "-o", new, "--num-classes", "5",
        "--check", photos / "photo1.png", check=True)
    report = certificate(new)
    assert report["passed"] and report["logits"].startswith("new head")
    run("port", ckpt, "--net", "resnet_v2_50", "-o", dropped, "--drop-background",
        "--check", photos / "photo1.png", check=True)
    report = certificate(dropped)
    assert report["passed"] and report["logits"]["pass"]
    metas = []
    for out in (new, dropped):
        with zipfile.ZipFile(out) as archive:
            metas.append(json.loads(archive.read("metadata.json"))["ckptkit"])
    assert [(m["num_classes"], m["label_offset"], m["new_head"]) for m in metas] == [
        (5, 0, True), (1000, 0, False)]
    head = {k: v for k, v in metas[0]["weights"].items() if "logits" in k}
    assert sorted(head.values(), key=str) == [None, None]
    assert metas[1]["weights"]["resnet_v2_50-logits/bias"] == "resnet_v2_50/logits/biases"


def test_a_failing_certificate_exits_1_and_writes_no_model(checkpoints, photos, tmp_path):
    """The CLI with a wrong epsilon slipped in: exit 1, the first divergence named, the
    certificate written, the model not."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import ckptkit.port.nets.resnet as r\nr.EPSILON = 1e-3\n")
    out = tmp_path / "m.keras"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", "from ckptkit.cli import main; main()",
                           "port", checkpoints("resnet_v1_50"), "--net", "resnet_v1_50",
                           "-o", out, "--check", photos / "photo0.png"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 1 and done.stdout == ""
    assert "ckptkit: error: the port differs from the tf_slim graph: first at " \
           "resnet_v1_50/conv1 (max abs difference" in done.stderr
    assert not out.exists() and certificate(out)["first_divergence"] == "resnet_v1_50/conv1"


def test_errors_are_one_line_and_write_nothing(checkpoints, tmp_path, without):
    ckpt = Path(checkpoints("lenet"))
    out = tmp_path / "m.keras"
    out.write_bytes(b"mine")
    link = tmp_path / "index.keras"
    link.symlink_to(ckpt.with_suffix(".ckpt.index"))
    user = tmp_path / "mynet.py"
    user.write_text("def net(images, num_classes=3, is_training=True, scope='Mine'):\n"
                    "    pass\n")
    cases = [
        (["-o", out], f"{out} exists; add --overwrite to replace it"),
        (["-o", link], f"{link} is a file this command reads; write elsewhere"),
        (["-o", tmp_path / "m.h5"], "a Keras 3 model is written as a .keras file"),
        (["-o", tmp_path / "n.keras", "--drop-background"],
         "lenet has none"),
        (["-o", tmp_path / "n.keras", "--net", f"{user}:net"], "has no Keras builder yet"),
        (["-o", tmp_path / "n.keras", "--num-classes", "3", "--keep-head"],
         "give either --keep-head or --num-classes"),
        (["-o", tmp_path / "n.keras", "--include-preprocessing", "--net", "cifarnet"],
         "cifarnet's preprocessing (per-image standardisation) has no built-in Keras layer"),
    ]
    for args, message in cases:
        net = [] if "--net" in args else ["--net", "lenet"]
        source = checkpoints("cifarnet") if "cifarnet" in args else ckpt
        done = run("port", source, *net, *map(str, args), "--no-check")
        assert done.returncode == 2 and done.stdout == "", done.stderr
        lines = [l for l in done.stderr.splitlines() if l.startswith("ckptkit: error: ")]
        assert len(lines) == 1 and message in lines[0], done.stderr
    assert out.read_bytes() == b"mine" and not (tmp_path / "n.keras").exists()
    done = without(["keras"], "port", ckpt, "--net", "lenet", "-o", tmp_path / "k.keras")
    assert (done.returncode, done.stderr) == (
        2, "ckptkit: error: porting needs Keras 3: pip install 'ckptkit[port]'\n")


PREDICT = """
import json, sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps({"dtype": model.input.dtype,
                  "logits": np.asarray(keras.ops.convert_to_numpy(model(x))).tolist()}))
"""


@pytest.mark.parametrize("net, scale, offset", [
    ("inception_v1", 1 / 127.5, -1.0), ("lenet", 1 / 128, -1.0),
    ("vgg_16", 1.0, -np.array([123.68, 116.78, 103.94]))])
def test_include_preprocessing_takes_uint8(checkpoints, tmp_path, net, scale, offset):
    """--include-preprocessing: uint8 images in, the net's scaling inside: the same logits
    as the plain port on the scaled floats; bare --check certifies on the built-in set."""
    plain, inside = tmp_path / "plain.keras", tmp_path / "inside.keras"
    run("port", checkpoints(net), "--net", net, "-o", plain, "--check", check=True)
    assert certificate(plain)["images"].startswith("built-in set of 4 synthetic images")
    run("port", checkpoints(net), "--net", net, "-o", inside, "--include-preprocessing",
        "--no-check", check=True)
    rng = np.random.default_rng(3)
    size, channels = (28, 1) if net == "lenet" else (224, 3)
    pixels = rng.integers(0, 256, (2, size, size, channels)).astype(np.uint8)
    np.save(tmp_path / "u8.npy", pixels)
    np.save(tmp_path / "f32.npy", (pixels * scale + offset).astype(np.float32))
    got = python(PREDICT, inside, tmp_path / "u8.npy")
    expected = python(PREDICT, plain, tmp_path / "f32.npy")
    assert got["dtype"] == "uint8"
    np.testing.assert_allclose(got["logits"], expected["logits"], rtol=1e-5,
                               atol=1e-5 * np.abs(expected["logits"]).max())


# net -> (image size, colour, the last end point before the new head that TF names)
RUNS = {"lenet": (32, False, "fc3"), "resnet_v1_50": (64, True, "resnet_v1_50/block4")}


@pytest.fixture(scope="module")
def finetuned(tf, tmp_path_factory):
    """net -> (train dir, data folder) of a real `ckptkit finetune` run of `net` (RUNS) on
    digits 5-7 (8 training and 4 validation PNGs each), one epoch from scratch, with a new
    head in scope "Head" holding a hidden layer and dropout."""
    from ckptkit.train.finetune import finetune
    from ckptkit.train.settings import Settings

    made = {}

    def get(net):
        if net not in made:
            size, rgb, _ = RUNS[net]
            root = tmp_path_factory.mktemp(f"finetuned_{net}")
            digits_folder(root / "digits" / "train", range(5, 8), 8, size=size, rgb=rgb)
            digits_folder(root / "digits" / "val", range(5, 8), 4, offset=8, size=size,
                          rgb=rgb)
            finetune(Settings(net=net, data=str(root / "digits"), train_dir=str(root / "run"),
                              epochs=1, image_size=size, hidden=(16,), dropout=0.5,
                              head_scope="Head", batch_size=8, optimizer="adam", lr=1e-3,
                              augment=False))
            made[net] = root / "run", root / "digits"
        return made[net]
    return get


@pytest.mark.parametrize("net", sorted(RUNS))
def test_a_finetune_run_ports_with_its_head(tf, finetuned, tmp_path, net):
    """`port TRAIN_DIR`: the run's net, image size and head from run.json, certified end
    point by end point and on the logits; the Keras logits are those `predict`'s TensorFlow
    classifier gives for the same images; the class names are in the metadata."""
    from PIL import Image

    from ckptkit.train.infer import Classifier
    from ckptkit.train.oracle import preprocessed
    from ckptkit.train.rundir import RunDir

    (run_dir, data), (size, rgb, features) = finetuned(net), RUNS[net]
    out = tmp_path / "run.keras"
    done = run("port", run_dir, "-o", out, "--check", data / "val", check=True)
    assert f"wrote {out}: {net}, 3 classes" in done.stdout
    report = certificate(out)
    assert report["passed"] and report["logits"]["pass"] and report["top1_agreement"] == 1.0
    assert report["inputs"] == [12, size, size, 3 if rgb else 1]
    names = [f["name"] for f in report["end_points"]]
    assert len(names) >= 4 and names[-2:] == [features, "PreLogits"]
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(archive.read("metadata.json"))["ckptkit"]
    assert (meta["class_names"], meta["num_classes"], meta["image_size"], meta["new_head"]) \
        == (["5", "6", "7"], 3, size, False)
    assert meta["run_model"]["head_scope"] == "Head" and meta["run_model"]["hidden"] == [16]
    assert None not in meta["weights"].values()
    assert {k: v for k, v in meta["weights"].items() if k.startswith("Head")} == {
        "Head-hidden_1/kernel": "Head/hidden_1/weights",
        "Head-hidden_1/bias": "Head/hidden_1/biases",
        "Head/kernel": "Head/weights", "Head/bias": "Head/biases"}
    files = sorted((data / "val").rglob("*.png"))
    pixels = [np.asarray(Image.open(f)) for f in files]
    pixels = [p if rgb else p[..., None] for p in pixels]
    with Classifier(run_dir, best=False) as classifier:
        expected = classifier.probabilities(np.stack(pixels), output="logits")
    np.save(tmp_path / "x.npy", preprocessed(RunDir(run_dir).model().record, pixels))
    got = np.array(python(LOAD, out, tmp_path / "x.npy"))
    assert np.abs(got - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1.0)
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_a_run_port_takes_best_and_refuses_what_contradicts_the_run(finetuned, tmp_path):
    """TRAIN_DIR/best ports the best checkpoint; --net or --num-classes against run.json,
    and a run of the user's own net, are one-line errors."""
    from ckptkit.train.rundir import RunDir

    run_dir, _ = finetuned("lenet")
    done = run("port", run_dir / "best", "-o", tmp_path / "best.keras", "--no-check",
               check=True)
    assert "lenet, 3 classes" in done.stdout
    user = tmp_path / "user"
    user.mkdir()
    prefix = Path(RunDir(run_dir).latest_checkpoint())
    for f in prefix.parent.glob(prefix.name + ".*"):
        (user / f.name).write_bytes(f.read_bytes())
    (user / "run.json").write_text(json.dumps(
        {"model": {"net": f"{tmp_path}/mynet.py:net", "num_classes": 3}}))
    (user / "labels.txt").write_text("0:a\n1:b\n2:c\n")
    cases = [
        (run_dir, ["--net", "cifarnet"],
         f"--net cifarnet: {run_dir} trains lenet (its run.json); leave --net out"),
        (run_dir, ["--num-classes", "4"],
         f"{run_dir} trains 3 classes (its run.json); leave --num-classes out"),
        (user / prefix.name, [], f"{user} trains your own net {tmp_path}/mynet.py:net, "
                                 "which has no Keras builder: only the zoo's nets port"),
    ]
    for source, args, message in cases:
        done = run("port", source, "-o", tmp_path / "n.keras", *args, "--no-check")
        assert (done.returncode, done.stdout, done.stderr) == (
            2, "", f"ckptkit: error: {message}\n")
    assert not (tmp_path / "n.keras").exists()
