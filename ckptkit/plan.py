"""Restore plans: which checkpoint tensor goes into which model variable, and why not.

Pure: names, shapes and dtypes in, a RestorePlan out; no TensorFlow, no numpy (reading a
checkpoint's listing goes through paths). Every restore choice a user makes is one
RestoreOptions record, declared once as command-line options (cli/options.py) for `plan`,
`finetune` and `search`; `plan_for` is the one way a plan is made from it. The training layer
applies the plan and `ckptkit plan` renders it, so what `plan` shows is exactly what
fine-tuning restores.

How a plan is made
- Model variables are taken in graph creation order. Training state among them (optimizer
  slots, global_step, EMA shadows: `scopes.role` is not "model") is never planned; the training
  loop initialises it.
- `exclude` / `include` / `train` / `train_from` are scope patterns (scopes.compile_pattern) over
  MODEL names, like tf-slim's `--checkpoint_exclude_scopes`; each must match some variable,
  except that an `exclude` pattern matching no model variable but some checkpoint tensors
  (slim's own `resnet_v1_50/logits` under a new head) keeps those tensors out of the plan.
- `classifier`: the net record's classifier scopes when a new head replaces it; checkpoint
  tensors under them are kept out by default (reported, never an error when absent).
- Rename rules (`maps`) rewrite checkpoint names, in order, to line them up with model names:
  `old/=new/` replaces a leading scope (TF's `init_from_checkpoint` assignment map; "/" on
  either side is the root, so `/=tower/` adds a prefix and `tower/=/` strips one; without the
  trailing "/" the rule still replaces whole components, so `a/w=b/w` renames one tensor);
  `re:REGEX=REPL` is `re.sub` (split at the last "=", TF names never contain one).
- Pairing is by name after renames, or with match="suffix" by whole-component suffix (one name
  ends with the other; the longest common suffix wins; an exact name beats any other; a tie,
  or one checkpoint tensor claimed by two model variables, is an error).
- Only checkpoint tensors whose role is "model" are restored, plus, with use_moving_averages,
  the EMA shadow `<var>/ExponentialMovingAverage` of a paired variable (taken instead of it).
  Everything else is `unused`, with its role.
- Learning-rate multipliers: `lr_mults` patterns (the innermost scope wins), times the layer
  decay: with layer_decay d < 1 the trainable variables fall into layers in creation order,
  a layer being a scope one level below the net's (resnet_v1_50/block3, InceptionV3/Mixed_6c,
  vgg_16/conv4) or a scope of its own beside it (a new head's Logits; NASNet's cells, which
  have no net scope), the net's scope being the first scope of the first model variable; the
  last layer trains at the full rate and each earlier one at d times the next (timm's
  --layer-decay, over slim's blocks).
- label_offset: a checkpoint tensor whose last axis is `label_offset` longer than the model's
  (1001-class checkpoints into 1000-class heads), all else equal, restores `ckpt[..., offset:]`.

Notes
- A mismatched pair (shape or dtype) is never restored: it is reported in `mismatched`, and
  `RestorePlan.check()` (which `plan_restore(strict=True)` calls, and which whoever applies a
  plan should call) refuses it; allow_mismatch moves it to `skipped` (reported, accepted).
- Restoring nothing is an error: it would mean training from scratch.
- Cost is linear in the number of names: patterns are compiled once, suffixes are dict keys.
"""
import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from difflib import get_close_matches
from math import prod
from typing import NamedTuple

from .errors import CkptError, PlanError
from .paths import open_checkpoint
from .scopes import MATCH_MODES, RenameRule, closest_scopes, compile_pattern, role

EMA_SUFFIX = "/ExponentialMovingAverage"
CLASSIFIER = "the new head (default)"     # why a net's classifier stays out
_LISTED = 10            # problems named in one error message before "... and N more"


