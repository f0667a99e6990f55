"""Random-init checkpoints of the zoo's nets, written by TensorFlow, for the port tests: batch
norm's statistics, gamma and beta are drawn too (TF initialises them to 0 and 1, which would
hide a wrong epsilon or a swapped mean and variance)."""
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
