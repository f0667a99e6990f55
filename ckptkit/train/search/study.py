"""`ckptkit search`: a hyperparameter search over `finetune` runs, with Optuna. This module
runs a study; space.py parses what it searches, report.py reads its results.

The study dir:
    study.db        Optuna's SQLite storage (unless --storage names a database server)
    study.json      what the study searches: the fixed settings and the space
    trials/NNNN/    one finetune train dir per trial: metrics, plan and settings; checkpoints
                    for the --keep-models best complete trials only (the others say why in
                    dropped.txt, which eval, predict and export repeat); curves.png for the
                    best
    trials.csv      every trial: number, state, val_accuracy, seconds, params, train dir
    history.png     optimisation history; importances.png: parameter importances

How it goes
- Each trial samples the space (TPE by default; random, grid), runs `finetune` on the fixed
  settings plus the sample and scores it by its best val_accuracy: the accuracy of the best/
  checkpoint, which `ckptkit eval` reproduces on the train dir.
- A trial's sample goes into the fixed Settings by setting name; the restore choices among
  them (train, train_from, lr_mults) into Settings.restore (_trial_settings).
- Cheap trials: a trial whose backbone is frozen (--mode head, or --train / --train-from
  naming only the model's head scopes) runs as --mode features and shares the feature cache,
  so the backbone runs once for the whole study (the head then trains on un-augmented
  features). With --keep-head a trial trains on images: the net's own classifier is no
  head to train on cached features.
- Trials are cheap in the process too: one process runs them all (TF imported once, the
  model's variables listed once), and there is no gc.collect() after each trial.
- Pruning: every epoch reports val_accuracy; the median pruner stops trials below the median
  of earlier ones at the same epoch (after --prune-startup finished trials).
- Stop and resume: Ctrl-C / SIGTERM stop the running trial at a checkpoint; a killed or
  crashed worker leaves its trial RUNNING. The next run of the same command marks such
  trials failed (a dead local process at once, another machine's after its heartbeat went
  stale) and retries each once with the same params in the same train dir, resuming from its
  checkpoint; finished trials are kept. --trials counts finished (complete + pruned) trials.
- --jobs N: N worker processes share the study through its storage; the database hands
  every trial number to one worker only. Several machines join one study with the same
  --storage URL of a PostgreSQL/MySQL server (Optuna's distributed mode); there each
  process's sampler is seeded with its machine and process id as well, since machines that
  join at the same moment see the same study and would otherwise draw the same samples.
"""
import dataclasses
import json
import os
import signal
import socket
import sys
import time
import zlib
from dataclasses import dataclass

from ...errors import CkptError
from ...fileio import write_atomic
from ...plan import RestoreOptions
from .. import data, plots
from ..devices import session_config
from ..rundir import RunDir
from ..settings import Settings, check, flat
from . import report
from .space import Space
from .storage import (STUDY_JSON, STUDY_NAME, TRIALS, finished, import_optuna, open_storage,
                      read_json, sqlite_url)

SAMPLERS = ("tpe", "random", "grid")
MAX_FAILED = 5                      # trials failing in a row (bad params) that end a search
_RESTORE_FIELDS = {f.name for f in dataclasses.fields(RestoreOptions)}


@dataclass(frozen=True)
class SearchSettings:
    """A search: the fixed finetune Settings, the space and the study."""

    base: Settings                  # its train_dir is unused
    space: Space
    study_dir: str
    trials: int = 20
    sampler: str = "tpe"
    prune: bool = True
    prune_startup: int = 5          # finished trials before the pruner prunes
    jobs: int = 1
    storage: str = None             # default: sqlite in the study dir
    feature_cache: bool = True
    keep_models: int = 3            # trials whose checkpoints stay (None: every trial's)


def search(cfg, *, log=lambda line: None, on_trial=None):
    """Run (or resume) the search; returns a summary dict (report.summary, plus "csv" and
    "plots"). `on_trial(row)` is called for every trial that finishes (report.trial_rows)."""
    _check(cfg)
    plots.require()
    os.makedirs(cfg.study_dir, exist_ok=True)
    _check_study_json(cfg)
    session_config(cfg.base.device, cfg.base.gpus)     # the check that needs TF: last
    optuna = import_optuna()
    study = _study(cfg, optuna)
    _recover(study, log)
    seen = {t.number for t in finished(study)}
    if cfg.jobs == 1:
        stopped = _work(cfg, study, log, on_trial)
    else:
        stopped = _parallel(cfg, study, log, on_trial, seen)
    return _finish(cfg, study, stopped, log)


