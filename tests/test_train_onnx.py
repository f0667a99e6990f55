"""ONNX export (tf2onnx) and the onnxruntime engine of predict and eval, against the
TensorFlow graph as the oracle.

Train dirs are tiny real ones (test_train_infer.make_train_dir: a model randomly initialised
with a fixed seed, saved by TF). Photos are the real JPEGs that scikit-learn and matplotlib
ship (china.jpg, flower.jpg, grace_hopper.jpg), cropped and re-encoded by Pillow into a folder
of 24 JPEGs and PNGs of several sizes.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ckptkit.errors import CkptError
from ckptkit.train.nets import Model
from test_train_infer import LABELS, MODELS, digit_images, make_train_dir

pytestmark = pytest.mark.tf
onnxruntime = pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

# max abs difference of probabilities, TF against onnxruntime, through the file path. TF's
# decode_jpeg (fast integer DCT) and Pillow's (accurate DCT) give pixels up to 16 grey levels
# apart on quality-95 RGB JPEGs of the photos (mean 1.7), 3 on grayscale ones; measured on
# the photo folder below: at most 0.035 (lenet), 0.002 (cifarnet). PNGs: 1e-5.
FILE_PATH_TOLERANCE = 0.05


def photos():
    """The real photos that installed packages ship, as uint8 RGB arrays."""
    import matplotlib
    import sklearn.datasets
    from PIL import Image

    paths = [Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
             Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
             Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """24 image files cut from the photos: JPEG (quality 95 and 70) and PNG, RGB, gray and
    RGBA, sizes from 31x40 to 320x300."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    for i in range(24):
        photo = photos()[i % 3]
        h, w = rng.integers(31, 321), rng.integers(31, 321)
        top, left = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
        image = Image.fromarray(photo[top:top + h, left:left + w])
        kind = ("jpg95", "jpg70", "png", "gray.png", "gray.jpg", "rgba.png")[i % 6]
        if kind.startswith("gray"):
            image = image.convert("L")
        if kind == "rgba.png":
            image.putalpha(200)
        name = folder / f"photo{i:02d}.{kind.rpartition('.')[2][:3]}"
        image.save(name, quality=95 if kind == "jpg95" else 70)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tf):
    """{net: (train dir, export dir, export()'s answer)}: lenet (gray) and cifarnet (RGB, a
    hidden layer), each exported with --format onnx."""
    from ckptkit.train.export import export

    out = {}
    for net, model in MODELS.items():
        root = tmp_path_factory.mktemp(net)
        make_train_dir(tf, root / "run", model, seed=5)
        out[net] = root / "run", root / "out", export(root / "run", root / "out",
                                                      format="onnx")
    return out


