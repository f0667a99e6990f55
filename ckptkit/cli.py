"""ckptkit's command line: each command parses, calls one library function, renders."""
import os
import re
import sys

import click

from . import __version__, render
from .errors import CkptError
from .paths import open_checkpoint
from .scopes import role


class Group(click.Group):
    """Every failure becomes one line `ckptkit: error: ...` and its exit code, never a
    traceback: CkptError (2, or 1 where a check failed), usage errors (2), OS errors (2)."""

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        code = 0
        try:
            rv = super().main(args, prog_name or "ckptkit", standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx else "ckptkit"
            code = _fail(f"{e.format_message()} (see '{cmd} --help')", 2)
        except click.ClickException as e:
            code = _fail(e.format_message(), 2)
        except click.Abort:
            code = _fail("aborted", 130)
        except CkptError as e:
            code = _fail(str(e), e.exit_code)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            code = _fail(f"{where}{e.strerror or e}", 2)
        except MemoryError:
            code = _fail("out of memory", 2)
        except KeyboardInterrupt:
            code = _fail("interrupted", 130)
        except Exception as e:   # a bug of ours: still one line, the traceback on request
            if os.environ.get("CKPTKIT_DEBUG"):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            code = _fail(f"internal error: {type(e).__name__}: {first} (please report it; "
                         "CKPTKIT_DEBUG=1 shows the traceback)", 2)
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message, code):
    click.echo(f"ckptkit: error: {message}", err=True)
    return code


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ckptkit")
def cli():
    """Read, check, edit and fine-tune from TensorFlow checkpoints, without starting TF.

    PATH may be a checkpoint prefix (model.ckpt-1000), any of its files, a directory with a
    `checkpoint` state file, a SavedModel directory, a V1 file, .h5/.keras, .npz or
    .safetensors.

    \b
    Example:
      ckptkit inspect pretrain/resnet_v1_50.ckpt
    """


def _note(reader, verbose):
    if reader.note:
        click.echo(f"note: {reader.note}", err=True)
    if verbose:
        click.echo(f"resolved {reader.format}: " + ", ".join(reader.files), err=True)


def _selected(reader, pattern, no_optimizer):
    """(tensors to show, how many --no-optimizer hid among those --filter kept)."""
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as e:
        raise CkptError(f"bad --filter regex {pattern!r}: {e}") from None
    matched = [v for v in reader if regex is None or regex.search(v.name)]
    if regex is not None and not matched:
        raise CkptError(f"--filter {pattern!r} matches no tensor in {reader.path}")
    chosen = [v for v in matched if not (no_optimizer and role(v.name) != "model")]
    return chosen, len(matched) - len(chosen)