# --- checks -----------------------------------------------------------------------------------

def _check(cfg):
    """Every check that needs no TensorFlow: a bad search fails before TF loads."""
    if not cfg.space:
        raise CkptError("empty search space: give --space FILE or --param NAME=DIST")
    if cfg.trials < 1:
        raise CkptError("--trials must be at least 1")
    if cfg.jobs < 1:
        raise CkptError("--jobs must be at least 1")
    if cfg.sampler not in SAMPLERS:
        raise CkptError(f"unknown sampler {cfg.sampler!r}; use one of {', '.join(SAMPLERS)}")
    if cfg.sampler == "grid":
        cfg.space.grid()
    if os.path.exists(cfg.study_dir) and not os.path.isdir(cfg.study_dir):
        raise CkptError(f"--study-dir {cfg.study_dir}: a file, not a folder")
    if cfg.base.compare_scratch:
        raise CkptError("--compare-scratch does not belong in a search")
    for values in (cfg.space.first(), {}):     # a trial's settings pass finetune's checks
        check(_trial_settings(cfg, values, os.path.join(cfg.study_dir, TRIALS, "check"))[0])
    b = cfg.base
    data.load_run_data(b.data, val_data=b.val_data, val_split=b.val_split, seed=b.seed,
                       num_classes=b.num_classes)


def _fixed(cfg):
    """What must not change between runs of one study (settings by their flat names)."""
    settings = flat(cfg.base)
    for name in ["train_dir"] + [p.setting for p in cfg.space.params]:   # trials set these
        settings.pop(name, None)
    for key in ("net", "checkpoint", "data", "val_data", "cache_dir"):
        if settings.get(key):
            settings[key] = os.path.abspath(settings[key])
    return {"settings": settings, "space": cfg.space.to_json(),
            "sampler": cfg.sampler}


def _check_study_json(cfg):
    """study.json: written by the first run, compared by every later one."""
    path = os.path.join(cfg.study_dir, STUDY_JSON)
    now = _fixed(cfg)
    if not os.path.isfile(path):
        write_atomic(path, json.dumps({**now, "storage": cfg.storage}, indent=2,
                                      sort_keys=True) + "\n")
        return
    saved = read_json(path)
    for key, flag in (("net", "--net"), ("data", "--data"), ("checkpoint", "--checkpoint")):
        was, new = saved.get("settings", {}).get(key), now["settings"].get(key)
        if was != new:
            raise CkptError(f"{cfg.study_dir} holds a study of {flag} {was}, not {new}; "
                            "use a new --study-dir, or the same options to resume")
    if saved.get("space") != now["space"]:
        raise CkptError(f"{cfg.study_dir} holds a study of another space "
                        f"({_space_text(saved.get('space'))}); use a new --study-dir, or "
                        "the same space to resume")
    # a setting the study.json predates counts as its default
    defaults = _fixed(dataclasses.replace(cfg, base=Settings(net="", data="", train_dir="")))
    was = {**defaults["settings"], **saved.get("settings", {})}
    changed = sorted(k for k in set(was) | set(now["settings"])
                     if was.get(k) != now["settings"].get(k))
    if saved.get("sampler") != now["sampler"]:
        changed.append("sampler")
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise CkptError(f"{cfg.study_dir} holds a study with other {flags}; use a new "
                        "--study-dir, or the same options to resume")


def _space_text(space):
    return " ".join(f"{k}={v}" for k, v in (space or {}).items())


# --- Optuna -----------------------------------------------------------------------------------