def test_layout_export_json_and_the_run_copy(runs):
    run, out, info = runs["cifarnet"]
    assert sorted(os.listdir(out)) == ["export.json", "labels.txt", "model.onnx"]
    written = json.loads((out / "export.json").read_text())
    assert {k: info[k] for k in written} == written
    assert written["onnx"] == {
        "file": "model.onnx", "opset": 17, "input": "images",
        "input_format": "uint8 [n, height, width, channels]: one batch of one size, 1 (gray), "
                        "2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels",
        "outputs": ["probabilities", "classes", "labels", "logits"]}
    assert {"tf2onnx", "onnx", "tensorflow", "ckptkit"} <= set(written["versions"])
    assert written["preprocessing"] == "cifarnet" and written["image_size"] == 32
    assert "saved_model" not in written and "frozen_graph" not in written
    # the train dir's own copy, where predict and eval look
    assert sorted(os.listdir(run / "onnx")) == ["export.json", "labels.txt", "model.onnx"]
    assert (run / "onnx" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert not [n for n in os.listdir(run) if n.startswith(".onnx")]


@pytest.mark.parametrize("net", sorted(MODELS))
def test_onnxruntime_alone_equals_tensorflow_on_decoded_pixels(runs, net):
    """The exported file, loaded by onnxruntime with nothing of ckptkit, against the TF
    Classifier on the same uint8 arrays: gray, gray + alpha, RGB, RGBA, several sizes."""
    from ckptkit.train.infer import Classifier

    run, out, _ = runs[net]
    gray, rgb = digit_images()
    alpha = np.full_like(rgb[:, :, :1], 128)
    batches = [np.stack(gray), rgb[None], np.concatenate([rgb, alpha], axis=2)[None],
               np.concatenate([gray[0], alpha[:28, :28]], axis=2)[None],
               *[p[None, 100:260, 50:250] for p in photos()]]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["images"]
    with Classifier(run) as clf:
        for batch in batches:
            probabilities, classes, labels, logits = session.run(None, {"images": batch})
            expected = clf.probabilities(batch)
            np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
            np.testing.assert_allclose(logits, clf.probabilities(batch, output="logits"),
                                       atol=1e-4, rtol=1e-5)
            assert classes.tolist() == np.argmax(expected, axis=1).tolist()
            assert [str(x) for x in labels] == [LABELS[i] for i in classes]


@pytest.mark.parametrize("net", sorted(MODELS))
def test_the_file_path_agrees_on_every_photo(runs, photo_folder, net):
    from ckptkit.train.infer import Classifier, image_files
    from ckptkit.train.onnx_engine import OnnxClassifier

    run, out, _ = runs[net]
    paths = image_files([photo_folder])
    assert len(paths) == 24
    with Classifier(run) as tf_clf, OnnxClassifier(out) as onnx_clf:
        by_tf = tf_clf.predict_files(paths, top_k=3)
        by_onnx = onnx_clf.predict_files(paths, top_k=3)
    worst = 0.0
    for a, b in zip(by_tf, by_onnx):
        assert a["path"] == b["path"] and "error" not in a and "error" not in b
        assert a["top"][0]["index"] == b["top"][0]["index"], a["path"]
        pa = {t["index"]: t["probability"] for t in a["top"]}
        pb = {t["index"]: t["probability"] for t in b["top"]}
        worst = max(worst, max(abs(pa[k] - pb[k]) for k in pa))
        if not a["path"].endswith(".jpg"):     # PNG is lossless: the same pixels
            assert max(abs(pa[k] - pb[k]) for k in pa) <= 1e-5, a["path"]
    assert worst <= FILE_PATH_TOLERANCE


def test_predict_and_eval_run_without_tensorflow(no_tf, runs, photo_folder, tmp_path, tf):
    """predict and eval --engine onnx (and auto) where importing TensorFlow fails, against
    the TF engine in this process."""
    from ckptkit.train.evaluate import evaluate
    from ckptkit.train.infer import Classifier, image_files

    run, _, _ = runs["cifarnet"]
    for engine in ("onnx", "auto"):
        done = no_tf("predict", "--train-dir", run, photo_folder, "--engine", engine,
                     "--json", "--top-k", "3")
        assert done.returncode == 0, done.stderr
        assert done.stderr == "engine: onnxruntime\n"
    got = json.loads(done.stdout)
    with Classifier(run) as clf:
        expected = clf.predict_files(image_files([photo_folder]), top_k=3)
    assert [g["path"] for g in got] == [e["path"] for e in expected]
    assert [g["top"][0]["index"] for g in got] == [e["top"][0]["index"] for e in expected]

    # eval on a labelled folder of photos: class folders named as the run's labels
    data = tmp_path / "data"
    for i, path in enumerate(image_files([photo_folder])):
        (data / LABELS[i % 3]).mkdir(parents=True, exist_ok=True)
        (data / LABELS[i % 3] / Path(path).name).write_bytes(Path(path).read_bytes())
    done = no_tf("eval", "--train-dir", run, "--data", data, "--engine", "onnx", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "engine: onnxruntime\n"
    by_onnx = json.loads(done.stdout)
    by_tf = evaluate(run, data_path=data, engine="tf")
    assert by_onnx["engine"] == "onnx" and by_tf["engine"] == "tf"
    assert by_onnx["count"] == by_tf["count"] == 24
    assert by_onnx["confusion"] == by_tf["confusion"]
    assert by_onnx["accuracy"] == by_tf["accuracy"]
    assert by_onnx["loss"] == pytest.approx(by_tf["loss"], abs=1e-3)


def test_engine_choice(ckptkit, runs, photo_folder, tmp_path, tf):
    """auto takes the export only when it is of the checkpoint TF would restore; onnx says
    why it cannot; tf is TF."""
    import shutil

    source, _, _ = runs["lenet"]
    photo = photo_folder / "photo00.jpg"
    code, _, err = ckptkit("predict", "--train-dir", source, photo, "--engine", "tf")
    assert code == 0 and err == "engine: TensorFlow\n"

    fresh = tmp_path / "fresh"
    make_train_dir(tf, fresh, MODELS["lenet"])
    code, _, err = ckptkit("predict", "--train-dir", fresh, photo)
    assert code == 0 and err == "engine: TensorFlow\n"        # no export: nothing to say
    code, _, err = ckptkit("predict", "--train-dir", fresh, photo, "--engine", "onnx")
    assert code == 2 and err == (
        f"ckptkit: error: {fresh}: --engine onnx: no ONNX export (make one with `ckptkit "
        f"export --train-dir {fresh} -o DIR --format onnx`)\n")

    stale = tmp_path / "stale"
    shutil.copytree(source, stale)
    newer = make_train_dir(tf, stale, MODELS["lenet"], seed=9, step=7)
    code, _, err = ckptkit("predict", "--train-dir", stale, photo)
    exported = json.loads((stale / "onnx" / "export.json").read_text())["checkpoint"]
    why = f"the ONNX export is of {exported}, not of {newer} (export again with --format onnx)"
    assert code == 0 and err == f"note: running on TensorFlow: {why}\nengine: TensorFlow\n"
    code, _, err = ckptkit("predict", "--train-dir", stale, photo, "--engine", "onnx")
    assert code == 2 and err == f"ckptkit: error: {stale}: --engine onnx: {why}\n"


def test_restart_removes_the_run_export(runs, tmp_path):
    import shutil

    from ckptkit.train.rundir import RunDir

    run = tmp_path / "run"
    shutil.copytree(runs["lenet"][0], run)
    assert RunDir(run).discard()
    assert not (run / "onnx").exists()


def test_bad_images_are_named_by_the_onnx_engine(runs, tmp_path):
    from ckptkit.train.onnx_engine import OnnxClassifier

    _, out, _ = runs["lenet"]
    good = tmp_path / "good.png"
    from PIL import Image

    Image.fromarray(digit_images()[1]).save(good)
    files = {"truncated.png": good.read_bytes()[:200], "text.jpg": b"hello, world\n" * 20,
             "empty.png": b"", "tiff.png": b"II*\0" + bytes(100)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [good, *[tmp_path / n for n in files], tmp_path / "missing.png"]
    with OnnxClassifier(out) as clf:
        results = clf.predict_files(paths)
    assert "top" in results[0]
    assert [r.get("error") for r in results[1:]] == [
        "cannot decode: truncated PNG", "cannot decode: not an image (text)", "empty file",
        "cannot decode: a TIFF file; images are read as JPEG, PNG, GIF, BMP or WebP",
        "cannot read: No such file or directory"]


def test_export_of_a_checkpoint_without_a_train_dir(tf, tmp_path):
    """export --net NET --checkpoint CKPT: the net's own classifier, every variable restored;
    a checkpoint that lacks one is refused before anything is written."""
    from ckptkit.train.export import export_checkpoint
    from ckptkit.train.onnx_engine import OnnxClassifier

    model = Model("lenet", num_classes=10, keep_head=True)
    prefix = make_train_dir(tf, tmp_path / "ckpt", model, seed=2)
    info = export_checkpoint("lenet", prefix, tmp_path / "out", format="all")
    assert sorted(os.listdir(tmp_path / "out")) == [
        "export.json", "frozen_graph.pb", "labels.txt", "model.onnx", "saved_model"]
    assert info["labels"] == [str(i) for i in range(10)] and info["num_classes"] == 10
    gray, _ = digit_images()
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 28, 28, 1])
        logits, _ = model.build(images, is_training=False)
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, prefix)
            expected = sess.run(tf.nn.softmax(logits),
                                {images: (np.stack(gray).astype(np.float32) - 128) / 128})
    with OnnxClassifier(tmp_path / "out") as clf:
        np.testing.assert_allclose(clf.probabilities(np.stack(gray)), expected, atol=1e-5)

    lenet5 = make_train_dir(tf, tmp_path / "five", Model("lenet", num_classes=5), seed=2)
    with pytest.raises(CkptError, match="fc4|Logits|missing|shape"):
        export_checkpoint("lenet", lenet5, tmp_path / "refused", format="onnx")
    assert not (tmp_path / "refused").exists()