def _printoptions(spec):
    """'threshold=100,precision=4' -> numpy printoptions keyword arguments."""
    out = {}
    for item in filter(None, (spec or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in ("threshold", "precision", "edgeitems", "linewidth", "suppress"):
            raise CkptError(f"unknown print option {key!r} (threshold, precision, edgeitems, "
                            "linewidth, suppress)")
        try:
            out[key] = value.strip().lower() in ("1", "true") if key == "suppress" \
                else int(value)
        except ValueError:
            raise CkptError(f"print option {key} needs an integer, not {value!r}") from None
    return out


@cli.command()
@click.argument("path")
@click.option("--flat", is_flag=True, help="One line per tensor instead of a scope tree.")
@click.option("--depth", type=click.IntRange(1), help="Show the tree down to this depth.")
@click.option("--filter", "pattern", metavar="REGEX", help="Only tensors whose name matches.")
@click.option("--no-optimizer", is_flag=True,
              help="Hide optimizer slots, EMA shadows, step counters and the object graph.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
@click.option("--tensor", metavar="NAME", help="Print one tensor's values and statistics.")
@click.option("--printoptions", metavar="K=V,...",
              help="numpy print options for --tensor, e.g. threshold=100000,precision=6.")
@click.option("--stats", is_flag=True,
              help="min/max/mean/std/NaN/Inf per tensor (reads every value, streaming).")
@click.option("--objects", is_flag=True,
              help="TF2 checkpoints: map keys to object attribute paths; slots marked.")
@click.option("-v", "--verbose", is_flag=True, help="Name the files the path resolved to.")
def inspect(path, flat, depth, pattern, no_optimizer, as_json, tensor, printoptions, stats,
            objects, verbose):
    """Show what a checkpoint holds: scopes, shapes, dtypes, parameter counts.

    \b
    Examples:
      ckptkit inspect model.ckpt-1000
      ckptkit inspect runs/a --filter 'Logits' --flat
      ckptkit inspect model.ckpt --tensor resnet_v1_50/logits/biases
      ckptkit inspect model.ckpt --json > vars.json
    """
    with open_checkpoint(path) as reader:
        _note(reader, verbose)
        if tensor is not None:
            return _show_tensor(reader, tensor, _printoptions(printoptions), as_json)
        if objects:
            return _show_objects(reader, as_json)
        chosen, hidden = _selected(reader, pattern, no_optimizer)
        if stats:
            return _show_stats(reader, chosen, as_json)
        if as_json:
            render.emit_json({
                "path": reader.path, "format": reader.format,
                "variables": [v.to_json() for v in chosen],
                "total_params": sum(v.size for v in chosen),
                "total_bytes": sum(v.nbytes for v in chosen)})
            return 0
        click.echo(f"{reader.path}  ({reader.format})")
        lines = render.flat(chosen) if flat else render.tree(chosen, depth)
        click.echo("\n".join(lines))
        click.echo(render.summary(chosen))
        if hidden:
            click.echo(f"{hidden} optimizer/EMA/step tensors hidden")
    return 0


def _show_tensor(reader, name, options, as_json):
    import numpy as np

    from .checks import tensor_stats

    var = reader.variable(name)
    value = reader.read(name)
    st = tensor_stats(value)
    if as_json:
        render.emit_json({**var.to_json(), "stats": st and st.__dict__,
                          "values": _json_values(value)})
        return 0
    click.echo(f"{var.name}  {render.shape(var.shape)}  {var.dtype}")
    with np.printoptions(**options):
        click.echo(str(value) if value.dtype.kind != "O" else repr(value))
    if st:
        click.echo(f"min {st.min:.6g}  max {st.max:.6g}  mean {st.mean:.6g}  std {st.std:.6g}"
                   f"  nan {st.nan}  inf {st.inf}")
    return 0


def _json_values(value):
    """Nested lists for JSON: complex numbers as [real, imag], strings decoded (bytes that
    are not UTF-8 escaped), low-precision floats widened."""
    import numpy as np

    if value.dtype.kind == "O":
        flat = [x.decode("utf-8", "backslashreplace") if isinstance(x, bytes) else str(x)
                for x in value.reshape(-1)]
        return np.array(flat, dtype=object).reshape(value.shape).tolist()
    if value.dtype.kind == "c":
        return np.stack([value.real, value.imag], axis=-1).tolist()
    if value.dtype.kind not in "biuf":
        value = value.astype(np.float64)   # bfloat16 / float8 from ml_dtypes
    return value.tolist()


def _show_stats(reader, chosen, as_json):
    from .checks import tensor_stats

    rows, records = [], []
    with render.progress(sum(v.nbytes for v in chosen), "stats") as advance:
        for v in chosen:
            st = tensor_stats(reader.read(v.name))
            advance(v.nbytes)
            records.append({**v.to_json(), "stats": st and st.__dict__})
            cells = [f"{x:.4g}" for x in (st.min, st.max, st.mean, st.std)] + \
                [str(st.nan), str(st.inf)] if st else ["-"] * 6
            rows.append([v.name, render.shape(v.shape), v.dtype, *cells])
    if as_json:
        render.emit_json(records)
    else:
        head = ["name", "shape", "dtype", "min", "max", "mean", "std", "nan", "inf"]
        click.echo("\n".join(render.table([head] + rows, "lllrrrrrr")))
    return 0


def _show_objects(reader, as_json):
    from .formats.tf_object import objects

    attrs = objects(reader)
    if as_json:
        render.emit_json([a.__dict__ for a in attrs])
        return 0
    rows = [(a.key, a.path, a.full_name, f"slot {a.slot_of}" if a.slot_of else "")
            for a in attrs]
    click.echo("\n".join(render.table([("key", "object path", "name", "")] + rows)))
    return 0


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def verify(path, as_json):
    """Check every checksum, size and file; exit 1 and list what is corrupt.

    V2: each tensor's crc32c, offsets against shard sizes, every shard present; V1 and all
    table indexes: block checksums; npz: zip CRCs; every format: every tensor decodes.

    \b
    Example:
      ckptkit verify pretrain/resnet_v1_50.ckpt
    """
    from .checks import verify as run_verify

    total = _quiet_size(path) if sys.stderr.isatty() else 0   # only a bar needs it
    with render.progress(total, "verify") as advance:
        report = run_verify(path, advance)
    if as_json:
        render.emit_json({"path": report.path, "format": report.format, "ok": report.ok,
                          "tensors": report.tensors, "bytes": report.nbytes,
                          "problems": report.problems})
    elif report.ok:
        click.echo(f"OK {report.path} ({report.format}): "
                   f"{render.plural(report.tensors, 'tensor')}, "
                   f"{render.human_bytes(report.nbytes)} verified")
    else:
        click.echo(f"CORRUPT {report.path}: {len(report.problems)} problem(s)")
        for p in report.problems:
            click.echo(f"  {p}")
    return 0 if report.ok else 1


def _quiet_size(path):
    """Bytes to verify, for the progress bar only (0 when unknown)."""
    try:
        with open_checkpoint(path) as reader:
            return sum(v.nbytes for v in reader)
    except (CkptError, OSError):
        return 0


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--atol", type=float, default=0.0, show_default=True,
              help="Absolute tolerance for values.")
@click.option("--rtol", type=float, default=0.0, show_default=True,
              help="Relative tolerance for values.")
@click.option("--strip-prefix-a", default="", metavar="PREFIX",
              help="Remove this prefix from A's names before pairing.")
@click.option("--strip-prefix-b", default="", metavar="PREFIX",
              help="Remove this prefix from B's names before pairing.")
@click.option("--no-optimizer", is_flag=True,
              help="Leave optimizer slots, EMA shadows and step counters out.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def diff(a, b, atol, rtol, strip_prefix_a, strip_prefix_b, no_optimizer, as_json):
    """Compare two checkpoints of any formats; exit 1 when they differ.

    Lines: `+ name shape` only in B, `- name shape` only in A, `! name` changed (shape,
    dtype, or values beyond --atol/--rtol, with max abs and RMS difference).

    \b
    Examples:
      ckptkit diff old.ckpt new.ckpt
      ckptkit diff model.ckpt model.npz --atol 1e-6
      ckptkit diff a.ckpt b.ckpt --strip-prefix-a InceptionV3/ --strip-prefix-b v3/
    """
    from .checks import diff as run_diff

    with open_checkpoint(a) as ra, open_checkpoint(b) as rb:
        for r in (ra, rb):
            _note(r, False)
        with render.progress(sum(v.nbytes for v in ra), "diff") as advance:
            report = run_diff(ra, rb, atol, rtol, strip_prefix_a, strip_prefix_b,
                              no_optimizer, advance)
    if as_json:
        render.emit_json({
            "only_a": [v.to_json() for v in report.only_a],
            "only_b": [v.to_json() for v in report.only_b],
            "changed": [{"name": c.name, "kind": c.kind, "shape_a": list(c.shape_a),
                         "shape_b": list(c.shape_b), "dtype_a": c.dtype_a,
                         "dtype_b": c.dtype_b, "max_abs": c.max_abs, "rms": c.rms}
                        for c in report.changed],
            "equal": report.equal})
    else:
        for v in report.only_b:
            click.echo(f"+ {v.name} {render.shape(v.shape)}")
        for v in report.only_a:
            click.echo(f"- {v.name} {render.shape(v.shape)}")
        for c in report.changed:
            if c.kind == "shape":
                what = f"shape {render.shape(c.shape_a)} -> {render.shape(c.shape_b)}"
            elif c.kind == "dtype":
                what = f"dtype {c.dtype_a} -> {c.dtype_b}"
            else:
                what = f"max abs {c.max_abs:.6g}, rms {c.rms:.6g}"
            click.echo(f"! {c.name} {what}")
        click.echo(f"{report.equal} equal, {len(report.changed)} changed, "
                   f"{len(report.only_a)} only in A, {len(report.only_b)} only in B")
    return 0 if report.same else 1


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def legacy(script, args):
    """Run an unchanged legacy checkpoint-reading script without TensorFlow.

    The script's `import tensorflow` (and `from tensorflow.python import pywrap_tensorflow`)
    gets a stand-in offering NewCheckpointReader, load_checkpoint and list_variables; any
    other TensorFlow use stops with one clear line.

    \b
    Example:
      ckptkit legacy look_checkpoint.py
    """
    import runpy

    from .legacy import install_tensorflow_stand_in

    if "tensorflow" in sys.modules:
        raise CkptError("TensorFlow is already imported in this process")
    install_tensorflow_stand_in()
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def _patterns(values):
    """Repeatable options that also take slim-style comma lists: --exclude a,b --exclude c."""
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


def _model_variables(net, num_classes, hidden, head_scope, keep_head, target):
    """The variables of the model to restore into: built from --net, or read from --target."""
    from .plan import ModelVar

    if bool(net) == bool(target):
        raise CkptError("give the model as exactly one of --net NAME or --target PATH")
    if target:
        if target.endswith(".json"):
            return _json_variables(target)
        with open_checkpoint(target) as reader:
            return [ModelVar.from_variable(v) for v in reader if role(v.name) == "model"]
    from .train.nets import get_net, model_variables

    record = get_net(net)
    try:
        sizes = tuple(int(n) for n in hidden.split(",") if n.strip()) if hidden else ()
    except ValueError:
        raise CkptError(f"--head takes layer sizes like 256,128, not {hidden!r}") from None
    return model_variables(record, num_classes or record.num_classes,
                           head="keep" if keep_head else "new", head_scope=head_scope,
                           hidden=sizes), record


def _json_variables(path):
    """Model variables from a JSON list of {name, shape, dtype} (or `inspect --json`)."""
    import json

    from .plan import ModelVar

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        items = data["variables"] if isinstance(data, dict) else data
        return [ModelVar(v["name"], tuple(v["shape"]), v.get("dtype", "float32"),
                         v.get("trainable", True)) for v in items]
    except (ValueError, KeyError, TypeError) as e:
        raise CkptError(f"{path}: not a list of {{name, shape, dtype}} variables "
                        f"({type(e).__name__}: {e})") from None


@cli.command()
@click.argument("checkpoint")
@click.option("--net", metavar="NAME", help="Build this tf_slim net as the model (needs TF).")
@click.option("--num-classes", type=click.IntRange(1), help="Classes of the new head.")
@click.option("--head", "hidden", metavar="SIZES", help="Hidden layers of the new head, "
              "e.g. 256,128.")
@click.option("--head-scope", default="Logits", show_default=True,
              help="Variable scope of the new head.")
@click.option("--keep-head", is_flag=True, help="Keep the net's original classifier.")
@click.option("--target", metavar="PATH", help="Take the model's variables from another "
              "checkpoint or a JSON list (`inspect --json` output) instead of --net; no TF.")
@click.option("--exclude", multiple=True, metavar="SCOPES",
              help="Model scopes not to restore (repeatable, or comma-separated).")
@click.option("--include", multiple=True, metavar="SCOPES",
              help="Restore only model variables under these scopes.")
@click.option("--train", multiple=True, metavar="SCOPES",
              help="Scopes the optimizer updates (default: all trainable).")
@click.option("--train-from", metavar="SCOPE",
              help="Freeze every variable created before this scope.")
@click.option("--lr-mult", "lr_mults", multiple=True, metavar="SCOPE=MULT",
              help="Learning-rate multiplier for trainable scopes, e.g. Logits=10.")
@click.option("--map", "maps", multiple=True, metavar="OLD=NEW",
              help="Rename checkpoint scopes, in order: 'InceptionV3/=v3/', 're:^(.*)=net/\\1'.")
@click.option("--match", type=click.Choice(["component", "prefix", "suffix"]),
              default="component", show_default=True,
              help="How scope patterns match: whole name components, tf-slim's raw prefix, or "
                   "pair names by their common suffix.")
@click.option("--use-moving-averages", is_flag=True,
              help="Restore variables from their ExponentialMovingAverage shadows.")
@click.option("--strict", is_flag=True, help="Fail on any variable the checkpoint lacks.")
@click.option("--allow-mismatch", is_flag=True,
              help="Skip variables whose shape differs (reported), instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan.")
@click.option("-v", "--verbose", is_flag=True, help="List every variable of every section.")
def plan(checkpoint, net, num_classes, hidden, head_scope, keep_head, target, exclude,
         include, train, train_from, lr_mults, maps, match, use_moving_averages, strict,
         allow_mismatch, as_json, verbose):
    """Work out which variables a model restores from a checkpoint, and which it trains.

    Errors (typos, scopes that match nothing, shape mismatches) are reported before any
    session runs; `finetune` restores exactly what this prints.

    \b
    Examples:
      ckptkit plan resnet_v1_50.ckpt --net resnet_v1_50 --num-classes 5 --exclude Logits
      ckptkit plan inception_v3.ckpt --net inception_v3 --num-classes 5 --train Logits
      ckptkit plan old.ckpt --target new.ckpt --map 'InceptionV3/=v3/'
    """
    from .plan import plan_restore

    found = _model_variables(net, num_classes, hidden, head_scope, keep_head, target)
    model_vars, record = found if net else (found, None)
    with open_checkpoint(checkpoint) as reader:
        _note(reader, False)
        result = plan_restore(
            list(reader), model_vars, exclude=_patterns(exclude), include=_patterns(include),
            maps=list(maps), match=match, use_moving_averages=use_moving_averages,
            label_offset=record.label_offset if record else 0, strict=strict,
            allow_mismatch=allow_mismatch, train=_patterns(train) or None,
            train_from=train_from, lr_mults=lr_mults)
    result.check(strict=strict)
    if as_json:
        render.emit_json(result.to_json())
    else:
        click.echo("\n".join(render.plan_table(result, verbose)))
    return 0


def _sizes(text, option):
    """'256,128' -> (256, 128)."""
    try:
        sizes = tuple(int(n) for n in text.split(",") if n.strip()) if text else ()
    except ValueError:
        sizes = (0,)
    if any(n < 1 for n in sizes):
        raise CkptError(f"{option} takes layer sizes like 256,128, not {text!r}")
    return sizes


@cli.command()
@click.option("--net", required=True, metavar="NAME", help="The tf_slim net to build.")
@click.option("--checkpoint", metavar="PATH",
              help="Pretrained checkpoint to restore from (omit to train from scratch).")
@click.option("--data", required=True, metavar="PATH", help="Image folder (one sub-folder "
              "per class, optional train/ and val/), TFRecord glob or folder, or .npz (X, y).")
@click.option("--train-dir", required=True, metavar="DIR",
              help="Where checkpoints and metrics go; a run there is resumed.")
@click.option("--val-data", metavar="PATH", help="Validation data in the same form.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Hold out this fraction (stratified, seeded) [default: 0.1 when the data "
                   "has no val/ split].")
@click.option("--num-classes", type=click.IntRange(1),
              help="Expected classes (default: the data's); a mismatch is an error.")
@click.option("--mode", type=click.Choice(["head", "features", "finetune", "two-stage"]),
              default="finetune", show_default=True,
              help="head: train the new head on a frozen backbone; features: the same on "
                   "cached backbone features; finetune: train --train/--train-from scopes; "
                   "two-stage: head first, then unfreeze from --train-from.")
@click.option("--exclude", multiple=True, metavar="SCOPES",
              help="Model scopes not to restore (repeatable, or comma-separated).")
@click.option("--train", multiple=True, metavar="SCOPES",
              help="Scopes to train (default: all).")
@click.option("--train-from", metavar="SCOPE", help="Train this scope and every later one.")
@click.option("--lr-mult", "lr_mults", multiple=True, metavar="SCOPE=MULT",
              help="Learning-rate multiplier, e.g. Logits=10.")
@click.option("--map", "maps", multiple=True, metavar="OLD=NEW",
              help="Rename checkpoint scopes before matching (as in `plan`).")
@click.option("--match", type=click.Choice(["component", "prefix", "suffix"]),
              default="component", show_default=True, help="How scope patterns match.")
@click.option("--use-moving-averages", is_flag=True,
              help="Restore from ExponentialMovingAverage shadows.")
@click.option("--allow-mismatch", is_flag=True, help="Skip shape mismatches instead of failing.")
@click.option("--head", "hidden", metavar="SIZES", help="Hidden layers of the new head, "
              "e.g. 256,128.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.5,
              show_default=True, help="Dropout rate before the head's layers.")
@click.option("--image-size", type=click.IntRange(8),
              help="Input size (default: the net's).")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--head-epochs", type=click.IntRange(1),
              help="two-stage: epochs of the head stage [default: half].")
@click.option("--stage2-lr", type=click.FloatRange(0, min_open=True), default=0.1,
              show_default=True, help="two-stage: learning-rate factor of stage 2.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "rmsprop", "adam", "adamw"]),
              default="momentum", show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.01, show_default=True,
              help="Base learning rate.")
@click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--schedule", type=click.Choice(["constant", "step", "exponential", "cosine"]),
              default="constant", show_default=True)
@click.option("--warmup-epochs", type=click.FloatRange(0), default=0.0,
              help="Linear learning-rate warm-up.")
@click.option("--decay-epochs", type=click.FloatRange(0), default=0.0,
              help="step/exponential: epochs per decay.")
@click.option("--decay-rate", type=click.FloatRange(0, min_open=True), default=0.1,
              show_default=True)
@click.option("--weight-decay", type=click.FloatRange(0), default=0.0,
              help="L2 on trained weights (adamw: decoupled decay); the net's own arg_scope "
                   "weight decay applies too.")
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0)
@click.option("--clip-norm", type=click.FloatRange(0), default=0.0,
              help="Clip gradients by global norm.")
