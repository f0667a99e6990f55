"""The feature cache of `--mode features`: the frozen backbone runs once over the data and its
pooled features (end_points["PreLogits"]) are kept on disk, so every later epoch, run or
search trial trains the head on arrays in seconds.

A cache entry is keyed by what decides the features: the checkpoint's identity (a V2 bundle's
.index holds every tensor's crc32c, so its bytes identify the weights), what the plan restores
into the backbone, the net and image size, and the data's fingerprint — not the new head, so
every head size or dropout a search tries shares one entry. An entry is one .npz file written
atomically: {train,val}_{x,y} and `dropped`, the image files TF could not decode, so a cache
hit neither decodes an image nor builds the backbone.
"""
import contextlib
import hashlib
import json
import os
import time
import zipfile

import numpy as np

from ..fileio import atomic_file
from ..paths import resolve
from .nets import cache_root

_ARRAYS = ("train_x", "train_y", "dropped")


def cache_dir(explicit=None):
    """`explicit`, else nets.cache_root()/features."""
    return explicit or os.path.join(cache_root(), "features")


def checkpoint_identity(checkpoint):
    """A digest of the checkpoint's weights without reading them."""
    found = resolve(checkpoint)
    digest = hashlib.sha256(found.kind.encode())
    index = found.path + ".index"
    if os.path.isfile(index):
        with open(index, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:
        st = os.stat(found.path)
        digest.update(f"{os.path.abspath(found.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_key(checkpoint, plan, model, dataset):
    """The key of the features `model`'s backbone gives on `dataset` after `plan`."""
    head = model.head_scope + "/"
    parts = {
        "checkpoint": checkpoint_identity(checkpoint) if checkpoint else None,
        "restore": sorted((r.model, r.ckpt, r.offset) for r in plan.restore
                          if not r.model.startswith(head)),
        "backbone": [model.net, model.image_size],
        "data": dataset.fingerprint,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cache_path(explicit_dir, checkpoint, plan, model, dataset):
    return os.path.join(cache_dir(explicit_dir),
                        cache_key(checkpoint, plan, model, dataset) + ".npz")


def load(path):
    """The cached arrays (see the module notes), or None when absent, unreadable or old."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = {k: cached[k] for k in cached.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return arrays if all(k in arrays for k in _ARRAYS) else None


def save(path, arrays):
    """Write the arrays to `path` through a temp file and a rename."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)


def extract(model, dataset, plan, checkpoint, *, batch_size=32, config=None, progress=None):
    """{split_x, split_y} of every split: `model`'s backbone, restored by `plan`, run once
    over the (un-augmented) images in a graph of its own. progress(total, label), when given,
    is a context manager yielding advance(n)."""
    from ..tfcompat import tf
    from . import data
    from .restore import apply_plan

    graph = tf.Graph()
    with graph.as_default():
        splits = {"train": dataset.train, "val": dataset.val}
        inputs, outputs = {}, {}
        for i, (name, split) in enumerate((k, v) for k, v in splits.items() if v is not None):
            inputs[name] = data.Input(split, model.record, batch_size=batch_size, training=False,
                                      name=name)
            with tf.variable_scope(tf.get_variable_scope(), reuse=bool(i)):
                _, end_points = model.build(inputs[name].images, is_training=False)
            outputs[name] = [end_points["PreLogits"], inputs[name].labels]
        init = tf.global_variables_initializer()
    arrays = {}
    with tf.Session(graph=graph, config=config) as sess:
        sess.run(init)
        if checkpoint:
            apply_plan(sess, plan, checkpoint)
        for name, source in inputs.items():
            source.start(sess, 0)
            xs, ys = [], []
            bar = progress(source.steps, f"features ({name})") if progress else \
                contextlib.nullcontext(lambda n, **fields: None)
            with bar as advance:
                for _ in range(source.steps):
                    x, y = sess.run(outputs[name])
                    xs.append(x)
                    ys.append(y)
                    advance(1)
            arrays[f"{name}_x"], arrays[f"{name}_y"] = np.concatenate(xs), np.concatenate(ys)
    return arrays


def cached(path, model, dataset, plan, checkpoint, *, batch_size=32, config=None,
           progress=None, log=lambda line: None):
    """(arrays, dataset without its undecodable files, their paths): from the cache entry at
    `path`, else by dropping what TF cannot decode, extracting and caching."""
    from . import data

    arrays = load(path)
    if arrays is not None:
        log(f"features from the cache {path}")
        dropped = [str(p) for p in arrays["dropped"]]
        return arrays, data.without(dataset, dropped), dropped
    dataset, dropped = data.drop_corrupt(dataset)
    started = time.perf_counter()
    arrays = extract(model, dataset, plan, checkpoint, batch_size=batch_size, config=config,
                     progress=progress)
    arrays["dropped"] = np.array(dropped, dtype=str)
    save(path, arrays)
    log(f"cached the backbone's features in {path} ({time.perf_counter() - started:.1f}s)")
    return arrays, dataset, dropped
