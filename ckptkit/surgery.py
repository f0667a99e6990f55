"""Checkpoint surgery: edit and convert checkpoints tensor by tensor, without TensorFlow.

Two steps. `plan_surgery` is pure: the input's variables (and a second checkpoint's, for
--merge) and the operations in, a `SurgeryPlan` out: every output tensor with where its
value comes from and what is done to it, every dropped tensor with the reason. Everything
that can be wrong (a rename that matches nothing, two names renamed onto one, a cast of an
integer tensor) is an error here, before any file is opened for writing. `run_surgery`
then streams: one tensor at a time from reader to writer; a tensor nothing changes is copied
as its stored bytes where the writer can (V2 -> V2, crc32c reused), only transformed ones
are decoded. Memory stays at about the largest transformed tensor.

Operations, applied in this order whatever the order of the flags:
merge (union with OTHER; a name in both is an error unless `prefer` says which wins) ->
use_moving_averages (X takes the value of X/ExponentialMovingAverage, the shadow goes) ->
strip_optimizer (slots, step counters, EMA shadows unless keep_ema) -> drop -> keep ->
strip_prefix, renames (in order), add_prefix -> set (NAME=file.npy, by output name) ->
slice_classes -> cast. Scope patterns (drop, keep, cast, slice) read as in scopes.py.
"""
import glob
import os
import re
from dataclasses import dataclass, field
from math import prod

from .errors import CkptError, NotFound, PlanError
from .fileio import STATE_FILE, is_one_of, new_output, output_lock, write_state
from .formats.base import no_cyclic_gc
from .formats.tf_v1 import SHARD_SUFFIX
from .scopes import RenameRule, closest_scopes, compile_pattern, role
from .variable import ITEMSIZE, Variable

CAST_TARGETS = ("float16", "bfloat16", "float32")
FLOATING = ("float16", "bfloat16", "float32", "float64")
LOGITS_SCOPES = ("Logits", "AuxLogits", "logits")
_SLICE = re.compile(r"^(-?\d*):(-?\d*)$")


@dataclass
class Entry:
    """One output tensor: its name, where its value comes from, what is done to it."""

    name: str
    var: object            # the source Variable (its own name is the old name)
    source: str = "input"  # "input" | "other" (--merge)
    shape: tuple = ()
    dtype: str = ""
    value_file: str = ""   # --set: the .npy file that replaces the value
    cut: tuple = None      # --slice-classes: (start, stop) on the last axis
    cast: str = ""         # target dtype
    notes: list = field(default_factory=list)

    @property
    def changed(self):
        """True when the value must be decoded (not copied as stored)."""
        return bool(self.value_file or self.cut or self.cast)

    @property
    def nbytes(self):
        size = ITEMSIZE.get(self.dtype, 0)
        return prod(self.shape) * size if size else self.var.nbytes

    def to_json(self):
        return {"name": self.name, "from": self.var.name, "source": self.source,
                "shape": list(self.shape), "dtype": self.dtype, "ops": list(self.notes)}


@dataclass
class SurgeryPlan:
    entries: list          # Entry, sorted by output name
    dropped: list          # (source, old name, shape, dtype, reason)

    def to_json(self):
        return {"tensors": [e.to_json() for e in self.entries],
                "dropped": [{"name": n, "source": s, "shape": list(sh), "dtype": d,
                             "reason": why} for s, n, sh, d, why in self.dropped]}

    def lines(self):
        """The name table: `old -> new  shape dtype  (ops)` and `- old  ... (why dropped)`."""
        out = []
        for e in self.entries:
            old = e.var.name if e.source == "input" else f"{e.var.name} [other]"
            arrow = f"{old} -> {e.name}" if old != e.name else e.name
            before = f"{_shape(e.var.shape)} {e.var.dtype}"
            after = f"{_shape(e.shape)} {e.dtype}"
            what = before if before == after else f"{before} -> {after}"
            ops = f"  ({', '.join(e.notes)})" if e.notes else ""
            out.append(f"  {arrow}  {what}{ops}")
        for source, name, shape, dtype, why in self.dropped:
            mark = " [other]" if source == "other" else ""
            out.append(f"- {name}{mark}  {_shape(shape)} {dtype}  ({why})")
        return out

    def summary(self):
        kept = sum(e.nbytes for e in self.entries)
        changed = sum(1 for e in self.entries if e.changed)
        return (f"{len(self.entries)} tensors ({changed} transformed), "
                f"{len(self.dropped)} dropped, {_size(kept)}")