def _sampler(cfg, optuna, seed):
    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(cfg.space.grid(), seed=seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _study(cfg, optuna, worker=0):
    """The study, its sampler seeded by --seed, the trials it holds, the worker's index and,
    on a --storage server, the process: reproducible for one local process, and no two
    processes (--jobs, a resumed study, machines sharing a server) repeating each other's
    random samples."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.prune_startup) if cfg.prune \
        else optuna.pruners.NopPruner()
    url = cfg.storage or sqlite_url(cfg.study_dir)
    storage = open_storage(optuna, url, on_stale=_retry)
    try:
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                    sampler=_sampler(cfg, optuna, cfg.base.seed),
                                    pruner=pruner, direction="maximize", load_if_exists=True)
    except Exception as e:           # sqlalchemy's errors: a bad URL, a locked or odd file
        if isinstance(e, CkptError):
            raise
        raise CkptError(f"cannot open the study storage {url}: {str(e).splitlines()[0]}") \
            from None
    held = len(study.get_trials(deepcopy=False))
    machine = zlib.crc32(_worker_id().encode()) if cfg.storage else 0
    if held or worker or machine:
        study.sampler = _sampler(cfg, optuna, (cfg.base.seed * 1000003 + held * 7919
                                               + worker * 104729 + machine) % 2**32)
    return study


def _worker_id():
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(study, log):
    """Fail the RUNNING trials of dead local workers and retry every interrupted trial once."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)    # other machines' dead workers (heartbeat)
    storage, host = study._storage, socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        where, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if where == host and pid.isdigit() and not _alive(int(pid)):
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            log(f"trial {t.number} was interrupted (its process {pid} is gone)")
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("interrupted") and t.number not in retried:
            _retry(study, t)
            log(f"trial {t.number} will be retried in {t.user_attrs.get('train_dir')}")


def _retry(study, trial):
    """Enqueue `trial`'s params again; the retry resumes its train dir."""
    attrs = {"retry_of": trial.number}
    if trial.user_attrs.get("train_dir"):
        attrs["train_dir"] = trial.user_attrs["train_dir"]
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)


# --- trials -----------------------------------------------------------------------------------

class _Stopped(Exception):
    """A signal stopped the trial's finetune run (its train dir is resumable)."""


def _trial_settings(cfg, values, train_dir):
    """(Settings of a trial, whether it runs on the feature cache): the fixed settings with
    the sampled `values` ({setting: value}), restore choices going into .restore."""
    restore = {k: v for k, v in values.items() if k in _RESTORE_FIELDS}
    s = dataclasses.replace(cfg.base, train_dir=train_dir,
                            restore=dataclasses.replace(cfg.base.restore, **restore),
                            **{k: v for k, v in values.items() if k not in restore})
    train, train_from = s.restore.train, s.restore.train_from
    heads = s.model(s.num_classes).head_scopes      # the class count changes no scope
    frozen = s.mode == "head" or (s.mode == "finetune" and s.checkpoint and (
        ((train_from,) == heads and not train) or (train == heads and not train_from)))
    if cfg.feature_cache and frozen and s.checkpoint and not s.keep_head:
        return dataclasses.replace(s, mode="features", restore=dataclasses.replace(
            s.restore, train=(), train_from=None, layer_decay=1.0)), True
    return s, False


def _objective(cfg, study_dir, log, errors):
    import optuna

    from ..finetune import finetune

    def objective(trial):
        values = cfg.space.suggest(trial)
        train_dir = trial.user_attrs.get("train_dir") or os.path.join(
            study_dir, TRIALS, f"{trial.number:04d}")
        s, _ = _trial_settings(cfg, values, train_dir)
        trial.set_user_attr("train_dir", train_dir)
        trial.set_user_attr("worker", _worker_id())
        trial.set_user_attr("mode", s.mode)
        started = time.perf_counter()
        run = RunDir(train_dir)
        best = [None]

        def on_epoch(row):
            acc = row.get("val_accuracy")
            if acc is None:
                return
            best[0] = acc if best[0] is None else max(best[0], acc)
            trial.report(acc, row["epoch"])
            if cfg.prune and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

        run.keep_metrics_until(run.latest_step())   # what a retried trial keeps
        for row in run.metrics():           # a retried trial: its epochs so far
            if row.get("val_accuracy") is not None:
                best[0] = max(best[0] or 0.0, row["val_accuracy"])
                trial.report(row["val_accuracy"], row["epoch"])

        def trial_log(line):
            if line.startswith(("warning", "cached the backbone", "resuming")):
                log(f"trial {trial.number}: {line}")
        try:
            summary = finetune(s, log=trial_log, on_epoch=on_epoch, curves=False)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except CkptError as e:
            log(f"trial {trial.number}: error: {e}")
            errors.append(str(e))
            raise
        except optuna.TrialPruned:
            _record(trial, best[0], started)
            raise
        _record(trial, best[0], started)
        if summary["stopped"]:
            trial.set_user_attr("interrupted", True)
            raise _Stopped()
        if summary["best"] is None:
            raise CkptError("no validation accuracy: a search needs validation data "
                            "(--val-data, --val-split or a val/ folder)")
        return summary["best"]["val_accuracy"]
    return objective


def _record(trial, best, started):
    trial.set_user_attr("val_accuracy", best)
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 3))


