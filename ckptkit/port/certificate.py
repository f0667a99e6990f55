"""The parity certificate of a port: the ported model against the tf_slim graph of the same
checkpoint (train/oracle.py, the oracle), on the same preprocessed images, end point by end
point in build order, then the logits.

A figure passes when its max abs difference is at most TOLERANCE times the oracle's scale
(its max abs value, at least 1); the port passes when the logits do and every image's top-1
class agrees. The first end point that fails is where the mapping went wrong (a transposed
kernel fails at its own layer, a wrong epsilon at its batch norm, symmetric padding at the
first strided conv), so the report names it.

Images: files given by the user (real photos), else BUILTIN_IMAGES made here (seeded smooth
gradients, discs and noise: deterministic, no data shipped).
"""
import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

from ..errors import CkptError
from ..fileio import write_atomic
from ..images import images_in

TOLERANCE = 1e-4
BUILTIN_IMAGES = 4


def certify(ported, checkpoint, options, images=None, oracle=None):
    """The certificate (a dict) of `ported` (port.keras.Ported) from `checkpoint` under
    `options`; `images`: image files or folders (None: the built-in set); `oracle`: the
    (inputs, outputs) oracle_outputs gave for them, when already known."""
    import keras

    files = _image_files(images) if images else None
    inputs, oracle = oracle or oracle_outputs(
        ported.record.name, ported.checkpoint_classes, checkpoint, options, files,
        run_model=ported.metadata["run_model"])
    names = [n for n in ported.end_points if n in oracle]
    outputs = ported.end_point_model()(inputs) if names else []
    ours = dict(zip(ported.end_points, [keras.ops.convert_to_numpy(o) for o in outputs]))
    logits = keras.ops.convert_to_numpy(ported.model(inputs))
    figures = [_figure(name, ours[name], oracle[name]) for name in names]
    return _report(files, inputs, figures, None if ported.metadata["new_head"] else logits,
                   oracle["logits"], keras.backend.backend(), "keras")


def certify_torch(state, checkpoint, options, images=None):
    """The certificate of `state` (port.state_dict.StateDict) loaded with strict=True into
    its PyTorch class: the logits against the tf_slim graph's (the class has no slim end
    points to compare)."""
    from .state_dict import torch_model

    files = _image_files(images) if images else None
    meta = state.metadata
    model = torch_model(state)
    inputs, oracle = oracle_outputs(meta["net"], meta["checkpoint_classes"], checkpoint,
                                    options, files)
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())).numpy()
    return _report(files, inputs, [], logits, oracle["logits"], "torch", meta["package"])


def _report(files, inputs, figures, logits, expected, backend, package):
    """The certificate of end point `figures` and `logits` (None: a new head, not compared)
    against the oracle's `expected` logits."""
    report = {"images": [os.path.abspath(p) for p in files] if files
              else f"built-in set of {len(inputs)} synthetic images",
              "inputs": list(inputs.shape), "end_points": figures}
    if logits is None:
        report["logits"] = "new head (random initialisation): not compared"
        passed = all(f["pass"] for f in figures)
    else:
        expected = expected[..., expected.shape[-1] - logits.shape[-1]:]  # --drop-background
        report["logits"] = _figure("logits", logits, expected)
        top1 = float((logits.argmax(-1) == expected.argmax(-1)).mean())
        report["top1_agreement"] = top1
        report["top5_agreement"] = _top5(logits, expected)
        passed = report["logits"]["pass"] and top1 == 1.0
    first = next((f["name"] for f in figures + [report["logits"]]
                  if isinstance(f, dict) and not f["pass"]), None)
    report.update(passed=bool(passed), first_divergence=first, tolerance=TOLERANCE,
                  backend=backend, versions=_versions(package))
    return report


def oracle_outputs(net, num_classes, checkpoint, options, files, run_model=None):
    """(preprocessed inputs, {end point: array}) of the tf_slim graph of `net` with a
    `num_classes` classifier (or a run's model entry) (train/oracle.py, in a process of its
    own)."""
    request = {"net": net, "checkpoint": os.fspath(checkpoint),
               "options": options.to_json(), "num_classes": num_classes,
               "run_model": run_model, "images": files}
    with tempfile.TemporaryDirectory() as folder:
        path, out = os.path.join(folder, "request.json"), os.path.join(folder, "oracle.npz")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(request, f)
        # Keras, where TensorFlow loads it, on TensorFlow: TF beside torch's CUDA build in
        # one process crashes
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        done = subprocess.run([sys.executable, "-m", "ckptkit.train.oracle", path, out],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env)
        if done.returncode:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            error = next((l for l in lines if l.startswith("ckptkit: error: ")), lines[-1])
            raise CkptError(f"the tf_slim oracle failed: {error.removeprefix('ckptkit: error: ')}")
        with np.load(out) as data:
            outputs = {str(name): data[f"end_point_{i}"]
                       for i, name in enumerate(data["names"])}
            return data["inputs"], outputs


def write(report, out):
    """`out`.parity.json, atomically; its path."""
    path = f"{out}.parity.json"
    write_atomic(path, json.dumps(report, indent=1) + "\n")
    return path


def builtin_images(size, channels, n=BUILTIN_IMAGES):
    """`n` deterministic uint8 [size + 32, size + 32, channels] images: smooth colour ramps,
    a disc and noise, different for each image."""
    rng = np.random.default_rng(20151205)
    side = size + 32
    y, x = np.mgrid[0:side, 0:side] / side
    images = []
    for i in range(n):
        ramps = [np.sin((x * a + y * b) * np.pi * 2 + p)
                 for a, b, p in rng.uniform(-2, 2, (channels, 3))]
        cx, cy, r = rng.uniform(0.2, 0.8, 3)
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < (r / 2) ** 2)
        image = np.stack(ramps, -1) * 0.5 + disc[..., None] * 0.6 - 0.3
        image += rng.normal(0, 0.08, image.shape)
        images.append(np.clip((image + 1) * 127.5, 0, 255).astype(np.uint8))
    return images


def _figure(name, ours, oracle):
    scale = max(float(np.abs(oracle).max()), 1.0)
    diff = float(np.abs(ours.astype(np.float64) - oracle).max()) if ours.shape == oracle.shape \
        else float("inf")
    return {"name": name, "max_abs_diff": diff, "scale": scale,
            "pass": bool(diff <= TOLERANCE * scale)}


def _top5(ours, oracle):
    k = min(5, ours.shape[-1])
    a, b = np.argsort(-ours, -1)[:, :k], np.argsort(-oracle, -1)[:, :k]
    return float(np.mean([set(x) == set(y) for x, y in zip(a, b)]))


def _image_files(paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += images_in(path)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise CkptError(f"--check {path}: no such image file or folder")
    if not files:
        raise CkptError(f"--check {', '.join(paths)}: no images there")
    return files


def _versions(porter):
    """Versions of what made the certificate: Python, numpy, the porting package (keras,
    timm or torchvision), TensorFlow and tf_slim (the oracle), and the backends."""
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for package in (porter, "tensorflow", "tf_slim", "jax", "torch"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions
