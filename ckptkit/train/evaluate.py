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
from .plots import confusion
from .rundir import CONFUSION, RunDir


def evaluate(train_dir, *, data_path=None, best=True, batch_size=64, device="auto",
             log=lambda line: None):
    """Evaluate the best (else latest) checkpoint of `train_dir`; returns a dict with
    accuracy, top5, loss, count, per_class [{label, accuracy, count}], confusion (rows:
    true class, columns: predicted), labels, checkpoint, data and confusion_png (the
    matrix drawn). Images that do not decode are left out, each with a warning to `log`."""
    run = RunDir(train_dir)
    model, labels = run.model(), run.labels()
    checkpoint = checkpoint_of(run, best=best)
    dataset, source = _data(run, data_path, labels)
    split = dataset.val if data_path is None else \
        _numbered(dataset.val or dataset.train, dataset.classes, labels)
    from ..tfcompat import tf

    split, bad = data.readable(split)
    for line in data.skip_warnings(bad):
        log(line)
    graph = tf.Graph()
    with graph.as_default():
        source_in = data.Input(split, model.record, batch_size=batch_size, training=False,
                               name="eval")
        logits, _ = model.build(source_in.images, is_training=False)
        k = min(5, model.num_classes)
        fetches = [tf.nn.sparse_softmax_cross_entropy_with_logits(
                       labels=tf.cast(source_in.labels, tf.int32), logits=logits),
                   tf.nn.top_k(logits, k).indices, source_in.labels]
    with tf.Session(graph=graph, config=session_config(device)) as sess:
        restore(sess, checkpoint)
        source_in.start(sess, 0)
        losses, tops, truth = [], [], []
        for _ in range(source_in.steps):
            loss, top, y = sess.run(fetches)
            losses.append(loss)
            tops.append(top)
            truth.append(y)
    result = _report(np.concatenate(losses), np.concatenate(tops), np.concatenate(truth),
                     labels, checkpoint, source)
    result["confusion_png"] = run.file(CONFUSION if data_path is None else
                                       confusion_name(data_path))
    confusion(result["confusion"], labels, result["confusion_png"])
    return result


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
        return dataset, f"{settings['data']} (validation split)"
    dataset = data.load_dataset(data_path, min_classes=1)
    unknown = [c for c in dataset.classes if c not in labels]
    if unknown:
        raise CkptError(f"{data_path}: classes {', '.join(unknown)} are not among the model's "
                        f"({', '.join(labels)})")
    return dataset, data_path


def _numbered(split, classes, labels):
    """`split` (of data with these `classes`) with its labels numbered as the model's."""
    if split.labels is None:
        return split
    remap = np.array([labels.index(c) for c in classes], np.int64)
    return data.Split(split.kind, split.items, remap[split.labels], split.count)


def _report(losses, tops, truth, labels, checkpoint, source):
    n = len(labels)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (truth, tops[:, 0]), 1)
    per_class = [{"label": label, "count": int(confusion[i].sum()),
                  "accuracy": float(confusion[i, i] / confusion[i].sum())
                  if confusion[i].sum() else None} for i, label in enumerate(labels)]
    return {
        "checkpoint": checkpoint, "data": source, "count": int(len(truth)),
        "accuracy": float(np.mean(tops[:, 0] == truth)),
        "top5": float(np.mean((tops == truth[:, None]).any(axis=1))),
        "loss": float(np.mean(losses)),
        "per_class": per_class, "confusion": confusion.tolist(), "labels": list(labels),
    }