def plan_surgery(variables, *, other=(), prefer=None, use_moving_averages=False,
                 strip_optimizer=False, keep_ema=False, drop=(), keep=(), strip_prefix=None,
                 names=None, renames=(), add_prefix=None, set_values=None, slice_classes=(),
                 cast=()):
    """The SurgeryPlan for the input's `variables` (Variables, any order) and the operations
    (see the module docstring); `other` are the --merge checkpoint's variables, `names` maps
    input names to new ones exactly (one lookup per tensor, before the rename rules: a
    ported model's thousand weights are no thousand rules), `set_values` maps output names
    to (npy path, shape, dtype). Raises PlanError on anything ambiguous."""
    entries = {v.name: Entry(v.name, v, "input", v.shape, v.dtype) for v in variables}
    dropped = []

    def drop_entry(name, why):
        e = entries.pop(name)
        dropped.append((e.source, e.var.name, e.var.shape, e.var.dtype, why))

    if other:
        if prefer not in (None, "input", "other"):
            raise PlanError(f"--prefer must be 'input' or 'other', not {prefer!r}")
        clashes = sorted(v.name for v in other if v.name in entries)
        if clashes and prefer is None:
            raise PlanError(f"--merge: {len(clashes)} names are in both checkpoints "
                            f"({', '.join(clashes[:3])}{', ...' if len(clashes) > 3 else ''}); "
                            "rename one side or pass --prefer input|other")
        for v in other:
            if v.name in entries:
                if prefer == "input":
                    dropped.append(("other", v.name, v.shape, v.dtype, "--prefer input"))
                    continue
                drop_entry(v.name, "--prefer other")
            entries[v.name] = Entry(v.name, v, "other", v.shape, v.dtype, notes=["merged"])
    elif prefer is not None:
        raise PlanError("--prefer needs --merge OTHER")

    if use_moving_averages:
        _moving_averages(entries, dropped)
    if strip_optimizer:
        for name in list(entries):
            kind = role(name)
            if kind in ("optimizer", "step") or kind == "ema" and not keep_ema:
                what = "optimizer slot" if kind == "optimizer" else kind
                drop_entry(name, f"--strip-optimizer ({what})")
    elif keep_ema:
        raise PlanError("--keep-ema goes with --strip-optimizer")
    for text in drop:
        pattern = _pattern(text, "--drop", list(entries))
        for name in [n for n in entries if pattern.matches(n)]:
            drop_entry(name, f"--drop {text}")
    if keep:
        patterns = [_pattern(text, "--keep", list(entries)) for text in keep]
        for name in [n for n in entries if not any(p.matches(n) for p in patterns)]:
            drop_entry(name, "not in --keep")

    for e in entries.values():
        new = (names or {}).get(e.var.name)
        if new is not None and new != e.name:
            e.name = new
            e.notes.append("renamed")
    rules = ([f"{strip_prefix.strip('/')}/=" if strip_prefix else None]
             + list(renames) + [f"={add_prefix.strip('/')}" if add_prefix else None])
    for text in filter(None, rules):
        _apply_rule(entries, text)
    renamed = {}
    for e in entries.values():
        if e.name in renamed:
            raise PlanError(f"renames map both {renamed[e.name].var.name!r} and "
                            f"{e.var.name!r} to {e.name!r}")
        renamed[e.name] = e
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in renamed and (dropped or any(
            e.name != e.var.name for e in renamed.values())):
        e = renamed.pop("_CHECKPOINTABLE_OBJECT_GRAPH")
        dropped.append((e.source, e.var.name, e.var.shape, e.var.dtype,
                        "TF2 object graph, stale once tensors are renamed or dropped"))

    for name, (path, shape, dtype) in (set_values or {}).items():
        e = renamed.get(name)
        if e is None:
            e = renamed[name] = Entry(name, Variable(name, (), dtype, 0), "set")
            e.notes.append("new")
        e.value_file, e.shape, e.dtype = path, tuple(shape), dtype
        e.notes.append(f"set from {os.path.basename(path)}")
    for spec in slice_classes:
        _slice_classes(renamed, spec)
    for spec in cast:
        _cast(renamed, spec)
    return SurgeryPlan([renamed[n] for n in sorted(renamed)],
                       sorted(dropped, key=lambda d: (d[1], d[0])))