@dataclass(frozen=True)
class RestoreOptions:
    """Every choice about what a model restores from a checkpoint and what it trains; the
    keyword arguments of plan_restore (see there), as `plan`, `finetune` and `search` take
    them. Patterns are tuples of texts (comma lists already split)."""

    exclude: tuple = ()
    include: tuple = ()
    train: tuple = ()
    train_from: str = None
    lr_mults: tuple = ()
    layer_decay: float = 1.0
    maps: tuple = ()
    match: str = "component"
    use_moving_averages: bool = False
    strict: bool = False
    allow_mismatch: bool = False

    def __post_init__(self):
        for name in ("exclude", "include", "train", "lr_mults", "maps"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))

    def to_json(self):
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class ModelVar:
    """A variable of the model being built: name without ":0", shape, numpy dtype name."""

    name: str
    shape: tuple
    dtype: str
    trainable: bool = True

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))

    @classmethod
    def from_variable(cls, var, trainable=True):
        """A checkpoint Variable as a model variable (`plan --target`: one checkpoint's
        variables as the model for another)."""
        return cls(var.name, tuple(var.shape), var.dtype, trainable)


@dataclass(frozen=True)
class Restore:
    """Checkpoint tensor `ckpt` goes into model variable `model` of shape `shape`; offset > 0
    means `ckpt[..., offset:]` (the checkpoint's first classes dropped on the last axis)."""

    ckpt: str
    model: str
    shape: tuple
    offset: int = 0

    def sliced(self, value):
        """`value`, the checkpoint tensor's, as the model variable takes it."""
        return value[..., self.offset:] if self.offset else value

    def to_json(self):
        """The model name when the checkpoint name is the same and nothing is sliced, else
        {"model", "ckpt"} plus "offset" when there is one."""
        if self.ckpt == self.model and not self.offset:
            return self.model
        out = {"model": self.model, "ckpt": self.ckpt}
        if self.offset:
            out["offset"] = self.offset
        return out


@dataclass(frozen=True)
class Mismatch:
    """A model variable and its checkpoint tensor that differ in shape or dtype."""

    model: str
    ckpt: str
    model_shape: tuple
    ckpt_shape: tuple
    model_dtype: str
    ckpt_dtype: str

    def to_json(self, skipped=False):
        return {"model": self.model, "ckpt": self.ckpt,
                "model_shape": list(self.model_shape), "ckpt_shape": list(self.ckpt_shape),
                "model_dtype": self.model_dtype, "ckpt_dtype": self.ckpt_dtype,
                "skipped": skipped}

    def describe(self):
        return (f"model {_shape(self.model_shape)} {self.model_dtype}, "
                f"checkpoint {_shape(self.ckpt_shape)} {self.ckpt_dtype}")


class Section(NamedTuple):
    """One group of a plan table: rows are (model name, checkpoint name, detail) strings;
    params is the group's parameter count."""

    title: str
    rows: list
    params: int


_UNUSED_TITLES = {   # role -> title of its group of unused checkpoint tensors
    "model": "unused: model weights",
    "optimizer": "unused: optimizer slots (expected)",
    "ema": "unused: EMA shadows (expected)",
    "step": "unused: step counters (expected)",
    "meta": "unused: object graph (expected)",
}


@dataclass
class RestorePlan:
    """What a restore does, in model order (unused: in checkpoint order).

    restore: Restore records; excluded: (model name, pattern text); dropped: (checkpoint name,
    pattern text or CLASSIFIER) kept out before pairing; missing: model names not in the
    checkpoint; mismatched / skipped: Mismatch records (skipped = accepted by
    allow_mismatch); unused: (checkpoint name, role); trainable: model names.
    model_shapes / ckpt_shapes are there for rendering.
    """

    restore: list = field(default_factory=list)
    excluded: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    unused: list = field(default_factory=list)
    trainable: list = field(default_factory=list)
    lr_mults: dict = field(default_factory=dict)   # trainable name -> multiplier (not 1)
    model_shapes: dict = field(default_factory=dict, repr=False, compare=False)
    ckpt_shapes: dict = field(default_factory=dict, repr=False, compare=False)
    notes: list = field(default_factory=list, repr=False, compare=False)   # one line each

    def to_json(self):
        """DESIGN's contract: names everywhere, except
        - restore: a plain model name when the checkpoint tensor has the same name and is not
          sliced, else {"model", "ckpt"} and "offset" when one applies;
        - mismatched: {"model", "ckpt", "model_shape", "ckpt_shape", "model_dtype",
          "ckpt_dtype", "skipped"}, skipped true for those allow_mismatch accepted;
        - and, only when some multiplier is not 1, "lr_mults": {trainable name: multiplier}.
        """
        return {
            "restore": [r.to_json() for r in self.restore],
            "excluded": [name for name, _ in self.excluded],
            "excluded_tensors": [name for name, _ in self.dropped],
            "missing": list(self.missing),
            "mismatched": [m.to_json() for m in self.mismatched]
                          + [m.to_json(skipped=True) for m in self.skipped],
            "unused": [name for name, _ in self.unused],
            "trainable": list(self.trainable),
            **({"lr_mults": dict(self.lr_mults)} if self.lr_mults else {}),
        }

    def check(self, strict=False):
        """Raise PlanError if a paired variable mismatches (always) or, with strict, if a model
        variable is missing: each named with both shapes and the flag that settles it."""
        problems = [f"{m.model}: {m.describe()} (--exclude {_scope(m.model)} or "
                    f"--allow-mismatch)" for m in self.mismatched]
        if strict:
            problems += [f"{name}: not in the checkpoint (--exclude {_scope(name)})"
                         for name in self.missing]
        if problems:
            shown = problems[:_LISTED]
            if len(problems) > _LISTED:
                shown.append(f"... and {len(problems) - _LISTED} more")
            how = " (--strict)" if strict and self.missing else ""
            raise PlanError(f"{_plural(len(problems), 'model variable')} cannot be restored"
                            f"{how}: " + "; ".join(shown))

    def sections(self):
        """The plan as table groups (Section: title, rows, params); the core groups always,
        checkpoint exclusions and skipped only when there are some, unused one group per role present."""
        ms, cs = self.model_shapes, self.ckpt_shapes
        out = []
        rows = []
        for r in self.restore:
            detail = _shape(r.shape)
            if r.offset:
                detail += f" from {_shape(cs.get(r.ckpt, r.shape))}, first {r.offset} dropped"
            if r.ckpt.endswith(EMA_SUFFIX):
                detail += " (EMA)"
            rows.append((r.model, "" if r.ckpt == r.model else r.ckpt, detail))
        out.append(Section("restore", rows, sum(prod(r.shape) for r in self.restore)))
        out.append(Section("excluded",
                           [(n, "", f"{_shape(ms[n])} by {p}") for n, p in self.excluded],
                           sum(prod(ms[n]) for n, _ in self.excluded)))
        if self.dropped:
            out.append(Section("excluded: checkpoint tensors",
                               [("", n, f"{_shape(cs[n])} by {p}") for n, p in self.dropped],
                               sum(prod(cs[n]) for n, _ in self.dropped)))
        out.append(Section("missing (initialised fresh)",
                           [(n, "", _shape(ms[n])) for n in self.missing],
                           sum(prod(ms[n]) for n in self.missing)))
        groups = [("mismatched", self.mismatched)]
        if self.skipped:
            groups.append(("skipped (--allow-mismatch)", self.skipped))
        for title, items in groups:
            out.append(Section(title, [(m.model, m.ckpt, m.describe()) for m in items],
                               sum(prod(m.model_shape) for m in items)))
        by_role = defaultdict(list)
        for name, r in self.unused:
            by_role[r].append(name)
        for r, title in _UNUSED_TITLES.items():
            if by_role.get(r):
                names = by_role[r]
                out.append(Section(title, [("", n, _shape(cs[n])) for n in names],
                                   sum(prod(cs[n]) for n in names)))
        out.append(Section("trainable", [
            (n, "", _shape(ms[n]) + (f" lr x{self.lr_mults[n]:g}" if n in self.lr_mults else ""))
            for n in self.trainable], sum(prod(ms[n]) for n in self.trainable)))
        return out


