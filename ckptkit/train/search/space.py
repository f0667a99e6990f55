"""The search space of `ckptkit search`: which finetune settings vary, and how.

Pure Python: no TensorFlow, and Optuna only inside Space.suggest (parsing never imports it).

A parameter is `NAME=DIST`, from `--param` or a TOML file (`--space`):
- NAME is a finetune option, spelt as the flag (`train-from`, `--lr`) or the setting
  (`train_from`); `head` is the head's hidden layers. `train`, `train-from`, `lr-mult` and
  `layer-decay` are restore options: a trial puts them into its Settings.restore (study.py).
- DIST is one of
    uniform:LO:HI        a float in [LO, HI]
    loguniform:LO:HI     a float in [LO, HI], log scale (LO > 0)
    int:LO:HI            an integer in [LO, HI]
    logint:LO:HI         an integer in [LO, HI], log scale (LO >= 1)
    choice:A,B,...       one of the values (strings, converted to the option's type)
  `head` choices are `none` or sizes joined by `x` (`256x128`); `train` and `lr-mult` choices
  join several scopes with `+` (`Logits+LeNet/fc3`, `Logits=10+LeNet/fc3=2`); `train-from`
  also takes `none`; `augment` takes true/false.
- In the TOML file each key is a NAME and its value a DIST string or a list of choices:
      lr = "loguniform:1e-5:1e-1"
      optimizer = ["sgd", "momentum", "adam"]
      head = ["none", "128", "256x128"]
  A `--param` of the same NAME replaces the file's.
"""
import difflib
import math
from dataclasses import dataclass

from ...errors import CkptError
from ..settings import MODES, OPTIMIZERS, SCHEDULES

# setting -> (type, check of one value or None); the options a trial may vary
_FLOAT, _INT, _STR, _BOOL, _SIZES, _SCOPES = "float", "int", "str", "bool", "sizes", "scopes"
SEARCHABLE = {
    "lr": (_FLOAT, lambda v: v > 0, "positive"),
    "momentum": (_FLOAT, lambda v: 0 <= v <= 1, "in [0, 1]"),
    "dropout": (_FLOAT, lambda v: 0 <= v < 1, "in [0, 1)"),
    "stage2_lr": (_FLOAT, lambda v: v > 0, "positive"),
    "warmup_epochs": (_FLOAT, lambda v: v >= 0, "at least 0"),
    "decay_epochs": (_FLOAT, lambda v: v >= 0, "at least 0"),
    "decay_rate": (_FLOAT, lambda v: v > 0, "positive"),
    "weight_decay": (_FLOAT, lambda v: v >= 0, "at least 0"),
    "label_smoothing": (_FLOAT, lambda v: 0 <= v < 1, "in [0, 1)"),
    "clip_norm": (_FLOAT, lambda v: v >= 0, "at least 0"),
    "epochs": (_INT, lambda v: v >= 1, "at least 1"),
    "head_epochs": (_INT, lambda v: v >= 0, "at least 0"),
    "batch_size": (_INT, lambda v: v >= 1, "at least 1"),
    "image_size": (_INT, lambda v: v == 0 or v >= 8, "0 or at least 8"),
    "patience": (_INT, lambda v: v >= 0, "at least 0"),
    "seed": (_INT, None, None),
    "optimizer": (_STR, OPTIMIZERS, None),
    "schedule": (_STR, SCHEDULES, None),
    "mode": (_STR, MODES, None),
    "train_from": (_STR, None, None),
    "augment": (_BOOL, None, None),
    "hidden": (_SIZES, None, None),
    "train": (_SCOPES, None, None),
    "lr_mults": (_SCOPES, None, None),
    "layer_decay": (_FLOAT, lambda v: 0 < v <= 1, "in (0, 1]"),
}
ALIASES = {"head": "hidden", "lr_mult": "lr_mults", "no_augment": None}
# what other tools call a searchable setting (tf-slim's train_image_classifier flags, Keras):
# the first suggestion for such a name, never accepted in its place
SYNONYMS = {
    "learning_rate": "lr", "base_lr": "lr", "init_lr": "lr",
    "learning_rate_decay_factor": "decay_rate", "num_epochs_per_decay": "decay_epochs",
    "learning_rate_decay_type": "schedule", "scheduler": "schedule",
    "trainable_scopes": "train", "num_epochs": "epochs", "max_epochs": "epochs",
    "batch": "batch_size", "bs": "batch_size", "wd": "weight_decay", "l2": "weight_decay",
    "dropout_rate": "dropout", "drop_rate": "dropout", "opt": "optimizer",
    "smoothing": "label_smoothing", "warmup": "warmup_epochs", "clip": "clip_norm",
    "hidden_units": "head",
}
FIXED = ("net", "checkpoint", "data", "val_data", "val_split", "num_classes", "exclude",
         "include", "maps", "match", "use_moving_averages", "strict", "allow_mismatch",
         "head_scope", "keep_head", "keep", "save_every", "device", "gpus", "devices",
         "mixed_precision", "compare_scratch", "cache_dir", "train_dir")