def _pattern(text, flag, names):
    pattern = compile_pattern(text)
    if not any(pattern.matches(n) for n in names):
        close = closest_scopes(text, names) if names else []
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise PlanError(f"{flag} {text!r} matches no tensor{hint}")
    return pattern


def _moving_averages(entries, dropped):
    shadows = [n for n in entries if role(n) == "ema"]
    if not shadows:
        raise PlanError("--use-moving-averages: the checkpoint has no ExponentialMovingAverage "
                        "tensors")
    for shadow in shadows:
        e = entries.pop(shadow)
        base = shadow.rpartition("/")[0]
        target = entries.get(base)
        if target is not None:
            if (target.shape, target.dtype) != (e.shape, e.dtype):
                raise PlanError(f"--use-moving-averages: {shadow!r} is {_shape(e.shape)} "
                                f"{e.dtype} but {base!r} is {_shape(target.shape)} "
                                f"{target.dtype}")
            dropped.append((target.source, base, target.var.shape, target.var.dtype,
                            f"replaced by its moving average {shadow}"))
        e.name = base
        e.notes.append("moving average")
        entries[base] = e


def _apply_rule(entries, text):
    rule = RenameRule(text)
    changed = False
    for e in entries.values():
        if role(e.var.name) == "meta":   # the object graph keeps its key (or goes, below)
            continue
        new = rule.apply(e.name)
        if new != e.name:
            e.name, changed = new, True
            if "renamed" not in e.notes:
                e.notes.append("renamed")
    if not changed:
        names = [e.name for e in entries.values()]
        close = closest_scopes(rule.old, names) if names and rule.old else []
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise PlanError(f"rename {rule.text!r} matches no tensor{hint}")


def _source_names(reader):
    """{tensor: the checkpoint tensor it came from} of a ported `.keras` (reader.sources),
    whose weights are laid out as the checkpoint's; a state dict's are PyTorch's."""
    if reader.sources and reader.format != "keras-h5":
        raise CkptError(f"--names source: {reader.path} holds its weights as PyTorch lays "
                        f"them out (OIHW kernels, Linear matrices), not as "
                        f"{reader.origin['checkpoint']} does; use that checkpoint itself")
    if not reader.sources:
        why = reader.warnings[0] if reader.warnings else \
            f"{reader.path} does not say which checkpoint tensors its weights came from"
        raise CkptError(f"--names source: {why} (only a .keras that `ckptkit port` wrote "
                        "says so)")
    return reader.sources


def _split_spec(spec):
    """[SCOPE=]VALUE -> (scope or None, value)."""
    scope, sep, value = spec.rpartition("=")
    return (scope if sep else None), value


def _slice_classes(entries, spec):
    scope, cut = _split_spec(spec)
    m = _SLICE.match(cut)
    if not m:
        raise PlanError(f"--slice-classes {spec!r}: expected [SCOPE=]START:STOP, e.g. 1: "
                        "(drop the background class) or Logits=1:")
    start, stop = (int(x) if x else None for x in m.groups())
    if scope:
        patterns = [_pattern(scope, "--slice-classes", list(entries))]
    else:
        patterns = [compile_pattern(s) for s in LOGITS_SCOPES]
    hit = [e for e in entries.values() if any(p.matches(e.name) for p in patterns)]
    if not hit:
        raise PlanError(f"--slice-classes {spec!r}: no tensor under "
                        f"{scope or ' / '.join(LOGITS_SCOPES)}; name the scope (SCOPE={cut})")
    for e in hit:
        if not e.shape:
            raise PlanError(f"--slice-classes: {e.name!r} is a scalar; nothing to slice")
        n = len(range(*slice(start, stop).indices(e.shape[-1])))
        if n == 0:
            raise PlanError(f"--slice-classes {cut}: leaves nothing of {e.name!r} "
                            f"{_shape(e.shape)}")
        if e.cut is not None:
            raise PlanError(f"--slice-classes slices {e.name!r} twice")
        e.cut = (start, stop)
        e.shape = e.shape[:-1] + (n,)
        e.notes.append(f"slice {cut}")