def plan_restore(checkpoint_vars, model_vars, *, exclude=(), include=(), maps=(),
                 match="component", use_moving_averages=False, label_offset=0, strict=False,
                 allow_mismatch=False, train=None, train_from=None, lr_mults=(),
                 layer_decay=1.0, classifier=()):
    """Plan restoring `model_vars` (ModelVar, creation order) from `checkpoint_vars`
    (Variable records); see the module notes. `lr_mults`: "SCOPE=MULT" texts or (pattern,
    multiplier) pairs scaling the learning rate of trainable variables (the 10x head; the
    pattern matching the innermost scope wins, the later one on a tie), each multiplied by
    `layer_decay` once per layer built after the variable's. Raises PlanError for
    patterns or rename rules that match nothing, ambiguous pairings, restoring nothing, and
    (strict) any missing or mismatched variable."""
    if match not in MATCH_MODES:
        raise PlanError(f"unknown match mode {match!r}; use one of {', '.join(MATCH_MODES)}")
    if train and train_from:
        raise PlanError("--train and --train-from cannot be combined; give one of them")
    if not isinstance(label_offset, int) or label_offset < 0:
        raise PlanError(f"label offset must be a whole number >= 0, not {label_offset!r}")
    ckpt = list(checkpoint_vars)
    models = [m for m in model_vars if role(m.name) == "model"]
    names = [m.name for m in models]
    seen = set()
    for name in names:
        if name in seen:
            raise PlanError(f"model variable {name!r} is listed twice")
        seen.add(name)

    # which model variables take part
    kind = "prefix" if match == "prefix" else "component"
    excl, ckpt_excl = _exclusions(exclude, kind, names,
                                  [v.name for v in ckpt if role(v.name) in ("model", "ema")])
    ckpt_excl += [(compile_pattern(scope, kind), CLASSIFIER) for scope in classifier]
    incl = _patterns(include, kind, names)
    trainable = _trainable(models, names, train, train_from, kind)
    multipliers = _lr_mults(lr_mults, trainable, names, kind)
    for name, decay in _layer_decay(trainable, names, layer_decay).items():
        multipliers[name] = multipliers.get(name, 1.0) * decay
    excluded, candidates = [], []
    for m in models:
        hit = next((p.text for p in excl if p.matches(m.name)), None)
        if hit is None and incl and not any(p.matches(m.name) for p in incl):
            hit = "(not included)"
        if hit is None:
            candidates.append(m)
        else:
            excluded.append((m.name, hit))

    # checkpoint names as renamed; only model weights and EMA shadows can be restored
    roles = {v.name: role(v.name) for v in ckpt}
    dropped = [(v.name, reason) for v in ckpt
               for reason in [next((r for p, r in ckpt_excl if p.matches(v.name)), None)]
               if reason is not None and roles[v.name] in ("model", "ema")]
    kept_out = {name for name, _ in dropped}
    restorable = [v for v in ckpt if roles[v.name] in ("model", "ema") and
                  v.name not in kept_out]
    by_name = renamed(restorable, maps)
    pool = {n: v for n, v in by_name.items() if roles[v.name] == "model"}
    shadows = {v.name: v for v in restorable if roles[v.name] == "ema"}
    if match == "suffix":
        pairs = _pair_by_suffix([m.name for m in candidates], pool)
    else:
        pairs = {m.name: m.name for m in candidates if m.name in pool}

    restore, missing, mismatched, skipped = [], [], [], []
    accounted = set()        # checkpoint names restored or reported as mismatched
    for m in candidates:
        key = pairs.get(m.name)
        src = pool.get(key) if key is not None else None
        if use_moving_averages:     # the paired tensor's own shadow, or one named like `m`
            shadow = shadows.get(src.name + EMA_SUFFIX) if src is not None else None
            if shadow is None:
                shadow = by_name.get(m.name + EMA_SUFFIX)
            if shadow is not None and roles[shadow.name] == "ema":
                src = shadow
        if src is None:
            missing.append(m.name)
            continue
        accounted.add(src.name)
        offset = _fit(m, src, label_offset)
        if offset is None:
            bad = Mismatch(m.name, src.name, m.shape, tuple(src.shape), m.dtype, src.dtype)
            (skipped if allow_mismatch else mismatched).append(bad)
        else:
            restore.append(Restore(src.name, m.name, m.shape, offset))

    unused = [(v.name, roles[v.name]) for v in ckpt
              if v.name not in accounted and v.name not in kept_out]
    plan = RestorePlan(
        restore=restore, excluded=excluded, dropped=dropped, missing=missing,
        mismatched=mismatched, skipped=skipped, unused=unused, trainable=trainable,
        lr_mults=multipliers,
        model_shapes={m.name: m.shape for m in models},
        ckpt_shapes={v.name: tuple(v.shape) for v in ckpt})
    if not restore:
        raise PlanError(_nothing(plan, models, candidates, pool, match))
    if strict:
        plan.check(strict=True)
    return plan


