"""The reading commands: inspect, verify, diff, and legacy scripts. None loads TensorFlow."""
import sys

import click

from .. import render
from ..checks import checkpoint_bytes, diff as run_diff, select, stats, tensor_stats
from ..checks import verify as run_verify
from ..errors import CkptError
from ..formats.base import no_cyclic_gc
from ..paths import open_checkpoint

PRINT_OPTIONS = ("threshold", "precision", "edgeitems", "linewidth", "suppress")


class PrintOptions(click.ParamType):
    """'threshold=100,precision=4' -> numpy printoptions keyword arguments."""

    name = "printoptions"

    def convert(self, value, param, ctx):
        if isinstance(value, dict):
            return value
        out = {}
        for item in filter(None, value.split(",")):
            key, _, text = item.partition("=")
            key = key.strip()
            if key not in PRINT_OPTIONS:
                raise CkptError(f"unknown print option {key!r} ({', '.join(PRINT_OPTIONS)})")
            try:
                out[key] = text.strip().lower() in ("1", "true") if key == "suppress" \
                    else int(text)
            except ValueError:
                raise CkptError(f"print option {key} needs an integer, not {text!r}") from None
        return out


def note(reader, verbose=False):
    """How the path resolved, when that needed a fallback (and always with --verbose), and
    what the reader set aside."""
    if reader.note:
        click.echo(f"note: {reader.note}", err=True)
    for line in reader.warnings:
        click.echo(f"note: {line}", err=True)
    if verbose:
        click.echo(f"resolved {reader.format}: " + ", ".join(reader.files), err=True)


@click.command()
@click.argument("path")
@click.option("--flat", is_flag=True, help="One line per tensor instead of a scope tree.")
@click.option("--depth", type=click.IntRange(1), help="Show the tree down to this depth.")
@click.option("--filter", "pattern", metavar="REGEX", help="Only tensors whose name matches.")
@click.option("--no-optimizer", is_flag=True,
              help="Hide optimizer slots, EMA shadows, step counters and the object graph.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
@click.option("--tensor", metavar="NAME", help="Print one tensor's values and statistics.")
@click.option("--printoptions", type=PrintOptions(), default="", metavar="K=V,...",
              help="numpy print options for --tensor, e.g. threshold=100000,precision=6.")
@click.option("--stats", "with_stats", is_flag=True,
              help="min/max/mean/std/NaN/Inf per tensor (reads every value, streaming).")
@click.option("--objects", is_flag=True,
              help="TF2 checkpoints: map keys to object attribute paths; slots marked.")
@click.option("-v", "--verbose", is_flag=True, help="Name the files the path resolved to.")
def inspect(path, flat, depth, pattern, no_optimizer, as_json, tensor, printoptions,
            with_stats, objects, verbose):
    """Show what a checkpoint holds: scopes, shapes, dtypes, parameter counts.

    \b
    Examples:
      ckptkit inspect model.ckpt-1000
      ckptkit inspect runs/a --filter 'Logits' --flat
      ckptkit inspect model.ckpt --tensor resnet_v1_50/logits/biases
      ckptkit inspect model.ckpt --json > vars.json
    """
    with no_cyclic_gc(), open_checkpoint(path) as reader:   # objects per tensor, no cycles
        note(reader, verbose)
        if tensor is not None:
            var, value = reader.variable(tensor), reader.read(tensor)
            st = tensor_stats(value)
            if as_json:
                render.emit_json(render.tensor_json(var, value, st))
            else:
                click.echo("\n".join(render.tensor_lines(var, value, st, printoptions)))
            return 0
        if objects:
            from ..formats.tf_object import objects as object_attributes

            attrs = object_attributes(reader)
            if as_json:
                render.emit_json([a.__dict__ for a in attrs])
            else:
                click.echo("\n".join(render.objects_table(attrs)))
            return 0
        chosen, hidden = select(reader, pattern, no_optimizer)
        if with_stats:
            with render.progress(sum(v.nbytes for v in chosen), "stats") as advance:
                pairs = list(stats(reader, chosen, advance))
            if as_json:
                render.emit_json([{**v.to_json(), "stats": st and st.__dict__}
                                  for v, st in pairs])
            else:
                click.echo("\n".join(render.stats_table(pairs)))
            return 0
        if as_json:
            render.emit_json(render.listing_json(reader, chosen))
            return 0
        click.echo(render.header(reader))
        lines = render.flat(chosen, reader.sources) if flat else \
            render.tree(chosen, depth, reader.sources)
        click.echo("\n".join(lines))
        click.echo(render.summary(chosen))
        if hidden:
            click.echo(f"{hidden} optimizer/EMA/step tensors hidden")
    return 0


@click.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def verify(path, as_json):
    """Check every checksum, size and file; exit 1 and list what is corrupt.

    V2: each tensor's crc32c, offsets against shard sizes, every shard present; V1 and all
    table indexes: block checksums; npz: zip CRCs; every format: every tensor decodes.

    \b
    Example:
      ckptkit verify pretrained:resnet_v1_50
    """
    total = checkpoint_bytes(path) if sys.stderr.isatty() else 0   # only a bar needs it
    with render.progress(total, "verify") as advance:
        report = run_verify(path, advance)
    if as_json:
        render.emit_json(render.verify_json(report))
    else:
        click.echo("\n".join(render.verify_lines(report)))
    return 0 if report.ok else 1


@click.command()
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
    with open_checkpoint(a) as ra, open_checkpoint(b) as rb:
        note(ra)
        note(rb)
        with render.progress(sum(v.nbytes for v in ra), "diff") as advance:
            report = run_diff(ra, rb, atol, rtol, strip_prefix_a, strip_prefix_b,
                              no_optimizer, advance)
    if as_json:
        render.emit_json(render.diff_json(report))
    else:
        click.echo("\n".join(render.diff_lines(report)))
    return 0 if report.same else 1


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def legacy(script, args):
    """Run an unchanged legacy checkpoint-reading script without TensorFlow.

    The script's `import tensorflow` gets a stand-in offering TensorFlow's checkpoint
    reading: NewCheckpointReader (pywrap_tensorflow's too), tf.train's load_checkpoint,
    list_variables, latest_checkpoint, get_checkpoint_state, checkpoint_exists,
    inspect_checkpoint, tf.errors; it prints what it prints under TensorFlow. Any other
    TensorFlow use stops with one clear line; an error of the script's shows its traceback
    (exit 1). Arguments after SCRIPT go to the script.

    \b
    Example:
      ckptkit legacy look_checkpoint.py
    """
    from ..legacy import run_script

    return run_script(script, args)
