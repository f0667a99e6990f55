"""`ckptkit search`: parse, call train.search, render. It takes finetune's training options
from the same declaration (options.training_options), fixed for every trial."""
import click

from .. import render
from .options import require, training_options, training_settings


def _keep(ctx, param, value):
    if value.strip().lower() == "all":
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: give a number of trials (at least 1) or all")
    return int(value)


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
@click.option("--keep-models", default="3", metavar="N|all", show_default=True, callback=_keep,
              help="Checkpoints kept: those of the N best complete trials (or all); the "
                   "other trials keep their metrics and settings.")
@click.option("--no-feature-cache", is_flag=True,
              help="Run frozen-backbone trials on images, not on cached features.")
@click.option("--report", "report_dir", metavar="DIR",
              help="Print the trials of this study dir and exit (runs nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@training_options
def search(report_dir, space_file, params, study_dir, trials, sampler, no_prune, prune_startup,
           jobs, storage, keep_models, no_feature_cache, as_json, **options):
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
    if report_dir:
        from ..train.search.report import report

        _emit(report(report_dir, storage=storage), as_json, table=True)
        return 0
    require({**options, "study_dir": study_dir}, "net", "data", "study_dir")
    from ..train.search.space import parse_space
    from ..train.search.study import SearchSettings, search as run

    cfg = SearchSettings(base=training_settings(options, train_dir=""),
                         space=parse_space(params, space_file), study_dir=study_dir,
                         trials=trials, sampler=sampler, prune=not no_prune,
                         prune_startup=prune_startup, jobs=jobs, storage=storage,
                         feature_cache=not no_feature_cache, keep_models=keep_models)
    live = None if as_json else render.TrialLines(cfg.space.names, click.echo)
    summary = run(cfg, log=lambda line: click.echo(line, err=True), on_trial=live)
    _emit(summary, as_json, table=False)
    return 130 if summary["stopped"] else 0


def _emit(summary, as_json, table):
    if as_json:
        render.emit_json(summary)
    else:
        click.echo("\n".join(render.search_lines(summary, table)))