def plan_for(checkpoint_vars, model_vars, options, *, label_offset=0, classifier=()):
    """The plan `options` (RestoreOptions) make for restoring `model_vars` from
    `checkpoint_vars`, checked: a mismatch is always an error, a missing variable with
    options.strict. The one way `plan`, `finetune` and `search` make a plan."""
    plan = plan_restore(checkpoint_vars, model_vars, label_offset=label_offset,
                        classifier=classifier,
                        exclude=options.exclude, include=options.include, maps=options.maps,
                        match=options.match, use_moving_averages=options.use_moving_averages,
                        strict=options.strict, allow_mismatch=options.allow_mismatch,
                        train=options.train or None, train_from=options.train_from,
                        lr_mults=options.lr_mults, layer_decay=options.layer_decay)
    plan.check(strict=options.strict)
    return plan


def plan_checkpoint(checkpoint, model_vars, options, *, label_offset=0, classifier=()):
    """plan_for against the checkpoint at `checkpoint` (any path paths.resolve takes); the
    plan's notes say how the path was resolved when that needed a fallback."""
    with open_checkpoint(checkpoint) as reader:
        plan = plan_for(list(reader), model_vars, options, label_offset=label_offset,
                        classifier=classifier)
        if reader.note:
            plan.notes.append(reader.note)
    return plan


def target_variables(path):
    """The model variables `plan --target` names: a JSON list of {name, shape, dtype}
    (`inspect --json` output), or the model weights of another checkpoint."""
    if not str(path).endswith(".json"):
        with open_checkpoint(path) as reader:
            return [ModelVar.from_variable(v) for v in reader if role(v.name) == "model"]
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        items = data["variables"] if isinstance(data, dict) else data
        return [ModelVar(v["name"], tuple(v["shape"]), v.get("dtype", "float32"),
                         v.get("trainable", True)) for v in items]
    except (ValueError, KeyError, TypeError) as e:
        raise CkptError(f"{path}: not a list of {{name, shape, dtype}} variables "
                        f"({type(e).__name__}: {e})") from None


# --- helpers ---------------------------------------------------------------------------------

def _exclusions(texts, kind, names, ckpt_names):
    """(patterns over model names, [(pattern, its text)] over checkpoint names only): a pattern
    matching no model variable but some restorable checkpoint tensor (`ckpt_names`) keeps
    those tensors out; one that matches neither is an error naming the closest of both."""
    model, ckpt = [], []
    for text in [texts] if isinstance(texts, str) else texts or ():
        p = compile_pattern(text, kind)
        if any(p.matches(n) for n in names):
            model.append(p)
        elif any(p.matches(n) for n in ckpt_names):
            ckpt.append((p, p.text))
        else:
            raise PlanError(_no_match(text, names + ckpt_names))
    return model, ckpt


