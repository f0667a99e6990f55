"""export: the SavedModel (both signatures) and the frozen graph give the Classifier's
probabilities; a refused or failed export leaves nothing behind."""
import json
import os

import numpy as np
import pytest

from ckptkit.errors import CkptError
from test_train_infer import LABELS, MODELS, digit_images, make_train_dir

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tf):
    """(train dir, export dir, export()'s answer, encoded images, Classifier probabilities)
    of the cifarnet model: 3 channels, a hidden layer."""
    from ckptkit.train.export import export
    from ckptkit.train.infer import Classifier

    root = tmp_path_factory.mktemp("export")
    make_train_dir(tf, root / "run", MODELS["cifarnet"], seed=3)
    gray, rgb = digit_images()
    with tf.Graph().as_default(), tf.Session() as sess:
        encoded = sess.run([tf.io.encode_png(g) for g in gray] + [tf.io.encode_jpeg(rgb)])
    with Classifier(root / "run") as clf:
        expected = clf.probabilities_of_bytes(encoded)
        arrays = clf.probabilities(np.stack(gray))
    np.testing.assert_allclose(arrays, expected[:5], atol=1e-5)
    info = export(root / "run", root / "out")
    return root / "run", root / "out", info, encoded, expected


def test_layout_and_export_json(exported):
    _, out, info, _, _ = exported
    assert sorted(os.listdir(out)) == ["export.json", "frozen_graph.pb", "labels.txt",
                                       "saved_model"]
    assert not [n for n in os.listdir(out.parent) if n.startswith(".out.tmp")]
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask      # mkdir's, not mkdtemp's 0700
    assert (out / "saved_model" / "assets" / "labels.txt").read_text() == \
        (out / "labels.txt").read_text() == "0:a\n1:b\n2:c\n"
    written = json.loads((out / "export.json").read_text())
    assert {k: info[k] for k in written} == written
    assert sorted(info["files"]) == sorted(str(out / n) for n in os.listdir(out))
    assert written["net"] == "cifarnet" and written["image_size"] == 32
    # the size the model takes, not run.json's 0 ("the net's own")
    assert written["model"]["image_size"] == 32 and MODELS["cifarnet"].image_size == 0
    assert written["labels"] == LABELS and written["num_classes"] == 3
    assert written["frozen_graph"]["input"] == "input:0"
    assert written["frozen_graph"]["outputs"]["probabilities"] == "probabilities:0"
    signatures = written["saved_model"]["signatures"]
    assert sorted(signatures) == ["predict_arrays", "serving_default"]
    assert list(signatures["serving_default"]["inputs"]) == ["image_bytes"]
    assert sorted(signatures["predict_arrays"]["outputs"]) == ["classes", "labels",
                                                               "probabilities"]
    assert signatures["serving_default"]["outputs"]["labels"] == "labels:0"
    assert written["frozen_graph"]["outputs"]["labels"] == "labels:0"


def test_saved_model_signatures_match_the_classifier(tf, exported):
    _, out, _, encoded, expected = exported
    gray, _ = digit_images()
    with tf.Graph().as_default() as graph, tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, ["serve"], str(out / "saved_model"))
        run = {}
        for key, feed in [("serving_default", np.array(encoded, dtype=object)),
                          ("predict_arrays", np.stack(gray))]:
            sig = meta.signature_def[key]
            (input_info,) = sig.inputs.values()
            fetches = {k: graph.get_tensor_by_name(v.name) for k, v in sig.outputs.items()}
            run[key] = sess.run(fetches, {graph.get_tensor_by_name(input_info.name): feed})
    assert list(meta.signature_def["serving_default"].inputs) == ["image_bytes"]
    np.testing.assert_allclose(run["serving_default"]["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(run["predict_arrays"]["probabilities"], expected[:5], atol=1e-5)
    np.testing.assert_array_equal(run["serving_default"]["classes"], expected.argmax(1))
    for key in ("serving_default", "predict_arrays"):       # the class names, as strings
        assert [b.decode() for b in run[key]["labels"]] == \
            [LABELS[i] for i in run[key]["classes"]]
    assert meta.signature_def["predict_arrays"].outputs["labels"].dtype == tf.string


def test_frozen_graph_matches_the_classifier(tf, exported):
    _, out, info, encoded, expected = exported
    graph_def = tf.GraphDef()
    graph_def.ParseFromString((out / "frozen_graph.pb").read_bytes())
    assert not [n.name for n in graph_def.node if n.op.startswith("Variable")]
    names = info["frozen_graph"]
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
        assert not tf.global_variables()
        with tf.Session() as sess:
            probs, classes, labels = sess.run(
                [graph.get_tensor_by_name(names["outputs"][k]) for k in ("probabilities",
                                                                         "classes", "labels")],
                {graph.get_tensor_by_name(names["input"]): np.array(encoded, dtype=object)})
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(classes, expected.argmax(1))
    assert [b.decode() for b in labels] == [LABELS[i] for i in expected.argmax(1)]


def test_refuses_a_non_empty_dir_and_leaves_nothing(tf, exported, tmp_path):
    from ckptkit.train.export import export

    run, out, *_ = exported
    before = sorted(os.listdir(out))
    with pytest.raises(CkptError, match="not empty") as info:
        export(run, out)
    assert "\n" not in str(info.value) and sorted(os.listdir(out)) == before
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(CkptError, match="not a directory"):
        export(run, target)
    # a failure half-way (a checkpoint of another model) leaves neither out dir nor temp dir
    other = tmp_path / "other"
    make_train_dir(tf, other, MODELS["lenet"])
    with pytest.raises(CkptError, match="cannot restore"):
        export(run, tmp_path / "new", checkpoint=other)
    assert sorted(os.listdir(tmp_path)) == ["file", "other"]
    # an empty dir is fine
    (tmp_path / "empty").mkdir()
    export(other, tmp_path / "empty")
    assert (tmp_path / "empty" / "frozen_graph.pb").is_file()
    assert sorted(os.listdir(tmp_path)) == ["empty", "file", "other"]