@click.option("--no-augment", is_flag=True, help="No random crops/flips while training.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--keep", type=click.IntRange(1), default=3, show_default=True,
              help="Checkpoints to keep.")
@click.option("--save-every", type=click.FloatRange(1), default=600.0, show_default=True,
              help="Seconds between checkpoints within an epoch.")
@click.option("--patience", type=click.IntRange(0), default=0,
              help="Stop after this many epochs without a better val accuracy (0: never).")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              show_default=True)
@click.option("--gpus", metavar="IDS", help="Visible GPUs, e.g. 0,1.")
@click.option("--mixed-precision", is_flag=True, help="float16 compute on GPUs.")
@click.option("--compare-scratch", is_flag=True,
              help="Also train the same model from random initialisation and compare.")
@click.option("--cache-dir", metavar="DIR", help="Feature cache [default: ~/.cache/ckptkit].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def finetune(as_json, hidden, no_augment, **options):
    """Fine-tune a tf_slim net from a checkpoint: restore what `plan` shows, train, evaluate.

    Rerunning the same command resumes an interrupted run (Ctrl-C saves a checkpoint).

    \b
    Examples:
      ckptkit finetune --net resnet_v1_50 --checkpoint resnet_v1_50.ckpt --data photos/ \\
          --exclude Logits --train Logits --train-dir runs/a
      ckptkit finetune --net inception_v3 --checkpoint inception_v3.ckpt --data flowers/ \\
          --mode two-stage --train-from InceptionV3/Mixed_7a --train-dir runs/b
    """
    from .train.finetune import Settings, finetune as run

    options.update(
        hidden=_sizes(hidden, "--head"), augment=not no_augment,
        image_size=options["image_size"] or 0, head_epochs=options["head_epochs"] or 0,
        exclude=tuple(_patterns(options["exclude"])), train=tuple(_patterns(options["train"])),
        lr_mults=tuple(options["lr_mults"]), maps=tuple(options["maps"]))
    summary = run(Settings(**options), log=lambda line: click.echo(line, err=True),
                  progress=render.training_progress)
    if as_json:
        render.emit_json(summary)
    else:
        click.echo("\n".join(_finetune_report(summary)))
    return 130 if summary["stopped"] else 0


def _finetune_report(summary):
    runs = [("pretrained", summary)] + ([("scratch", summary["scratch"])]
                                        if "scratch" in summary else [])
    rows = [["run", "epochs", "best val_accuracy", "final val_accuracy", "train dir"]]
    for name, s in runs:
        best = (s["best"] or {}).get("val_accuracy")
        final = (s["final"] or {}).get("val_accuracy")
        rows.append([name, str(s["epochs"]), "-" if best is None else f"{best:.4f}",
                     "-" if final is None else f"{final:.4f}", s["train_dir"]])
    return render.table(rows, "lrrrl")


@cli.command(name="eval")
@click.option("--train-dir", required=True, metavar="DIR", help="A finetune train dir.")
@click.option("--data", "data_path", metavar="PATH",
              help="Data to evaluate (default: the run's validation split).")
@click.option("--last", is_flag=True, help="Use the latest checkpoint, not the best one.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results.")
def evaluate(train_dir, data_path, last, batch_size, device, as_json):
    """Accuracy, top-5, per-class accuracy and confusion matrix of a trained model.

    The confusion matrix is also drawn to TRAIN_DIR/confusion.png.

    \b
    Examples:
      ckptkit eval --train-dir runs/a
      ckptkit eval --train-dir runs/a --data photos/test --json
    """
    from .train.evaluate import evaluate as run
    from .train.plots import confusion

    result = run(train_dir, data_path=data_path, best=not last, batch_size=batch_size,
                 device=device)
    result["confusion_png"] = os.path.join(train_dir, "confusion.png")
    confusion(result["confusion"], result["labels"], result["confusion_png"])
    if as_json:
        render.emit_json(result)
        return 0
    click.echo(f"{result['checkpoint']} on {result['data']}: {result['count']} images")
    click.echo(f"accuracy {result['accuracy']:.4f}  top-5 {result['top5']:.4f}  "
               f"loss {result['loss']:.4f}\n")
    rows = [["class", "images", "accuracy"]] + [
        [c["label"], str(c["count"]), "-" if c["accuracy"] is None else f"{c['accuracy']:.4f}"]
        for c in result["per_class"]]
    click.echo("\n".join(render.table(rows, "lrr")))
    labels = result["labels"]
    rows = [["true \\ predicted"] + labels] + [
        [label] + [str(n) for n in counts] for label, counts in zip(labels, result["confusion"])]
    click.echo("\n" + "\n".join(render.table(rows, "l" + "r" * len(labels))))
    click.echo(f"\nconfusion matrix drawn to {result['confusion_png']}")
    return 0


@cli.command()
@click.option("--train-dir", required=True, metavar="DIR", help="A finetune train dir.")
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable predictions.")
def predict(train_dir, images, top_k, as_json):
    """Classify images (files or folders of images) with a trained model.

    \b
    Examples:
      ckptkit predict --train-dir runs/a photo1.jpg photo2.png
      ckptkit predict --train-dir runs/a holiday/ --top-k 3 --json
    """
    from .train.infer import Classifier

    paths = _image_files(images)
    with Classifier(train_dir) as classifier:
        results = classifier.predict_files(paths, top_k=top_k)
    failed = any("error" in item for item in results)
    if as_json:
        render.emit_json(results)
        return 1 if failed else 0
    for item in results:
        if "error" in item:
            click.echo(f"{item['path']}: error: {item['error']}")
            continue
        tops = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in item["top"])
        click.echo(f"{item['path']}: {tops}")
    return 1 if failed else 0


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def _image_files(args):
    """Files as given; folders expanded to their images (recursively, sorted; hidden files
    and folders such as .ipynb_checkpoints/ left out)."""
    paths = []
    for arg in args:
        if os.path.isdir(arg):
            found = []
            for folder, dirs, files in os.walk(arg):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(folder, f) for f in files
                          if f.lower().endswith(_IMAGE_SUFFIXES) and not f.startswith(".")]
            found.sort()
            if not found:
                raise CkptError(f"{arg}: no images ({' '.join(_IMAGE_SUFFIXES)})")
            paths += found
        elif os.path.exists(arg):
            paths.append(arg)
        else:
            raise CkptError(f"{arg}: no such file")
    return paths