def _work(cfg, study, log, on_trial):
    """Run trials in this process until --trials are finished; True when a signal stopped it."""
    from optuna.trial import TrialState

    errors = []
    objective = _objective(cfg, cfg.study_dir, log, errors)
    failed_in_a_row = 0
    callbacks = [] if on_trial is None else [
        lambda st, t: on_trial(report.trial_rows([t])[0]) if t.state in
        (TrialState.COMPLETE, TrialState.PRUNED) else None]
    while True:
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if len(finished(study)) + running >= cfg.trials:
            return False
        if cfg.sampler == "grid" and _grid_done(cfg, study):
            return False
        try:
            # no gc_after_trial: a full collection walks every TensorFlow object (~0.3 s a
            # trial, as long as a whole cached-features trial); refcounts free the graphs
            study.optimize(objective, n_trials=1, callbacks=callbacks, catch=(CkptError,))
        except _Stopped:
            return True
        except KeyboardInterrupt:       # outside finetune's own handling (e.g. the cache)
            return True
        _tidy(cfg, study)
        if not errors:
            failed_in_a_row = 0
            continue
        failed_in_a_row += 1
        message = errors.pop()
        if not finished(study):         # the fixed settings are wrong: say so, once
            raise CkptError(message)
        if failed_in_a_row >= MAX_FAILED:
            raise CkptError(f"{MAX_FAILED} trials in a row failed; the last: {message}")


def _tidy(cfg, study):
    """Delete the checkpoints of finished trials outside the best --keep-models complete
    ones (pruned trials included): a search on a real backbone would otherwise leave a
    whole model per trial. Their metrics and settings stay."""
    from optuna.trial import TrialState

    if cfg.keep_models is None:
        return
    done = finished(study)
    complete = sorted((t for t in done if t.state == TrialState.COMPLETE),
                      key=lambda t: (-t.value, t.number))
    kept = {t.number for t in complete[:cfg.keep_models]}
    n = cfg.keep_models
    for t in done:
        train_dir = t.user_attrs.get("train_dir")
        if t.number in kept or not train_dir or not os.path.isdir(train_dir) or \
                RunDir(train_dir).dropped():
            continue
        why = "was pruned" if t.state == TrialState.PRUNED else \
            f"is not among the {n} best complete trials"
        RunDir(train_dir).drop_checkpoints(
            f"search trial {t.number} {why}, and --keep-models {n} keeps the checkpoints of "
            f"the {n} best complete trials only; use one of those (trials.csv), or search "
            "with --keep-models all")


def _grid_done(cfg, study):
    size = cfg.space.size()
    return size is not None and len(finished(study)) >= size


def _worker_main(cfg, worker):
    """Entry of a --jobs worker process."""
    optuna = import_optuna()
    study = _study(cfg, optuna, worker)
    try:
        stopped = _work(cfg, study, lambda line: print(line, file=sys.stderr, flush=True), None)
    except CkptError as e:
        print(f"ckptkit: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(130 if stopped else 0)


def _parallel(cfg, study, log, on_trial, seen):
    """--jobs N worker processes on the shared storage; this process follows the trials."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(cfg, i + 1), daemon=False)
               for i in range(cfg.jobs)]
    received = []

    def forward(signum, frame):
        received.append(signum)
        for w in workers:
            if w.pid and w.is_alive():
                os.kill(w.pid, signal.SIGTERM)
    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=1.0 / len(workers))
            _announce(study, seen, on_trial)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    _announce(study, seen, on_trial)
    if not received and all(w.exitcode == 2 for w in workers):
        raise CkptError("every worker stopped on an error (see above)")
    return bool(received) or any(w.exitcode == 130 for w in workers)


def _announce(study, seen, on_trial):
    new = [t for t in finished(study) if t.number not in seen]
    for t in sorted(new, key=lambda t: t.number):
        seen.add(t.number)
        if on_trial is not None:
            on_trial(report.trial_rows([t])[0])


def _finish(cfg, study, stopped, log):
    """Tidy the trials' checkpoints; write trials.csv, the plots and the best trial's curves."""
    _tidy(cfg, study)
    summary = report.summary(cfg.study_dir, study, stopped)
    summary["csv"] = report.write_csv(cfg.study_dir, summary["trials"])
    summary["plots"] = report.plots(study, cfg.study_dir, log)
    if summary["best"] and summary["best"]["train_dir"]:
        from ..finetune import plot_curves

        plot_curves(summary["best"]["train_dir"])
    return summary