def _patterns(texts, kind, names):
    """Compile scope patterns; one that matches none of `names` is an error."""
    if isinstance(texts, str):
        texts = [texts]
    out = []
    for text in texts or ():
        p = compile_pattern(text, kind)
        if not any(p.matches(n) for n in names):
            raise PlanError(_no_match(text, names))
        out.append(p)
    return out


def _no_match(text, names):
    close = closest_scopes(text, names)
    hint = f"; closest: {', '.join(close)}" if close else ""
    return f"no variable matches scope {text!r}{hint}"


def _trainable(models, names, train, train_from, kind):
    """Model names the optimizer may update (trainable variables only)."""
    able = [m for m in models if m.trainable]
    if train:
        able_names = [m.name for m in able]
        pats = []
        for text in [train] if isinstance(train, str) else train:
            p = compile_pattern(text, kind)
            if not any(p.matches(n) for n in able_names):
                if any(p.matches(n) for n in names):
                    raise PlanError(f"no trainable variable matches scope {text!r} (it matches "
                                    f"only non-trainable ones such as BatchNorm statistics)")
                raise PlanError(_no_match(text, names))
            pats.append(p)
        return [m.name for m in able if any(p.matches(m.name) for p in pats)]
    if train_from:
        p = compile_pattern(train_from, kind)
        first = next((i for i, m in enumerate(models) if p.matches(m.name)), None)
        if first is None:
            raise PlanError(_no_match(train_from, names))
        return [m.name for m in models[first:] if m.trainable]
    return [m.name for m in able]


def _lr_mults(specs, trainable, names, kind):
    """{trainable name: multiplier} for the names a multiplier pattern reaches; a pattern
    reaching no trainable variable is an error."""
    parsed = []
    for spec in specs or ():
        if isinstance(spec, str):
            text, sep, value = spec.rpartition("=")
            try:
                mult = float(value)
            except ValueError:
                mult = None
            if not sep or not text or mult is None or not mult >= 0:
                raise PlanError(f"--lr-mult takes SCOPE=MULTIPLIER (e.g. Logits=10), not "
                                f"{spec!r}")
        else:
            text, mult = spec
        pattern = compile_pattern(text, kind)
        if not any(pattern.matches(n) for n in trainable):
            if any(pattern.matches(n) for n in names):
                raise PlanError(f"--lr-mult {text!r} reaches no trainable variable (what it "
                                "matches is frozen); add it to --train or drop the multiplier")
            raise PlanError(_no_match(text, names))
        parsed.append((pattern, float(mult)))
    out = {}
    for name in trainable:
        parts = name.split("/")
        best, mult = 0, 1.0
        for pattern, m in parsed:   # the innermost scope wins: Logits=10 over net=0.1
            depth = next((k for k in range(1, len(parts) + 1)
                          if pattern.matches("/".join(parts[:k]))), 0)
            if depth and depth >= best:
                best, mult = depth, m
        if mult != 1.0:
            out[name] = mult
    return out


def _layer_decay(trainable, names, decay):
    """{trainable name: decay ** (layers built after its own)} for decay < 1 (see the module
    notes; `names`: every model variable, in creation order)."""
    if not (isinstance(decay, (int, float)) and 0 < decay <= 1):
        raise PlanError(f"--layer-decay takes a factor in (0, 1], not {decay!r}")
    if decay == 1 or not trainable:
        return {}
    net = names[0].split("/")[0] if "/" in names[0] else None

    def layer(name):
        scope = name.split("/")[:-1]
        return "/".join(scope[:2] if scope[:1] == [net] else scope[:1]) or name
    layers = {name: layer(name) for name in trainable}
    order = list(dict.fromkeys(layers.values()))
    above = {key: len(order) - 1 - i for i, key in enumerate(order)}
    return {name: decay ** above[key] for name, key in layers.items() if above[key]}


