"""What a `finetune` run depends on: its Settings (saved in run.json), their checks, and the
stages they make.

No TensorFlow, directly or through imports: `check` runs every check that needs none, so a
bad option fails in a second, before TF loads. The checks that need TF (devices.session_config
for --gpus) run in finetune and search, also before any work.
"""
import os
from dataclasses import dataclass, field

from ..errors import CkptError
from ..plan import RestoreOptions
from ..zoo.nets import get_net
from .nets import Model

MODES = ("head", "features", "finetune", "two-stage")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine")


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on; saved in run.json. See `ckptkit finetune --help`."""

    net: str
    data: str
    train_dir: str
    checkpoint: str = None          # None: train from random initialisation
    val_data: str = None
    val_split: float = None         # None: the data's own val split, else 0.1
    num_classes: int = None
    mode: str = "finetune"
    restore: RestoreOptions = field(default_factory=RestoreOptions)
    hidden: tuple = ()
    dropout: float = 0.5
    image_size: int = 0
    head_scope: str = "Logits"
    keep_head: bool = False         # the net's own classifier instead of a new head
    epochs: int = 10
    head_epochs: int = 0            # two-stage: epochs of the head stage (0: half)
    stage2_lr: float = 0.1          # two-stage: learning-rate factor of the second stage
    batch_size: int = 32
    optimizer: str = "momentum"
    lr: float = 0.01
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: float = 0.0
    decay_rate: float = 0.1
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    clip_norm: float = 0.0
    augment: bool = True
    seed: int = 0
    keep: int = 3
    save_every: float = 600.0       # seconds between checkpoints inside an epoch
    patience: int = 0               # early stopping: epochs without a better val accuracy
    device: str = "auto"
    gpus: str = None
    devices: tuple = ()             # data-parallel over these (default: every GPU, if > 1)
    mixed_precision: bool = False
    compare_scratch: bool = False
    cache_dir: str = None

    def model(self, num_classes):
        """The classifier these settings train on data of `num_classes` classes."""
        return Model(self.net, num_classes, self.image_size, tuple(self.hidden), self.dropout,
                     self.head_scope, self.keep_head)


@dataclass(frozen=True)
class Stage:
    """One training stage of a run: one graph, one optimizer, the scopes it trains."""

    number: int
    mode: str                       # head | features | finetune
    train: tuple
    train_from: str
    end_epoch: int
    lr_factor: float = 1.0
    start_epoch: int = 0


def check(s):
    """Raise a one-line CkptError for the first bad value of Settings `s`."""
    train, train_from = s.restore.train, s.restore.train_from
    if s.mode not in MODES:
        raise CkptError(f"unknown mode {s.mode!r}; use one of {', '.join(MODES)}")
    if s.mode in ("head", "features") and (train or train_from):
        raise CkptError(f"--mode {s.mode} trains the new head only; --train/--train-from "
                        "belong to --mode finetune or two-stage")
    if s.mode == "two-stage" and not train_from:
        raise CkptError("--mode two-stage needs --train-from SCOPE: where the second stage "
                        "unfreezes the backbone (e.g. resnet_v1_50/block4)")
    if s.mode in ("head", "features", "two-stage") and not s.checkpoint:
        raise CkptError(f"--mode {s.mode} needs --checkpoint: a random backbone is not worth "
                        "freezing")
    if s.keep_head and s.mode == "features":
        raise CkptError("--keep-head does not go with --mode features: it trains a new head "
                        "on cached features; use --mode head")
    if s.keep_head and s.hidden:
        raise CkptError("--head (hidden layers) belongs to a new head; --keep-head keeps the "
                        "net's own classifier")
    for name in ("epochs", "batch_size", "keep"):
        if getattr(s, name) < 1:
            raise CkptError(f"--{name.replace('_', '-')} must be at least 1")
    if s.mode == "two-stage" and s.epochs < 2:
        raise CkptError("--mode two-stage needs --epochs of at least 2 (one per stage)")
    if s.mode == "two-stage" and s.head_epochs >= s.epochs:
        raise CkptError(f"--head-epochs {s.head_epochs} leaves no epoch of --epochs "
                        f"{s.epochs} for the second stage")
    get_net(s.net)
    for option, path in (("--train-dir", s.train_dir), ("--cache-dir", s.cache_dir)):
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise CkptError(f"{option} {path}: a file, not a folder")
    if not 0 <= s.label_smoothing < 1:
        raise CkptError(f"--label-smoothing must be in [0, 1), got {s.label_smoothing}")
    if not s.lr > 0:
        raise CkptError(f"--lr must be positive, got {s.lr}")
    if s.optimizer not in OPTIMIZERS:
        raise CkptError(f"unknown optimizer {s.optimizer!r}; use one of "
                        f"{', '.join(OPTIMIZERS)}")
    if s.schedule not in SCHEDULES:
        raise CkptError(f"unknown schedule {s.schedule!r}; use one of {', '.join(SCHEDULES)}")


def stages(s, model):
    """The Stages of a run of `s` training `model`: head/features/finetune train once;
    two-stage trains the head first, then unfreezes from --train-from at a lower rate."""
    heads = tuple(model.head_scopes)
    if s.mode in ("head", "features"):
        return [Stage(1, s.mode, heads, None, s.epochs)]
    if s.mode == "finetune":
        return [Stage(1, "finetune", s.restore.train, s.restore.train_from, s.epochs)]
    first = min(s.head_epochs or max(1, s.epochs // 2), s.epochs - 1)
    return [Stage(1, "head", heads, None, first),
            Stage(2, "finetune", (), s.restore.train_from, s.epochs, s.stage2_lr, first)]