def _cast(entries, spec):
    scope, target = _split_spec(spec)
    if target not in CAST_TARGETS:
        raise PlanError(f"--cast {spec!r}: cast to one of {', '.join(CAST_TARGETS)}")
    if scope:
        pattern = _pattern(scope, "--cast", list(entries))
        hit = [e for e in entries.values() if pattern.matches(e.name)]
        bad = [e for e in hit if e.dtype not in FLOATING]
        if bad:
            raise PlanError(f"--cast {spec!r}: {bad[0].name!r} is {bad[0].dtype}, not a "
                            "floating tensor (only floating tensors can be cast)")
    else:
        hit = [e for e in entries.values() if e.dtype in FLOATING]
        if not hit:
            raise PlanError(f"--cast {spec!r}: the checkpoint has no floating tensors")
    for e in hit:
        if e.dtype != target:
            e.cast, e.dtype = target, target
            e.notes.append(f"cast {target}")


# --- running it ------------------------------------------------------------------------------

@dataclass
class Target:
    """Where the output goes: the writer's path, its format, and the folder whose
    `checkpoint` state file must name it (V2 written into a directory), if any."""

    path: str
    format: str
    state_dir: str = ""


def output_target(out, reader, inputs=(), *, overwrite=False, in_place=False):
    """The Target for OUT. A directory (existing, or ending in /) gets a new V2 prefix named
    after the input, and its state file; a V2 prefix whose files exist is refused (they
    cannot all be replaced at once); a single file (.npz, .safetensors, .h5) that exists is
    replaced only with `overwrite`. The output is never a file of `inputs` (every file the
    edit reads: by path, or the same file through a link), except with `in_place`, which
    replaces the single-file input itself (atomically: temp file, fsync, one rename)."""
    from .formats.detect import writer_format

    out = os.fspath(out)
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        if in_place:
            raise CkptError(_V2_IN_PLACE)
        base = os.path.basename(reader.path.rstrip("/")) \
            if reader.format in ("tf-v2", "tf-object", "tf-v1") else "model.ckpt"
        base = SHARD_SUFFIX.sub("", base) or "model.ckpt"   # a sharded V1 input's pattern
        prefix, n = os.path.join(out, base), 1
        while os.path.exists(prefix + ".index"):   # never over the input or another prefix
            n += 1
            prefix = os.path.join(out, f"{base}-edit{n if n > 2 else ''}")
        return Target(prefix, "tf-v2", out)
    kind = writer_format(out)
    if kind == "tf-v2":
        out = _V2_FILE.sub("", out)
        if in_place:
            raise CkptError(_V2_IN_PLACE)
        there = sorted(glob.glob(glob.escape(out) + ".data-*")) + \
            [f for f in [out + ".index"] if os.path.exists(f)]
        if there:
            what = "the input" if is_one_of(there[-1], inputs) else "an existing"
            raise CkptError(f"{out} is {what} checkpoint; a V2 prefix's files cannot be "
                            "replaced all at once. Write to a new prefix, or to its directory "
                            "(a new prefix there, then its `checkpoint` state file switches "
                            "to it)")
        return Target(out, kind)
    if in_place:
        if not (os.path.exists(out) and is_one_of(out, reader.files)):
            raise CkptError(f"--in-place replaces the input, and {out} is not {reader.path}")
        return Target(os.path.realpath(out), kind)
    if os.path.exists(out) and is_one_of(out, inputs):   # not new_output's: --in-place hint
        hint = " (add --in-place to replace it)" if is_one_of(out, reader.files) else ""
        raise CkptError(f"{out} is a file this edit reads; write elsewhere{hint}")
    new_output(out, overwrite=overwrite)
    return Target(out, kind)


_V2_FILE = re.compile(r"\.(index|data-\d{5}-of-\d{5})$")
_V2_IN_PLACE = ("--in-place replaces a single-file checkpoint (.npz, .safetensors, .h5); a V2 "
                "checkpoint is never edited in place (its files cannot all be replaced at "
                "once): write to its directory instead")