def renamed(variables, maps):
    """{renamed name: Variable} after applying the rules in order."""
    current = [v.name for v in variables]
    for text in [maps] if isinstance(maps, str) else maps or ():
        rule = RenameRule(text)
        renamed = [rule.apply(n) for n in current]
        if renamed == current:
            close = closest_scopes(rule.old, current) if current else []
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise PlanError(f"rename rule {rule.text!r} changes no checkpoint name{hint}")
        current = renamed
    out = {}
    for v, name in zip(variables, current):
        if name in out:
            raise PlanError(f"rename rules map both {out[name].name!r} and {v.name!r} to "
                            f"{name!r}")
        out[name] = v
    return out


def _suffixes(name):
    """Whole-component suffixes of `name`, longest first, `name` itself excluded."""
    i = name.find("/")
    while i != -1:
        yield name[i + 1:]
        i = name.find("/", i + 1)


def _pair_by_suffix(model_names, pool):
    """{model name: checkpoint name} where one ends with the other by whole components."""
    ending = defaultdict(list)        # proper suffix -> checkpoint names ending with it
    for c in pool:
        for s in _suffixes(c):
            ending[s].append(c)
    pairs, claimed = {}, {}
    for m in model_names:
        if m in pool:
            best = [m]
        else:
            best = ending.get(m) or next(([s] for s in _suffixes(m) if s in pool), [])
        if len(best) > 1:
            raise PlanError(f"--match suffix: model variable {m!r} matches both {best[0]!r} "
                            f"and {best[1]!r} in the checkpoint; use --map or --exclude")
        if best:
            c = best[0]
            if c in claimed:
                raise PlanError(f"--match suffix: checkpoint tensor {c!r} matches both "
                                f"{claimed[c]!r} and {m!r}; use --map or --exclude")
            claimed[c] = m
            pairs[m] = c
    return pairs


def _dtype(name):
    return name[:-4] if name.endswith("_ref") else name


def _fit(m, v, label_offset):
    """The offset restoring checkpoint tensor `v` into model variable `m` takes, or None."""
    if _dtype(m.dtype) != v.dtype:
        return None
    shape = tuple(v.shape)
    if m.shape == shape:
        return 0
    if (label_offset and len(m.shape) == len(shape) >= 1 and m.shape[:-1] == shape[:-1]
            and shape[-1] == m.shape[-1] + label_offset):
        return label_offset
    return None


def _nothing(plan, models, candidates, pool, match):
    """Why a plan restores nothing, and what to try."""
    if not models:
        return "nothing to restore: the model has no variables"
    if not candidates:
        return f"nothing to restore: all {_plural(len(models), 'model variable')} are excluded"
    if not pool:
        return "nothing to restore: the checkpoint holds no model weights"
    if plan.missing and not (plan.mismatched or plan.skipped):
        name = plan.missing[0]
        close = get_close_matches(name, list(pool), n=1, cutoff=0.3)
        example = f" (closest: {close[0]!r})" if close else ""
        fix = "--map OLD/=NEW/" if match == "suffix" else "--match suffix or --map OLD/=NEW/"
        return (f"nothing to restore: none of the {_plural(len(candidates), 'model variable')} "
                f"is in the checkpoint, e.g. {name!r}{example}; line the names up with {fix}")
    bad = (plan.mismatched or plan.skipped)[0]
    return (f"nothing to restore: {len(plan.missing)} missing, "
            f"{len(plan.mismatched) + len(plan.skipped)} mismatched of "
            f"{_plural(len(candidates), 'model variable')}, e.g. {bad.model}: {bad.describe()}")


def _scope(name):
    """The scope to exclude for a variable: its parent scope (or itself at top level)."""
    return name.rpartition("/")[0] or name


def _shape(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _plural(n, word):
    return f"{n} {word}{'s' * (n != 1)}"