@cli.command()
@click.option("--train-dir", required=True, metavar="DIR", help="A finetune train dir.")
@click.option("-o", "--output", required=True, metavar="DIR", help="New folder to export to.")
@click.option("--checkpoint", metavar="PREFIX", help="Checkpoint to export (default: the best, "
              "else the latest).")
def export(train_dir, output, checkpoint):
    """Export a trained model as a SavedModel and a frozen GraphDef.

    The SavedModel's serving_default signature takes encoded image bytes; predict_arrays
    takes uint8 images. export.json names the frozen graph's input and output tensors.

    \b
    Examples:
      ckptkit export --train-dir runs/a -o exported/
    """
    from .train.export import export as run

    written = run(train_dir, output, checkpoint=checkpoint)
    frozen, saved = written["frozen_graph"], written["saved_model"]
    click.echo(f"exported {written['checkpoint']} ({written['net']}, "
               f"{written['num_classes']} classes) to {written['out_dir']}")
    click.echo(f"  {saved['dir']}/  tags {','.join(saved['tags'])}, signatures "
               f"{', '.join(saved['signatures'])}")
    click.echo(f"  {frozen['file']}  input {frozen['input']} ({frozen['input_format']}), "
               f"outputs {', '.join(frozen['outputs'].values())}")
    click.echo("  export.json  tensor names, labels, preprocessing")
    return 0


