"""Random-init checkpoints of the zoo's nets, written by TensorFlow, for the port tests: batch
norm's statistics, gamma and beta are drawn too (TF initialises them to 0 and 1, which would
hide a wrong epsilon or a swapped mean and variance)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from ckptkit.train.nets import Model
from ckptkit.zoo.nets import get_net
from helpers.models import save_random

STATS = {"moving_mean": (-0.2, 0.2), "moving_variance": (0.3, 1.5), "gamma": (0.5, 1.5),
         "beta": (-0.2, 0.2)}


def random_checkpoint(tf, net, prefix, seed=0, num_classes=None):
    """Save `net` (its own classifier, `num_classes` or the record's classes), randomly
    initialised, at `prefix`; returns the saved prefix."""
    model = Model(net, num_classes or get_net(net).num_classes, keep_head=True)
    return save_random(tf, model, prefix, seed, ranges=STATS)


def run(*args, backend=None, check=False):
    """`ckptkit ARGS` in a fresh process -> CompletedProcess (text)."""
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    done = subprocess.run([sys.executable, "-c", "from ckptkit.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert "Traceback" not in done.stderr, done.stderr
    if check:
        assert done.returncode == 0, done.stderr
    return done


def certificate(out):
    return json.loads(Path(f"{out}.parity.json").read_text())


def tiny_vgg(net="vgg_16", width=2):
    """{name: array} of a slim VGG checkpoint `width` channels wide everywhere (fc6 still
    7x7): every name `port --to torch` maps, small and TF-free."""
    import numpy as np

    rng = np.random.default_rng(0)
    convs = {"vgg_16": [2, 2, 3, 3, 3], "vgg_19": [2, 2, 4, 4, 4]}[net]
    shapes = {f"{net}/conv{b}/conv{b}_{i}": (3, 3, 3 if b == i == 1 else width, width)
              for b, count in enumerate(convs, 1) for i in range(1, count + 1)}
    shapes.update({f"{net}/fc6": (7, 7, width, width), f"{net}/fc7": (1, 1, width, width),
                   f"{net}/fc8": (1, 1, width, 5)})
    tensors = {"global_step": np.array(7, np.int64)}
    for layer, shape in shapes.items():
        tensors[f"{layer}/weights"] = rng.standard_normal(shape).astype(np.float32)
        tensors[f"{layer}/biases"] = rng.standard_normal(shape[-1]).astype(np.float32)
    return tensors
