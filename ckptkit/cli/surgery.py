"""`ckptkit surgery` and `ckptkit convert`: parse, call surgery.run_surgery, render."""
import click

from .. import render
from ..surgery import CAST_TARGETS, run_surgery
from .options import bundle

_output_options = bundle(
    click.option("--shards", type=click.IntRange(1), default=1, show_default=True,
                 help="Data files of a V2 output."),
    click.option("--dry-run", is_flag=True,
                 help="Print the name table (old -> new, shapes, what is dropped); write "
                      "nothing."),
    click.option("--overwrite", is_flag=True,
                 help="Replace an existing output file (never one the edit reads)."),
    click.option("--in-place", is_flag=True,
                 help="Replace the input itself: single-file checkpoints only (.npz, "
                      ".safetensors, .h5), atomically."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable name table."),
)


def _run(in_path, out_path, dry_run, as_json, **kwargs):
    done = [0]
    with render.byte_progress("writing") as bar:
        def progress(nbytes):
            done[0] += nbytes
            bar(None, done[0])

        result = run_surgery(in_path, out_path, dry_run=dry_run, progress=progress, **kwargs)
    if as_json:
        render.emit_json(render.surgery_json(result, dry_run))
    else:
        click.echo("\n".join(render.surgery_lines(result, dry_run)))
    return 0


@click.command()
@click.argument("path")
@click.option("-o", "--output", required=True, metavar="OUT",
              help="Where to write: a V2 prefix, a directory (new prefix + `checkpoint` state "
                   "file), .npz, .safetensors or .h5.")
@click.option("--rename", "renames", multiple=True, metavar="OLD=NEW",
              help="Rename a scope (literal prefix) or `re:REGEX=REPL`; repeatable, in order.")
@click.option("--add-prefix", metavar="SCOPE", help="Put every name under SCOPE/.")
@click.option("--strip-prefix", metavar="SCOPE", help="Take SCOPE/ off the names under it.")
@click.option("--drop", multiple=True, metavar="SCOPE", help="Drop tensors in SCOPE.")
@click.option("--keep", multiple=True, metavar="SCOPE", help="Keep only tensors in SCOPE(s).")
@click.option("--strip-optimizer", is_flag=True,
              help="Drop optimizer slots, step counters and EMA shadows.")
@click.option("--keep-ema", is_flag=True, help="With --strip-optimizer: keep EMA shadows.")
@click.option("--use-moving-averages", is_flag=True,
              help="Replace each variable by its ExponentialMovingAverage shadow.")
@click.option("--cast", multiple=True, metavar="[SCOPE=]DTYPE",
              help=f"Cast floating tensors to {'|'.join(CAST_TARGETS)} (all of them, or those "
                   "in SCOPE, which must all be floating).")
@click.option("--slice-classes", multiple=True, metavar="[SCOPE=]START:STOP",
              help="Slice the class axis (last) of logits tensors, e.g. 1: turns 1001 "
                   "classes into 1000; default scopes Logits, AuxLogits, logits.")
@click.option("--set", "set_values", multiple=True, metavar="NAME=FILE.npy",
              help="Replace (or add) tensor NAME (its output name) with an .npy array.")
@click.option("--merge", metavar="OTHER", help="Also take the tensors of checkpoint OTHER.")
@click.option("--prefer", type=click.Choice(["input", "other"]),
              help="With --merge: which side wins a name both have (else an error).")
@_output_options
def surgery(path, output, shards, dry_run, as_json, overwrite, in_place, **ops):
    """Edit a checkpoint in one streaming pass, writing a new one; PATH is never modified
    (unless --in-place asks for it).

    Operations apply in this order: merge, use-moving-averages, strip-optimizer, drop,
    keep, strip-prefix, rename, add-prefix, set, slice-classes, cast. Mistakes (a rename that
    matches nothing, two names renamed onto one, a cast of an integer tensor) are errors
    before anything is written; the output appears only once complete.

    \b
    Examples:
      ckptkit surgery run/ -o slim/ --strip-optimizer --rename InceptionV3=net
      ckptkit surgery in.ckpt -o out.safetensors --cast bfloat16 --slice-classes 1:
    """
    return _run(path, output, dry_run, as_json, shards=shards, overwrite=overwrite,
                in_place=in_place, **ops)


@click.command()
@click.argument("path")
@click.argument("output")
@click.option("--names", type=click.Choice(["stored", "source"]), default="stored",
              show_default=True,
              help="source: name the weights of a .keras that `ckptkit port` wrote by the "
                   "checkpoint tensors they came from (a new head's keep their names), so "
                   "a ported model converts back to a slim checkpoint.")
@_output_options
def convert(path, output, names, shards, dry_run, as_json, overwrite, in_place):
    """Convert a checkpoint to the format OUTPUT's extension names.

    .npz, .safetensors, .h5 (Keras-style weights), anything else (or a directory) a TF V2
    checkpoint; V1 and TF2 object checkpoints convert to V2. Tensors are streamed one at a
    time; V2 -> V2 copies stored bytes.

    \b
    Examples:
      ckptkit convert model.ckpt model.safetensors
      ckptkit convert old_v1.ckpt new/ --shards 4
      ckptkit convert ported.keras slim/ --names source
    """
    return _run(path, output, dry_run, as_json, shards=shards, overwrite=overwrite,
                in_place=in_place, source_names=names == "source")
