"""Classifier and inference_graph against a hand-built graph on real encoded images.

Train dirs are tiny real ones: a Model built in a fresh graph, randomly initialised with a
fixed seed and saved by tf.train.Saver; images are scikit-learn's 8x8 digits, upscaled and
encoded by TF (PNG grayscale, JPEG RGB, sizes other than the net's).
"""
import numpy as np
import pytest

from ckptkit.errors import CkptError, NotFound
from ckptkit.train.nets import Model
from ckptkit.train.rundir import RunDir
from helpers.models import save_random

pytestmark = pytest.mark.tf
LABELS = ["a", "b", "c"]
MODELS = {"lenet": Model("lenet", num_classes=3, hidden=()),
          "cifarnet": Model("cifarnet", num_classes=3, hidden=(16,))}


def make_train_dir(tf, path, model, seed=0, step=0, prefix=None):
    """Save a randomly initialised `model` as a train dir at `path`; returns the prefix."""
    run = RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    saved = save_random(tf, model, prefix or run.prefix, seed, step=step)
    run.write_json("run.json", {"model": model.to_json()})
    run.write_labels(LABELS)
    return saved


def digit_images():
    """uint8 digits: five 28x28 grayscale [28, 28, 1], one 40x36 RGB [40, 36, 3]."""
    from sklearn.datasets import load_digits

    digits = load_digits().images     # 0..16 floats, 8x8
    gray = [np.kron(digits[i], np.ones((4, 4)))[2:30, 2:30] for i in range(5)]
    gray = [(g * 255 / 16).astype(np.uint8)[:, :, None] for g in gray]
    big = np.kron(digits[7], np.ones((5, 5)))[:, 2:38] * 255 / 16
    rgb = np.stack([big, big[::-1], 255 - big], axis=-1).astype(np.uint8)
    return gray, rgb


@pytest.fixture(scope="session")
def image_files(tmp_path_factory, tf):
    """Encoded image files: 0-4 PNG grayscale 28x28, 5 JPEG RGB 40x36, 6 PNG RGB 40x36."""
    gray, rgb = digit_images()
    folder = tmp_path_factory.mktemp("images")
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = sess.run([tf.io.encode_png(g) for g in gray] +
                           [tf.io.encode_jpeg(rgb, quality=90), tf.io.encode_png(rgb)])
    paths = []
    for i, data in enumerate(encoded):
        path = folder / f"img{i}.{'jpg' if i == 5 else 'png'}"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def train_dirs(tmp_path_factory, tf):
    """{net: train dir} with one checkpoint each (step 0)."""
    out = {}
    for name, model in MODELS.items():
        path = tmp_path_factory.mktemp(name)
        make_train_dir(tf, path, model)
        out[name] = path
    return out


def reference_probabilities(tf, model, prefix, paths):
    """Probabilities by a graph built here: decode one file, preprocess, build, restore."""
    from ckptkit.train.nets import preprocess

    with tf.Graph().as_default():
        contents = tf.placeholder(tf.string, [])
        image = tf.io.decode_image(contents, channels=0, expand_animations=False)
        image = preprocess(model.record, image, is_training=False)
        logits, _ = model.build(image[None], is_training=False)
        probs = tf.nn.softmax(logits)[0]
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, prefix)
            return np.stack([sess.run(probs, {contents: p.read_bytes()}) for p in paths])


@pytest.mark.parametrize("net", sorted(MODELS))
def test_predict_files_matches_a_hand_built_graph(tf, train_dirs, image_files, net):
    from ckptkit.train.infer import Classifier

    run = RunDir(train_dirs[net])
    expected = reference_probabilities(tf, MODELS[net], run.latest_checkpoint(), image_files)
    with Classifier(train_dirs[net]) as clf:
        assert clf.labels == LABELS and clf.checkpoint == run.latest_checkpoint()
        results = clf.predict_files(image_files, top_k=2, batch_size=4)   # two batches
        full = clf.predict_files(image_files, top_k=10, batch_size=1)
        batched = clf.predict_files(image_files, top_k=3)
    assert [r["path"] for r in results] == [str(p) for p in image_files]
    for result, row, every, together in zip(results, expected, full, batched):
        assert "error" not in result and len(result["top"]) == 2 and len(every["top"]) == 3
        probs = [t["probability"] for t in result["top"]]
        assert probs == sorted(probs, reverse=True)
        assert sum(t["probability"] for t in every["top"]) == pytest.approx(1.0, abs=1e-5)
        got = np.zeros(3)
        for t in every["top"]:
            assert t["label"] == LABELS[t["index"]]
            got[t["index"]] = t["probability"]
        np.testing.assert_allclose(got, row, atol=1e-6)
        # batched matmuls sum in another order (oneDNN): equal up to float32 rounding
        np.testing.assert_allclose([t["probability"] for t in together["top"]],
                                   got[[t["index"] for t in together["top"]]], atol=1e-5)
        assert result["top"][0]["index"] == int(np.argmax(row))
    # not all the same answer: the images and the weights matter
    assert len({tuple(np.round(r, 4)) for r in expected}) > 1


def test_probabilities_of_arrays_match_the_files(tf, train_dirs, image_files):
    from ckptkit.train.infer import Classifier

    gray, rgb = digit_images()
    with Classifier(train_dirs["cifarnet"]) as clf:
        by_file = clf.probabilities_of_bytes([p.read_bytes() for p in image_files[:5]])
        batch = clf.probabilities(np.stack(gray))
        mixed = clf.probabilities([gray[0], rgb, gray[1][:, :, 0]])   # sizes and channels mix
        png_rgb = clf.probabilities_of_bytes([image_files[6].read_bytes()])
        with pytest.raises(CkptError, match="uint8"):
            clf.probabilities(np.zeros([1, 28, 28, 1], np.float32))
    assert batch.shape == (5, 3)
    np.testing.assert_allclose(batch, by_file, atol=1e-6)   # PNG is lossless
    np.testing.assert_allclose(mixed[[0, 2]], batch[:2], atol=1e-6)
    np.testing.assert_allclose(mixed[1], png_rgb[0], atol=1e-6)


def test_bad_files_give_error_entries(tf, train_dirs, image_files, tmp_path):
    from ckptkit.train.infer import Classifier

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(image_files[0].read_bytes()[:40])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    png = bytearray(image_files[0].read_bytes())
    png[40:48] = b"\xff" * 8                      # inside the image data; IEND intact
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(bytes(png))
    paths = [image_files[0], corrupt, tmp_path / "missing.png", text, empty, image_files[1],
             damaged]
    with Classifier(train_dirs["lenet"]) as clf:
        good = clf.predict_files([image_files[0], image_files[1]], batch_size=1)
        results = clf.predict_files(paths)
        with pytest.raises(CkptError, match="top_k"):
            clf.predict_files(paths, top_k=0)
    assert [sorted(r) for r in results] == [["path", "top"]] + [["error", "path"]] * 4 + \
        [["path", "top"]] + [["error", "path"]]
    assert results[0]["top"] == good[0]["top"] and results[5]["top"] == good[1]["top"]
    assert "cannot read" in results[2]["error"] and results[4]["error"] == "empty file"
    for r in (results[1], results[3], results[6]):
        assert r["error"].startswith("cannot decode") and "\n" not in r["error"]
    assert results[1]["error"] == "cannot decode: truncated PNG"
    assert results[3]["error"] == "cannot decode: not an image (text)"
    # TF's own words, without the graph context TF 2 puts first
    assert results[6]["error"].startswith("cannot decode: corrupt PNG (")
    assert "Graph execution error" not in results[6]["error"]


