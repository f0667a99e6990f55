"""What a `finetune` run depends on: its Settings (saved in run.json), their checks, and the
stages they make.

No TensorFlow, directly or through imports: `check` runs every check that needs none, so a
bad option fails in a second, before TF loads. The checks that need TF (devices.session_config:
does this machine have the GPUs asked for) run in finetune and search, also before any work.

Resuming: a train dir's run.json keeps the Settings it was started with, and a rerun compares
them with its own (`changes`). The settings in RESUMABLE may differ: they say how long a run
trains, when it stops early, how it saves and where it computes, never what an epoch computes:
    --epochs           more extends the run (a step or cosine schedule stretches to the new
                       end); fewer than the run has trained is refused
    --patience, --save-every, --keep, --device, --gpus (and `devices`), --cache-dir
    --num-classes      only checks the data's class count
    --compare-scratch  trains the twin in TRAIN_DIR/scratch, a train dir of its own
Any other difference refuses the resume (finetune names each changed setting).

Paths: a run stores --data and --val-data absolute (`resolved`), as --net stores a user net's
file (zoo.nets.canonical), so `eval` and a resume find them from any working directory. A rerun
compares every path setting as an absolute path: the same relative path from the same
directory is no change. A run.json of an older ckptkit may hold a relative path; it is read
as it always was, relative to the current directory (the train dir's parent would be a guess:
the path was typed relative to wherever finetune ran), and a missing one is the same error as
a missing --data.
"""
import dataclasses
import json
import os
from dataclasses import dataclass, field

from ..errors import CkptError
from ..plan import RestoreOptions
from ..zoo.nets import get_net
from .devices import check_devices
from .nets import Model

MODES = ("head", "features", "finetune", "two-stage")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine")
ENGINES = ("auto", "onnx", "tf")            # what predict and eval run on (onnx_engine)
EXPORT_FORMATS = ("tf", "onnx", "all")      # what export writes (export.FORMATS)
RESUMABLE = ("epochs", "patience", "save_every", "keep", "device", "gpus", "devices",
             "cache_dir", "num_classes", "compare_scratch")
_PATHS = ("data", "val_data", "checkpoint", "cache_dir")
_DATA_PATHS = ("data", "val_data")     # stored absolute; checkpoint may be pretrained:NAME
_FLAGS = {"hidden": "--head", "lr_mults": "--lr-mult", "maps": "--map",
          "augment": "--no-augment"}


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
    if s.mode in ("head", "features") and (train or train_from or s.restore.layer_decay != 1):
        raise CkptError(f"--mode {s.mode} trains the new head only; --train, --train-from "
                        "and --layer-decay belong to --mode finetune or two-stage")
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
    check_devices(s.device, s.gpus)
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


def resolved(s):
    """Settings `s` with its data paths absolute: what a run stores (module notes)."""
    return dataclasses.replace(s, **{name: os.path.abspath(getattr(s, name))
                                     for name in _DATA_PATHS if getattr(s, name)})


def head_stage_epochs(s):
    """Epochs of two-stage's head stage: --head-epochs, else half of --epochs."""
    return min(s.head_epochs or max(1, s.epochs // 2), s.epochs - 1)


def stages(s, model):
    """The Stages of a run of `s` training `model`: head/features/finetune train once;
    two-stage trains the head first, then unfreezes from --train-from at a lower rate."""
    heads = tuple(model.head_scopes)
    if s.mode in ("head", "features"):
        return [Stage(1, s.mode, heads, None, s.epochs)]
    if s.mode == "finetune":
        return [Stage(1, "finetune", s.restore.train, s.restore.train_from, s.epochs)]
    first = head_stage_epochs(s)
    return [Stage(1, "head", heads, None, first),
            Stage(2, "finetune", (), s.restore.train_from, s.epochs, s.stage2_lr, first)]


def flat(s):
    """{setting: value} of Settings `s` as JSON has them (lists, not tuples), the restore
    choices among them: the names a search space and the command line use."""
    values = dataclasses.asdict(s)
    values.update(values.pop("restore"))
    return json.loads(json.dumps(values))


def from_json(saved):
    """The Settings a run.json entry holds; a setting it predates takes its default, one it
    does not know (from a newer ckptkit) is left out."""
    if not isinstance(saved, dict) or not isinstance(saved.get("restore", {}), dict):
        raise CkptError(f"run.json: bad settings entry {saved!r}")
    known = {f.name for f in dataclasses.fields(Settings)} - {"restore"}
    options = {f.name for f in dataclasses.fields(RestoreOptions)}
    try:
        return Settings(**{k: v for k, v in saved.items() if k in known},
                        restore=RestoreOptions(**{k: v for k, v in saved.get("restore", {})
                                                  .items() if k in options}))
    except TypeError as e:
        raise CkptError(f"run.json: bad settings entry ({e})") from None


def changes(old, new):
    """[(setting, old value, new value)] where Settings `new` differs from `old`, values as
    a command line spells them; paths compare as absolute paths, two-stage's --head-epochs by
    the epochs its head stage trains. train_dir is where both live: never a change."""
    shown = [_effective(s) for s in (old, new)]
    compared = [{**values, **{name: os.path.abspath(values[name]) for name in _PATHS
                              if values[name] is not None}} for values in shown]
    return [(name, _text(name, shown[0][name]), _text(name, shown[1][name]))
            for name in compared[0]
            if name != "train_dir" and compared[0][name] != compared[1][name]]


def _effective(s):
    """flat(s), with the length of two-stage's head stage: what --head-epochs 0 means."""
    values = flat(s)
    if s.mode == "two-stage" and s.epochs >= 2:
        values["head_epochs"] = head_stage_epochs(s)
    return values


def flag(name):
    """The option of a setting: "lr" -> "--lr", "hidden" -> "--head"."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _text(name, value):
    if name == "augment":                   # the flag is --no-augment
        value = not value
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return "none" if value in (None, "") else str(value)