@cli.group()
def pretrained():
    """Well-known pretrained checkpoints: list them, download them, name them.

    Any command takes `pretrained:NAME` as a checkpoint path once NAME is downloaded.

    \b
    Examples:
      ckptkit pretrained list
      ckptkit pretrained get resnet_v1_50
      ckptkit finetune --net resnet_v1_50 --checkpoint pretrained:resnet_v1_50 ...
    """


@pretrained.command(name="list")
@click.option("--dir", "directory", metavar="DIR", help="Download folder [default: pretrain/].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def pretrained_list(directory, as_json):
    """The registry's checkpoints and which of them are here.

    \b
    Examples:
      ckptkit pretrained list
      ckptkit pretrained list --json
    """
    from .zoo import pretrained as registry

    items = []
    for item in registry.entries():
        here = registry.installed(item.name, directory)
        items.append({"name": item.name, "net": item.net, "num_classes": item.num_classes,
                      "image_size": item.image_size, "url": item.url, "size": item.size,
                      "sha256": item.sha256, "exclude": list(item.exclude or ()),
                      "path": here})
    if as_json:
        render.emit_json(items)
        return 0
    rows = [["name", "net", "classes", "size", "sha256", "here"]] + [
        [i["name"], i["net"], str(i["num_classes"] or "-"),
         render.human_bytes(i["size"]) if i["size"] else "-",
         "registry" if i["sha256"] else "on first use", i["path"] or "-"] for i in items]
    click.echo("\n".join(render.table(rows, "llrrll")))
    return 0


@pretrained.command(name="get")
@click.argument("name")
@click.option("--dir", "directory", metavar="DIR", help="Download folder [default: pretrain/].")
@click.option("--force", is_flag=True, help="Download again and replace what is there.")
def pretrained_get(name, directory, force):
    """Download, check (sha256, checkpoint CRCs) and unpack a pretrained checkpoint.

    An interrupted download resumes when the command is run again.

    \b
    Examples:
      ckptkit pretrained get resnet_v1_50
      ckptkit pretrained get inception_v3 --dir ~/checkpoints
    """
    from .download import get
    from .zoo import pretrained as registry

    with render.byte_progress(f"downloading {name}") as progress:
        fetched = get(name, directory, progress, force=force)
    if fetched.note:
        click.echo(f"note: {fetched.note}", err=True)
    item = registry.entry(name)
    click.echo(f"{'downloaded' if fetched.downloaded else 'already here'}: {fetched.path}")
    click.echo(f"fine-tune it with a new head:\n  ckptkit finetune --net {item.net} "
               f"--checkpoint pretrained:{item.name} --exclude Logits --data DATA "
               "--train-dir RUN")
    return 0


from .cli_search import search  # noqa: E402
cli.add_command(search)


from .cli_surgery import convert, surgery  # noqa: E402
cli.add_command(surgery)
cli.add_command(convert)


def main():
    cli.main()