KINDS = ("uniform", "loguniform", "int", "logint", "choice")


@dataclass(frozen=True)
class Param:
    """One dimension: `name` as the user spelt it (normalised), `setting` the Settings field."""

    name: str
    setting: str
    kind: str
    low: float = None
    high: float = None
    choices: tuple = ()

    @property
    def spec(self):
        if self.kind == "choice":
            return "choice:" + ",".join(self.choices)
        return f"{self.kind}:{_num(self.low)}:{_num(self.high)}"

    def convert(self, value):
        """The Settings value of a sampled `value`."""
        kind = SEARCHABLE[self.setting][0]
        return _convert(self.name, kind, value) if self.kind == "choice" else value


@dataclass(frozen=True)
class Space:
    params: tuple

    def __bool__(self):
        return bool(self.params)

    @property
    def names(self):
        return [p.name for p in self.params]

    def to_json(self):
        return {p.name: p.spec for p in self.params}

    def grid(self):
        """{name: choices} for a grid search; an error when a dimension is continuous."""
        wide = [p.name for p in self.params if p.kind != "choice"]
        if wide:
            raise CkptError(f"--sampler grid needs choice: parameters; {', '.join(wide)} "
                            "are ranges (use choice:A,B,... or another sampler)")
        return {p.name: list(p.choices) for p in self.params}

    def size(self):
        """How many grid points (None when some dimension is continuous)."""
        if any(p.kind != "choice" for p in self.params):
            return None
        return math.prod(len(p.choices) for p in self.params)

    def suggest(self, trial):
        """Sample every dimension on an Optuna trial; returns {setting: value}."""
        values = {}
        for p in self.params:
            if p.kind == "choice":
                raw = trial.suggest_categorical(p.name, list(p.choices))
            elif p.kind in ("int", "logint"):
                raw = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.kind == "logint")
            else:
                raw = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "loguniform")
            values[p.setting] = p.convert(raw)
        return values

    def settings(self, params):
        """{setting: value} of a trial's recorded params ({name: raw value})."""
        by_name = {p.name: p for p in self.params}
        return {by_name[k].setting: by_name[k].convert(v) for k, v in params.items()
                if k in by_name}

    def first(self):
        """{setting: value} with every dimension at its first choice or low end."""
        return {p.setting: p.convert(p.choices[0]) if p.kind == "choice" else
                (int(p.low) if p.kind in ("int", "logint") else p.low) for p in self.params}


def parse_space(params=(), path=None):
    """The Space of a TOML file `path` and `--param NAME=DIST` strings (these win)."""
    entries = {}
    if path:
        for name, value in _read_toml(path).items():
            entries[_name(name, f"{path}: ")] = (name, _toml_spec(name, value, path), f"{path}: ")
    seen = set()
    for text in params:
        name, sep, spec = str(text).partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise CkptError(f"--param {text!r}: expected NAME=DIST, e.g. "
                            "lr=loguniform:1e-5:1e-1 or optimizer=choice:sgd,adam")
        key = _name(name, "--param ")
        if key in seen:
            raise CkptError(f"--param {name.strip()} given twice")
        seen.add(key)
        entries[key] = (name, spec.strip(), "--param ")
    if not entries:
        raise CkptError("empty search space: give --space FILE or --param NAME=DIST "
                        "(e.g. --param lr=loguniform:1e-5:1e-1)")
    return Space(tuple(_param(key, spec, where) for key, (_, spec, where) in entries.items()))


def _name(text, where):
    """The setting a NAME stands for; an error naming the closest ones when unknown."""
    key = text.strip().lstrip("-").replace("-", "_")
    if key in FIXED:
        flag = key.replace("_", "-")
        raise CkptError(f"{where}{text.strip()}: not searchable; give --{flag} once for "
                        "every trial")
    if key == "no_augment":
        raise CkptError(f"{where}{text.strip()}: search `augment` with choice:true,false")
    setting = ALIASES.get(key, key)
    if setting not in SEARCHABLE:
        known = sorted(set(SEARCHABLE) - {"hidden", "lr_mults"} | {"head", "lr_mult"})
        close = _closest(key, known)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise CkptError(f"{where}unknown parameter {text.strip()!r}{hint} (searchable: "
                        f"{', '.join(known)})")
    return key