def test_an_op_tf2onnx_cannot_convert_is_named(tf, tmp_path):
    from ckptkit.train.export import export

    (tmp_path / "oddnet.py").write_text(
        "from ckptkit.tfcompat import slim, tf\n\n\n"
        "def oddnet(images, num_classes=3, is_training=True, scope='Odd'):\n"
        "    with tf.variable_scope(scope):\n"
        "        net = tf.math.igamma(tf.abs(images) + 1.0, tf.abs(images) + 2.0)\n"
        "        net = slim.conv2d(net, 4, [3, 3], scope='conv1')\n"
        "        net = tf.reduce_mean(net, axis=[1, 2])\n"
        "        if not num_classes:\n"
        "            return net, {}\n"
        "        return slim.fully_connected(net, num_classes, activation_fn=None,\n"
        "                                    scope='logits'), {}\n\n\n"
        "oddnet.default_image_size = 16\n")
    model = Model(f"{tmp_path / 'oddnet.py'}:oddnet", num_classes=3)
    make_train_dir(tf, tmp_path / "run", model)
    with pytest.raises(CkptError, match=r"tf2onnx cannot convert op Igamma \("):
        export(tmp_path / "run", tmp_path / "out", format="onnx")
    assert not (tmp_path / "out").exists() and not (tmp_path / "run" / "onnx").exists()