def _lock_path(out):
    """What one writer at a time may write: the directory's state file, or the output."""
    out = os.fspath(out)
    if os.path.isdir(out) or out.endswith(("/", os.sep)):
        return os.path.join(out, STATE_FILE)
    return _V2_FILE.sub("", out)


@dataclass
class Result:
    plan: SurgeryPlan
    target: Target
    copied: int = 0        # tensors copied as their stored bytes
    decoded: int = 0       # tensors decoded (transformed, or the writer needed values)
    files: list = field(default_factory=list)


def run_surgery(in_path, out_path, *, merge=None, set_values=(), source_names=False,
                shards=1, dry_run=False, overwrite=False, in_place=False, progress=None,
                **ops):
    """Plan and (unless dry_run) write the edited checkpoint; returns a Result.

    `set_values` are NAME=file.npy texts; source_names=True names each tensor of a `.keras`
    that `ckptkit port` wrote by the checkpoint tensor it came from (a new head's keep
    theirs); `ops` are plan_surgery's keyword arguments. No input
    is ever written to (output_target says when one may be replaced, and how), one writer
    at a time writes an output (fileio.output_lock), and the output appears only once
    complete."""
    from .paths import open_checkpoint

    with no_cyclic_gc():   # a plan holds a few small objects per tensor, none of them cyclic
        readers = {"input": open_checkpoint(in_path)}
        try:
            if merge:
                readers["other"] = open_checkpoint(merge)
            values = _npy_specs(set_values)
            if source_names:
                ops["names"] = _source_names(readers["input"])
            plan = plan_surgery(list(readers["input"]),
                                other=list(readers["other"]) if merge else (),
                                set_values=values, **ops)
            inputs = [f for r in readers.values() for f in r.files] + \
                [path for path, _, _ in values.values()]

            def target():
                return output_target(out_path, readers["input"], inputs, overwrite=overwrite,
                                     in_place=in_place)

            if dry_run:
                return Result(plan, target())
            with output_lock(_lock_path(out_path)):
                result = Result(plan, target())
                _write(result, readers, shards, progress)
            return result
        finally:
            for reader in readers.values():
                reader.close()


def _write(result, readers, shards, progress):
    from .formats import open_writer

    plan, target = result.plan, result.target
    with open_writer(target.path, shards=shards) as writer:
        writer.begin([(e.name, e.shape, e.dtype) for e in plan.entries])
        for e in plan.entries:
            reader = readers.get(e.source)
            if not e.changed and writer.copy(reader, e.var, e.name):
                result.copied += 1
            else:
                writer.add(e.name, _value(reader, e))
                result.decoded += 1
                if reader is not None:
                    reader.release()
            if progress:
                progress(e.nbytes)
        result.files = writer.commit()
    if target.state_dir:
        write_state(target.state_dir, os.path.basename(target.path))
        result.files.append(os.path.join(target.state_dir, STATE_FILE))


def _value(reader, e):
    import numpy as np

    from .variable import numpy_dtype

    if e.value_file:
        value = np.load(e.value_file, mmap_mode="r", allow_pickle=False)
    else:
        value = reader.read(e.var.name)
    if e.cut:
        value = value[..., slice(*e.cut)]
    if e.cast:
        value = value.astype(numpy_dtype(e.cast))
    return value


def _npy_specs(texts):
    """{output name: (path, shape, dtype name)} from NAME=file.npy texts, headers only."""
    if not texts:
        return {}
    import numpy as np

    from .variable import dtype_name

    out = {}
    for text in texts:
        name, sep, path = text.rpartition("=")
        if not sep or not name or not path:
            raise PlanError(f"--set {text!r}: expected NAME=file.npy")
        try:
            value = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise NotFound(f"--set {text!r}: no file {path}") from None
        except (OSError, ValueError) as e:
            raise PlanError(f"--set {text!r}: {path} is not a .npy array ({e})") from None
        if not isinstance(value, np.ndarray):
            raise PlanError(f"--set {text!r}: {path} is not a single .npy array")
        out[name] = (path, value.shape, dtype_name(value.dtype))
    return out


def _shape(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
