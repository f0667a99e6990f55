"""`ckptkit eval`: accuracy, top-5, per-class accuracy and the confusion matrix of a train
dir's model on its validation split (or on other data with the same class names); the
matrix is also drawn: TRAIN_DIR/confusion.png for the run's own validation split,
TRAIN_DIR/confusion-NAME.png for other data (NAME: the data's file or folder name), so
evaluating a test set leaves the run's own matrix in place.

The train dir, its checkpoint and the data are checked before TensorFlow loads."""
import os
import re

import numpy as np

from ..errors import CkptError
from . import data
from .devices import session_config
from .infer import checkpoint_of, restore
from .onnx_engine import OnnxClassifier, decode, onnx_export
from .plots import confusion
from .rundir import CONFUSION, RunDir


def evaluate(train_dir, *, data_path=None, best=True, batch_size=64, device="auto",
             engine="auto", log=lambda line: None):
    """Evaluate the best (else latest) checkpoint of `train_dir`; returns a dict with
    accuracy, top5, loss, count, per_class [{label, accuracy, count}], confusion (rows:
    true class, columns: predicted), labels, checkpoint, data, engine ("onnx" or "tf", see
    onnx_engine.onnx_export; TFRecord data runs on TF) and confusion_png (the matrix drawn). Images
    that do not decode are left out, each with a warning to `log`."""
    run = RunDir(train_dir)
    model, labels = run.model(), run.labels()
    checkpoint = checkpoint_of(run, best=best)
    dataset, source = _data(run, data_path, labels)
    split = dataset.val if data_path is None else \
        _numbered(dataset.val or dataset.train, dataset.classes, labels)
    if split.kind == "tfrecord" and engine == "onnx":
        raise CkptError(f"{source}: TFRecord data is evaluated on TensorFlow (--engine tf)")
    folder = None if split.kind == "tfrecord" else onnx_export(run, engine, checkpoint, log)
    if folder is not None:
        logits, truth = _onnx_logits(folder, split, batch_size, log)
    else:
        split, bad = data.readable(split)
        for line in data.skip_warnings(bad):
            log(line)
        logits, truth = _tf_logits(model, checkpoint, split, batch_size, device)
    result = _report(logits, truth, labels, checkpoint, source)
    result["engine"] = "tf" if folder is None else "onnx"
    result["confusion_png"] = run.file(CONFUSION if data_path is None else
                                       confusion_name(data_path))
    confusion(result["confusion"], labels, result["confusion_png"])
    return result


def _tf_logits(model, checkpoint, split, batch_size, device):
    from ..tfcompat import tf

    graph = tf.Graph()
    with graph.as_default():
        source_in = data.Input(split, model.record, batch_size=batch_size, training=False,
                               name="eval")
        logits, _ = model.build(source_in.images, is_training=False)
        fetches = [logits, source_in.labels]
    with tf.Session(graph=graph, config=session_config(device)) as sess:
        restore(sess, checkpoint)
        source_in.start(sess, 0)
        batches = [sess.run(fetches) for _ in range(source_in.steps)]
    return (np.concatenate([b[0] for b in batches]).astype(np.float64),
            np.concatenate([b[1] for b in batches]))


def _onnx_logits(folder, split, batch_size, log):
    """(logits, labels) of the split's images on onnxruntime; files that do not decode are
    left out, with a warning."""
    with OnnxClassifier(folder) as classifier:
        if split.kind == "arrays":
            return (classifier.probabilities(split.items, batch_size, output="logits")
                    .astype(np.float64), split.labels)
        logits, truth = [], []
        for start in range(0, split.count, batch_size):
            images, labels = [], []
            for path, label in zip(split.items[start:start + batch_size],
                                   split.labels[start:start + batch_size]):
                with open(path, "rb") as f:
                    image = decode(f.read())
                if isinstance(image, str):
                    log(f"warning: skipping unreadable image {path} ({image})")
                    continue
                images.append(image)
                labels.append(label)
            if images:
                logits.append(classifier.probabilities(images, batch_size, output="logits"))
                truth.append(np.array(labels, np.int64))
    if not logits:
        raise CkptError("no image of the data decodes")
    return np.concatenate(logits).astype(np.float64), np.concatenate(truth)


def confusion_name(data_path):
    """confusion-NAME.png: NAME the last part of `data_path` without its extension, in
    characters safe in a file name."""
    name = os.path.splitext(os.path.basename(os.path.normpath(os.fspath(data_path))))[0]
    return f"confusion-{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('._') or 'data'}.png"


def _data(run, data_path, labels):
    """(dataset, what it is): the run's own data, of which the validation split is
    evaluated, or `data_path`, whose classes the model must know."""
    if data_path is None:
        settings = run.read_run().get("settings") or {}
        if not isinstance(settings, dict) or not isinstance(settings.get("data"), str):
            raise CkptError(f"{run.file('run.json')}: no data source recorded; give --data")
        dataset, _ = data.load_run_data(settings["data"], val_data=settings.get("val_data"),
                                        val_split=settings.get("val_split"),
                                        seed=settings.get("seed", 0))
        if dataset.val is None:
            raise CkptError(f"{settings['data']} has no validation split; give --data")
        if list(dataset.classes) != list(labels):
            raise CkptError(f"the classes of {settings['data']} changed since training")
        return dataset, f"{_shown(settings['data'])} (validation split)"
    dataset = data.load_dataset(data_path, min_classes=1)
    unknown = [c for c in dataset.classes if c not in labels]
    if unknown:
        raise CkptError(f"{data_path}: classes {', '.join(unknown)} are not among the model's "
                        f"({', '.join(labels)})")
    return dataset, data_path


def _shown(path):
    """`path` (run.json's, absolute) as typed here: relative when under the working dir."""
    relative = os.path.relpath(path)
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) \
        else relative


def _numbered(split, classes, labels):
    """`split` (of data with these `classes`) with its labels numbered as the model's."""
    if split.labels is None:
        return split
    remap = np.array([labels.index(c) for c in classes], np.int64)
    return data.Split(split.kind, split.items, remap[split.labels], split.count)


def _report(logits, truth, labels, checkpoint, source):
    """The figures of evaluate from the logits (float64) of the examples and their labels."""
    n = len(labels)
    top5 = np.argsort(-logits, axis=1, kind="stable")[:, :min(5, n)]
    peak = logits.max(axis=1)
    losses = np.log(np.exp(logits - peak[:, None]).sum(axis=1)) + peak - \
        logits[np.arange(len(truth)), truth]
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (truth, top5[:, 0]), 1)
    per_class = [{"label": label, "count": int(confusion[i].sum()),
                  "accuracy": float(confusion[i, i] / confusion[i].sum())
                  if confusion[i].sum() else None} for i, label in enumerate(labels)]
    return {
        "checkpoint": checkpoint, "data": source, "count": int(len(truth)),
        "accuracy": float(np.mean(top5[:, 0] == truth)),
        "top5": float(np.mean((top5 == truth[:, None]).any(axis=1))),
        "loss": float(np.mean(losses)),
        "per_class": per_class, "confusion": confusion.tolist(), "labels": list(labels),
    }
