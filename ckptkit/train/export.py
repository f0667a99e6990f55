"""Export a train dir's classifier for serving.

    out_dir/saved_model/     SavedModel, tag "serve":
                             "serving_default": image_bytes (string [None], encoded
                               JPEG/PNG/BMP/GIF) -> probabilities, classes (indices),
                               labels (their class names, strings)
                             "predict_arrays": images (uint8 [None, h, w, C]) -> same
                             assets/labels.txt
    out_dir/frozen_graph.pb  GraphDef, variables folded into constants; feed "input:0" with
                             encoded images, fetch "probabilities:0", "classes:0", "logits:0",
                             "labels:0"
    out_dir/labels.txt       class names, `index:name` lines
    out_dir/export.json      tensor names, net, image size, preprocessing, labels; its
                             "model" entry gives the size the model takes (run.json's 0
                             means the net's own)

Everything is written into a temporary dir beside out_dir, renamed into place at the end: a
failure leaves nothing behind. Importing this module does not load TensorFlow, and neither
do the checks of the train dir and of out_dir, which run first.
"""
import json
import os
import shutil
import tempfile

from ..errors import CkptError
from .devices import session_config
from .infer import checkpoint_of, inference_graph, restore
from .rundir import LABELS, RunDir

SAVED_MODEL, FROZEN, EXPORT_JSON = "saved_model", "frozen_graph.pb", "export.json"
TAG = "serve"
OUTPUTS = ("probabilities", "classes", "labels")


def export(train_dir, out_dir, *, checkpoint=None):
    """Export the classifier of `train_dir` (its best checkpoint, else its latest, or
    `checkpoint`) into `out_dir`, which must not exist or be empty. Returns the contents of
    export.json plus "out_dir" and "files" (the paths written)."""
    from .. import __version__

    run = RunDir(train_dir)
    model = run.model()
    labels = run.labels()
    if len(labels) != model.num_classes:
        raise CkptError(f"{run.file(LABELS)}: {len(labels)} labels, but the model has "
                        f"{model.num_classes} classes")
    prefix = checkpoint_of(run, checkpoint)
    out_dir = os.path.abspath(os.fspath(out_dir))
    _check_empty(out_dir)
    from ..tfcompat import tf

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        shutil.copyfile(run.file(LABELS), os.path.join(tmp, LABELS))
        signatures = _saved_model(tf, model, labels, prefix, os.path.join(tmp, LABELS),
                                  os.path.join(tmp, SAVED_MODEL))
        frozen = _frozen_graph(tf, model, labels, prefix, os.path.join(tmp, FROZEN))
        record = model.record
        info = {
            "net": model.net, "model": {**model.to_json(), "image_size": record.image_size},
            "image_size": record.image_size,
            "channels": record.channels, "preprocessing": record.preprocessing,
            "num_classes": model.num_classes, "labels": labels,
            "checkpoint": os.path.abspath(prefix),
            "saved_model": {"dir": SAVED_MODEL, "tags": [TAG], "signatures": signatures},
            "frozen_graph": frozen,
            "versions": {"ckptkit": __version__, "tensorflow": tf.__version__},
        }
        with open(os.path.join(tmp, EXPORT_JSON), "w", encoding="utf-8") as f:
            f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
        _check_empty(out_dir)   # nobody wrote there meanwhile
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [os.path.join(out_dir, name) for name in (SAVED_MODEL, FROZEN, LABELS, EXPORT_JSON)]
    return {**info, "out_dir": out_dir, "files": files}


def _check_empty(out_dir):
    if os.path.isdir(out_dir):
        if os.listdir(out_dir):
            raise CkptError(f"{out_dir}: exists and is not empty; export into a new or empty "
                            "directory")
    elif os.path.lexists(out_dir):
        raise CkptError(f"{out_dir}: exists and is not a directory")


def _names(tensors, keys):
    return {key: tensors[key].name for key in keys}


def _saved_model(tf, model, labels, prefix, labels_path, path):
    """Write the SavedModel; returns its signatures as {name: {inputs, outputs}} of tensor
    names."""
    predict_signature = tf.saved_model.signature_def_utils.predict_signature_def
    graph = tf.Graph()
    with graph.as_default():
        by_bytes = inference_graph(model, inputs="bytes", labels=labels)
        by_arrays = inference_graph(model, inputs="arrays", scope="arrays", labels=labels)
        asset = tf.constant(labels_path, name="labels_path")
        tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS, asset)
        signatures = {
            "serving_default": ({"image_bytes": by_bytes["input"]},
                                {k: by_bytes[k] for k in OUTPUTS}),
            "predict_arrays": ({"images": by_arrays["input"]},
                               {k: by_arrays[k] for k in OUTPUTS}),
        }
        with tf.Session(graph=graph, config=session_config()) as sess:
            restore(sess, prefix)
            builder = tf.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                sess, [TAG], clear_devices=True,
                assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS),
                signature_def_map={
                    name: predict_signature(inputs, outputs)
                    for name, (inputs, outputs) in signatures.items()})
            builder.save()
    return {name: {"inputs": _names(inputs, inputs), "outputs": _names(outputs, outputs)}
            for name, (inputs, outputs) in signatures.items()}


def _frozen_graph(tf, model, labels, prefix, path):
    """Write the frozen GraphDef (bytes input); returns its tensor names."""
    graph = tf.Graph()
    with graph.as_default():
        tensors = inference_graph(model, inputs="bytes", labels=labels)
        outputs = ("probabilities", "classes", "logits", "labels")
        with tf.Session(graph=graph, config=session_config()) as sess:
            restore(sess, prefix)
            graph_def = tf.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(add_shapes=True),
                [tensors[k].op.name for k in outputs])
    for node in graph_def.node:
        node.device = ""
    with open(path, "wb") as f:
        f.write(graph_def.SerializeToString())
    return {"file": FROZEN, "input": tensors["input"].name,
            "input_format": "string [None]: encoded JPEG, PNG, BMP or GIF file contents",
            "outputs": _names(tensors, outputs)}
