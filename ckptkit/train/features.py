"""The feature cache of `--mode features`: the frozen backbone runs once over the data and its
pooled features (end_points["PreLogits"]) are kept on disk, so every later epoch, run or
search trial trains the head on arrays in seconds.

A cache entry is keyed by what decides the features: the checkpoint's identity (a V2 bundle's
.index holds every tensor's crc32c, so its bytes identify the weights), what the plan restores
into the backbone, the net and image size, and the data's fingerprint — not the new head, so
every head size or dropout a search tries shares one entry. Entries are single .npz files
written atomically.
"""
import hashlib
import json
import os

import numpy as np

from ..formats.base import atomic_file
from ..paths import resolve


def cache_dir(explicit=None):
    """`explicit`, else $CKPTKIT_CACHE/features, else ~/.cache/ckptkit/features."""
    if explicit:
        return explicit
    base = os.environ.get("CKPTKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ckptkit")
    return os.path.join(base, "features")


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


def load(path):
    """The cached {train_x, train_y, val_x, val_y} arrays, or None."""
    try:
        with np.load(path) as cached:
            return {k: cached[k] for k in cached.files}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def save(path, arrays):
    """Write the arrays to `path` through a temp file and a rename."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)