# one net of each family the zoo builds (the others differ in depth or width only)
FAMILIES = ["alexnet_v2", "vgg_16", "resnet_v1_50", "resnet_v2_50", "inception_v1",
            "inception_v2", "inception_v3", "inception_v4", "inception_resnet_v2",
            "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "nasnet_mobile",
            "pnasnet_mobile", "overfeat"]


@pytest.mark.parametrize("net", FAMILIES)
def test_every_family_exports_with_parity(tf, tmp_path, photo_folder, net):
    """Each family's ONNX model (new 3-class head, random weights saved by TF) against the
    TF graph on the photos' decoded pixels: probabilities within 1e-5, the same top-1."""
    from ckptkit.train.export import export
    from ckptkit.train.infer import Classifier, image_files
    from ckptkit.train.onnx_engine import OnnxClassifier, decode

    make_train_dir(tf, tmp_path / "run", Model(net, num_classes=3), seed=11)
    export(tmp_path / "run", tmp_path / "out", format="onnx")
    images = [decode(Path(p).read_bytes()) for p in image_files([photo_folder])[:6]]
    with Classifier(tmp_path / "run") as tf_clf, OnnxClassifier(tmp_path / "out") as clf:
        expected, got = tf_clf.probabilities(images), clf.probabilities(images)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.argmax(got, axis=1).tolist() == np.argmax(expected, axis=1).tolist()


def test_a_missing_extra_is_named(without, runs, photo_folder, tmp_path):
    """Without onnxruntime: --engine onnx says which extra, auto runs on TensorFlow; without
    tf2onnx, export --format onnx says so before TensorFlow loads."""
    run, _, _ = runs["lenet"]
    photo = photo_folder / "photo00.jpg"
    done = without(("onnxruntime",), "predict", "--train-dir", run, photo, "--engine", "onnx")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"ckptkit: error: {run}: --engine onnx: the ONNX engine needs "
                           "onnxruntime: pip install 'ckptkit[onnx]'\n")
    done = without(("onnxruntime",), "predict", "--train-dir", run, photo)
    assert done.returncode == 0
    assert done.stderr.splitlines()[-2:] == [
        "note: running on TensorFlow: the ONNX engine needs onnxruntime: pip install "
        "'ckptkit[onnx]'", "engine: TensorFlow"]
    done = without(("tf2onnx", "tensorflow"), "export", "--train-dir", run, "-o",
                   tmp_path / "out", "--format", "onnx")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "ckptkit: error: ONNX export needs tf2onnx: pip install " \
                          "'ckptkit[onnx]'\n"
    assert not (tmp_path / "out").exists()


def test_a_new_export_replaces_the_run_copy_and_leaves_no_temp(tmp_path):
    from ckptkit.train.export import _share

    run_onnx = tmp_path / "run" / "onnx"
    run_onnx.parent.mkdir()
    for generation in ("old", "new"):
        out = tmp_path / generation
        out.mkdir()
        for name in ("model.onnx", "labels.txt", "export.json"):
            (out / name).write_text(generation)
        _share(str(out), str(run_onnx))
        assert (run_onnx / "model.onnx").read_text() == generation
        assert os.listdir(tmp_path / "run") == ["onnx"]