def _closest(key, known):
    """The name a synonym stands for (learning_rate -> lr), else up to 3 searchable names
    spelt like `key` or like a synonym of theirs."""
    if key in SYNONYMS:
        return [SYNONYMS[key]]
    matches = difflib.get_close_matches(key, known + sorted(SYNONYMS), n=6, cutoff=0.5)
    return list(dict.fromkeys(SYNONYMS.get(m, m) for m in matches))[:3]


def _param(key, spec, where):
    setting = ALIASES.get(key, key)
    kind, check, wanted = SEARCHABLE[setting]
    label = f"{where}{key}={spec}"
    dist, sep, rest = spec.partition(":")
    dist = dist.strip().lower()
    if not sep or dist not in KINDS:
        raise CkptError(f"{label}: expected DIST as one of uniform:LO:HI, loguniform:LO:HI, "
                        "int:LO:HI, logint:LO:HI, choice:A,B,...")
    if dist == "choice":
        choices = tuple(c.strip() for c in rest.split(","))
        if not rest.strip() or any(not c for c in choices):
            raise CkptError(f"{label}: choice needs values separated by commas, e.g. "
                            "choice:sgd,adam")
        if len(set(choices)) != len(choices):
            raise CkptError(f"{label}: a choice is listed twice")
        for c in choices:
            _check(label, kind, check, wanted, _convert(label, kind, c))
        return Param(key, setting, "choice", choices=choices)
    if kind not in (_FLOAT, _INT):
        raise CkptError(f"{label}: {key} takes choice:A,B,... (it is not a number)")
    if kind == _INT and dist in ("uniform", "loguniform"):
        raise CkptError(f"{label}: {key} is an integer; use int:LO:HI or logint:LO:HI")
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise CkptError(f"{label}: {dist} needs two bounds, {dist}:LO:HI")
    try:
        low, high = (int(b) if dist in ("int", "logint") else float(b) for b in bounds)
    except ValueError:
        number = "integers" if dist in ("int", "logint") else "numbers"
        raise CkptError(f"{label}: the bounds must be {number}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise CkptError(f"{label}: needs LO < HI, got {bounds[0]} and {bounds[1]}")
    if dist in ("loguniform", "logint") and low <= 0:
        raise CkptError(f"{label}: a log scale needs LO > 0")
    for value in (low, high):
        _check(label, kind, check, wanted, value)
    return Param(key, setting, dist, low=low, high=high)


def _check(label, kind, check, wanted, value):
    if isinstance(check, tuple):
        if value not in check:
            raise CkptError(f"{label}: {value!r} is not one of {', '.join(check)}")
    elif check is not None and not check(value):
        raise CkptError(f"{label}: {value!r} is out of range (must be {wanted})")


def _convert(label, kind, text):
    """A choice string as the setting's value."""
    text = str(text).strip()
    try:
        if kind == _FLOAT:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if kind == _INT:
            return int(text)
    except ValueError:
        raise CkptError(f"{label}: {text!r} is not a{'n integer' if kind == _INT else ' number'}"
                        ) from None
    if kind == _BOOL:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise CkptError(f"{label}: {text!r} is not true or false")
        return text.lower() in ("true", "1", "yes")
    if kind == _SIZES:
        if text.lower() in ("none", "0", ""):
            return ()
        try:
            sizes = tuple(int(n) for n in text.lower().split("x"))
        except ValueError:
            sizes = (0,)
        if any(n < 1 for n in sizes):
            raise CkptError(f"{label}: head sizes look like none, 128 or 256x128, not {text!r}")
        return sizes
    if kind == _SCOPES:
        return tuple(p.strip() for p in text.split("+") if p.strip())
    if text.lower() == "none":
        return None
    return text


def _read_toml(path):
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise CkptError(f"{path}: not valid TOML ({e})") from None
    return data


def _toml_spec(name, value, path):
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
            isinstance(v, (str, int, float, bool)) for v in value):
        return "choice:" + ",".join(str(v).lower() if isinstance(v, bool) else str(v)
                                    for v in value)
    raise CkptError(f"{path}: {name} = {value!r}: give a DIST string like "
                    "\"loguniform:1e-5:1e-1\" or a list of choices")


def _num(value):
    return repr(value) if isinstance(value, float) else str(value)