def test_best_checkpoint_preferred(tf, tmp_path, image_files):
    """best/ wins over the latest unless best=False; an explicit checkpoint wins over both."""
    from ckptkit.train.infer import Classifier

    model = MODELS["lenet"]
    latest = make_train_dir(tf, tmp_path, model, seed=1, step=5)
    (tmp_path / "best").mkdir()
    best = make_train_dir(tf, tmp_path, model, seed=2, step=3,
                          prefix=str(tmp_path / "best" / "model.ckpt"))
    probs = {}
    for key, kwargs in [("best", {}), ("latest", {"best": False}),
                        ("explicit", {"checkpoint": latest})]:
        with Classifier(tmp_path, **kwargs) as clf:
            probs[key] = (clf.checkpoint, clf.probabilities_of_bytes([image_files[0].read_bytes()]))
    assert probs["best"][0] == best and probs["latest"][0] == latest == probs["explicit"][0]
    np.testing.assert_array_equal(probs["latest"][1], probs["explicit"][1])
    assert not np.allclose(probs["best"][1], probs["latest"][1])
    np.testing.assert_allclose(
        probs["best"][1], reference_probabilities(tf, model, best, image_files[:1]), atol=1e-6)


def test_clear_errors(tf, tmp_path, train_dirs):
    from ckptkit.train.infer import Classifier

    with pytest.raises(NotFound, match="not a ckptkit train dir"):
        Classifier(tmp_path)
    run = RunDir(tmp_path)
    run.write_json("run.json", {"model": MODELS["lenet"].to_json()})
    run.write_labels(LABELS)
    with pytest.raises(CkptError, match="no checkpoint"):
        Classifier(tmp_path)
    # a checkpoint of another model: one line naming it
    other = RunDir(train_dirs["cifarnet"]).latest_checkpoint()
    with pytest.raises(CkptError, match="cannot restore") as info:
        Classifier(tmp_path, checkpoint=other)
    assert "\n" not in str(info.value)


def test_inference_graph_names(tf):
    from ckptkit.train.infer import inference_graph

    with tf.Graph().as_default():
        first = inference_graph(MODELS["lenet"], inputs="bytes")
        second = inference_graph(MODELS["lenet"], inputs="arrays", scope="arrays")
        assert {k: t.name for k, t in first.items()} == {
            "input": "input:0", "logits": "logits:0", "probabilities": "probabilities:0",
            "classes": "classes:0"}
        assert second["probabilities"].name == "arrays/probabilities:0"
        assert first["input"].dtype == tf.string and second["input"].dtype == tf.uint8
        assert len(tf.global_variables()) == 8      # shared: conv1-2, fc3, Logits
        with pytest.raises(CkptError, match="inputs"):
            inference_graph(MODELS["lenet"], inputs="floats")


def test_image_files_expands_folders_and_keeps_files_as_given(tmp_path):
    from ckptkit.train import infer

    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("a/2.PNG", "a/deep/1.jpg", "a/notes.txt", "a/.dot.png", "a/.hidden/3.png",
                 "x.bin"):
        (tmp_path / name).write_bytes(b"")
    assert infer.image_files([str(tmp_path / "x.bin"), str(tmp_path / "a")]) == [
        str(tmp_path / "x.bin"), str(tmp_path / "a" / "2.PNG"),
        str(tmp_path / "a" / "deep" / "1.jpg")]
    with pytest.raises(CkptError, match=r"empty: no images \(\.jpg \.jpeg \.png \.bmp "):
        infer.image_files([str(tmp_path / "empty")])
    with pytest.raises(CkptError, match=r"absent\.png: no such file$"):
        infer.image_files([str(tmp_path / "absent.png")])
    # a missing file among others is classified as an error entry (predict_files), not fatal
    assert infer.image_files([str(tmp_path / "gone.png"), str(tmp_path / "x.bin")]) == [
        str(tmp_path / "gone.png"), str(tmp_path / "x.bin")]
    with pytest.raises(CkptError, match=r"a\.png, .*b\.png: no such files$"):
        infer.image_files([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
