"""`ckptkit search`: parse, call train.search, render. Registered at the end of cli.py."""
import copy

import click

from . import render
from .cli import _patterns, _sizes
from .cli import finetune as _finetune_command

_NOT_SEARCH = ("train_dir", "as_json", "compare_scratch")


def _finetune_options(f):
    """The finetune command's options, fixed for every trial (none required here: --report
    needs none)."""
    for param in reversed(_finetune_command.params):
        if param.name in _NOT_SEARCH:
            continue
        option = copy.copy(param)
        option.required = False
        f.__click_params__ = getattr(f, "__click_params__", [])
        f.__click_params__.append(option)
    return f


@click.command()
@click.option("--study-dir", metavar="DIR",
              help="Where the study (SQLite), trials' train dirs, trials.csv and plots go; "
                   "rerunning the same command resumes it.")
@click.option("--space", "space_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="TOML file: NAME = \"DIST\" or NAME = [choices] per line.")
@click.option("--param", "params", multiple=True, metavar="NAME=DIST",
              help="A dimension, e.g. lr=loguniform:1e-5:1e-1, optimizer=choice:sgd,adam, "
                   "dropout=uniform:0:0.6, head=choice:none,128,256x128, batch-size=int:8:64 "
                   "(repeatable; replaces the --space file's NAME).")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True,
              help="Finished (complete or pruned) trials the study should hold.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe",
              show_default=True, help="grid takes choice: parameters only.")
@click.option("--no-prune", is_flag=True, help="Run every trial to its last epoch.")
@click.option("--prune-startup", type=click.IntRange(0), default=5, show_default=True,
              help="Trials that finish before the median pruner stops any.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Trials in parallel (worker processes sharing the study).")
@click.option("--storage", metavar="URL",
              help="Optuna storage URL, e.g. postgresql://user@host/db, for machines that "
                   "share one study [default: sqlite in --study-dir].")
@click.option("--keep-models", default="3", metavar="N|all", show_default=True,
              callback=lambda ctx, param, value: _keep(value),
              help="Checkpoints kept: those of the N best complete trials (or all); the "
                   "other trials keep their metrics and settings.")
@click.option("--no-feature-cache", is_flag=True,
              help="Run frozen-backbone trials on images, not on cached features.")
@click.option("--report", "report_dir", metavar="DIR",
              help="Print the trials of this study dir and exit (runs nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_finetune_options
def search(report_dir, space_file, params, study_dir, trials, sampler, no_prune, prune_startup,
           jobs, storage, keep_models, no_feature_cache, as_json, hidden, no_augment,
           **options):
    """Search finetune settings with Optuna: TPE, pruning, resumable, parallel.

    Every finetune option is accepted and fixed for all trials; --space/--param name what
    varies. A trial with a frozen backbone trains on cached features.

    \b
    Examples:
      ckptkit search --net lenet --checkpoint pre --data digits --exclude Logits \\
          --mode head --epochs 5 --trials 30 --study-dir runs/search \\
          --param lr=loguniform:1e-4:1e-1 --param optimizer=choice:sgd,momentum,adam
      ckptkit search --report runs/search
    """
    from .train.space import parse_space

    if report_dir:
        from .train.search import report

        summary = report(report_dir, storage=storage)
        _emit(summary, as_json, table=True)
        return 0
    for name in ("net", "data"):
        if not options[name]:
            raise click.UsageError(f"Missing option '--{name}'")
    if not study_dir:
        raise click.UsageError("Missing option '--study-dir'")
    space = parse_space(params, space_file)
    from .train.finetune import Settings
    from .train.search import SearchSettings
    from .train.search import search as run

    options.update(
        hidden=_sizes(hidden, "--head"), augment=not no_augment,
        image_size=options["image_size"] or 0, head_epochs=options["head_epochs"] or 0,
        exclude=tuple(_patterns(options["exclude"])), train=tuple(_patterns(options["train"])),
        lr_mults=tuple(options["lr_mults"]), maps=tuple(options["maps"]))
    base = Settings(train_dir="", **options)
    cfg = SearchSettings(base=base, space=space, study_dir=study_dir, trials=trials,
                         sampler=sampler, prune=not no_prune, prune_startup=prune_startup,
                         jobs=jobs, storage=storage, feature_cache=not no_feature_cache,
                         keep_models=keep_models)
    live = _Live(space.names) if not as_json else None
    summary = run(cfg, log=lambda line: click.echo(line, err=True), on_trial=live)
    _emit(summary, as_json, table=False)
    return 130 if summary["stopped"] else 0


def _keep(value):
    if value.strip().lower() == "all":
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: give a number of trials (at least 1) or all")
    return int(value)


class _Live:
    """One line per finished trial, under a header printed once: the live table."""

    def __init__(self, names):
        self.names, self.started = names, False

    def __call__(self, row):
        if not self.started:
            click.echo(f"{'trial':>5}  {'state':<8}  {'val_acc':>7}  {'time':>7}  params")
            self.started = True
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}s"
        click.echo(f"{row['number']:>5}  {row['state']:<8}  {value:>7}  {seconds:>7}  "
                   f"{_params(row['params'])}")


def _value(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params(params):
    return " ".join(f"{k}={_value(v)}" for k, v in params.items())


def _emit(summary, as_json, table):
    if as_json:
        render.emit_json(summary)
        return
    rows = summary["trials"]
    if table:
        names = list(dict.fromkeys(k for r in rows for k in r["params"]))
        lines = [["trial", "state", "val_accuracy", "epochs", "time"] + names]
        for r in rows:
            lines.append([str(r["number"]), r["state"],
                          "-" if r["value"] is None else f"{r['value']:.4f}", str(r["epochs"]),
                          "-" if r["seconds"] is None else f"{r['seconds']:.1f}s"]
                         + [_value(r["params"][n]) if n in r["params"] else "-" for n in names])
        click.echo("\n".join(render.table(lines, "rlrrr" + "l" * len(names))))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary["counts"].items()))
    click.echo(f"\n{summary['study_dir']}: {counts or 'no trials'}")
    best = summary["best"]
    if best is None:
        click.echo("no complete trial yet")
    else:
        click.echo(f"best trial {best['number']}: val_accuracy {best['value']:.4f}  "
                   f"{_params(best['params'])}")
        click.echo(f"  train dir {best['train_dir']}")
    for name in ([summary["csv"]] if summary.get("csv") else []) + summary.get("plots", []):
        click.echo(f"  wrote {name}")
    if summary["stopped"]:
        click.echo("stopped; run the same command to resume")

