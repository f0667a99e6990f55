"""The fine-tuning session of `ckptkit finetune`: a TF1 graph and Session per stage that
restores what the restore plan says, trains what it says, and leaves a train dir (rundir.py)
that resumes. This module orchestrates, and loads TensorFlow only to train; settings.py
checks and stages a run, trainers.py builds the training graphs, loop.py runs a stage: its
graph and session, its epochs and checkpoints.

How a run goes
- The settings are checked, the data is loaded and checked (corrupt images dropped with a
  warning), and every stage's plan is made with restore.plan_model, exactly as `ckptkit plan`
  makes it; batch-norm layers outside the trained scopes run in inference mode (frozen like
  Keras' trainable=False: their moving statistics are used, never updated).
- Stages: head/features/finetune train once; two-stage trains the head first, then unfreezes
  from --train-from at a lower learning rate in a new graph (the Keras 4-step recipe),
  logging where each stage starts; curves.png marks the boundary. A head-only stage trains
  the model's head scopes: the new head, or with --keep-head the net's own classifier.
- --compare-scratch trains the same model from random initialisation in TRAIN_DIR/scratch
  and draws both runs' validation accuracy and loss on one figure, TRAIN_DIR/compare.png.
- TensorFlow loads only once everything that needs none is checked: the settings, the data
  and its class count, the train dir and the resume below.
- Resume: when the train dir has a checkpoint, the settings in its run.json are compared
  with the new ones (settings.changes): those settings.RESUMABLE lists are applied and said,
  any other change is an error naming each (a new --train-dir, or restart=True: --restart,
  which discards the old run, RunDir.discard). A run with nothing left to train is reported
  complete from run.json, the metrics and the latest checkpoint's step, without TensorFlow.
  Otherwise every graph variable the checkpoint holds is restored (global_step and optimizer
  slots included) and the rest initialised; the epoch and the batches already done in it
  follow from global_step, and the data order of an epoch depends only on (seed, epoch), so
  a resumed run sees what an uninterrupted one would.
- Ctrl-C / SIGTERM: the current step finishes, a checkpoint is saved, the run returns with
  stopped=True; the same command resumes it.
- features mode: the backbone runs once over the data (feature cache, features.py) and the
  head trains on the cached arrays in a graph of the head alone; the checkpoints it saves are
  still whole models for eval, predict and export, the backbone's tensors copied into them
  from the checkpoint (trainers.FeatureTrainer); they are written at the end, not after every
  epoch (loop.Checkpoints).
"""
import dataclasses
import os
import platform
import time

import numpy as np

from ..errors import CkptError
from ..plan import RestoreOptions, RestorePlan
from ..scopes import role
from . import data, features, plots
from .devices import session_config
from .nets import Model
from .rundir import COMPARE, CURVES, RUN, SCRATCH, RunDir, epochs_since_best
from .settings import RESUMABLE, changes, check, flag, from_json, resolved, stages


def finetune(settings, *, log=lambda line: None, progress=None, on_epoch=None, curves=True,
             restart=False):
    """Run (or resume) `settings` (settings.Settings); returns a summary dict (see _summary).
    curves=False leaves curves.png out (a search draws it for its best trial only:
    plot_curves). restart=True discards the run the train dir holds instead of resuming it.

    on_epoch(row), when given, is called with each epoch's metrics row once its checkpoints
    are saved; an exception it raises (e.g. optuna.TrialPruned) ends the run there and
    propagates, the train dir left complete up to that epoch.

    run.json keeps the data paths absolute (settings.resolved): eval and a resume find the
    data from any working directory."""
    s = resolved(settings)
    check(s)
    if curves or s.compare_scratch:
        plots.require()
    run = RunDir(s.train_dir)
    dataset, note = data.load_run_data(s.data, val_data=s.val_data, val_split=s.val_split,
                                       seed=s.seed, num_classes=s.num_classes)
    model = s.model(len(dataset.classes))
    resuming = _resume(run, s, model, dataset, restart, log)
    if resuming == "complete":
        summary = _summary(run, False, None)
    else:
        summary = _train(s, run, model, dataset, note, resuming, restart, log, progress,
                         on_epoch)
        if curves:
            plot_curves(run.path)
    if s.compare_scratch and not summary["stopped"]:
        scratch = dataclasses.replace(
            s, checkpoint=None, mode="finetune", restore=RestoreOptions(), head_epochs=0,
            compare_scratch=False, train_dir=run.file(SCRATCH))
        log("training the same model from random initialisation (--compare-scratch) ...")
        summary["scratch"] = finetune(scratch, log=log, progress=progress, curves=curves)
        if curves:
            summary["compare_png"] = plot_compare(run.path)
    return summary


def _resume(run, s, model, dataset, restart, log):
    """What the train dir holds for `s`: False (no run to resume, or restart), True (a run
    to resume, the settings a resume may change applied to its run.json) or "complete"
    (nothing left to train). A one-line error for a train dir of someone else's, or a run
    of other settings."""
    latest = run.latest_checkpoint()
    if latest is None:
        return False
    if not os.path.isfile(run.file(RUN)):
        raise CkptError(f"{run.path} holds checkpoints but no {RUN}: not a ckptkit train dir; "
                        "give a new --train-dir (a pretrained checkpoint goes in --checkpoint)")
    if restart:
        return False
    saved = run.read_run()
    changed = changes(from_json(saved.get("settings")), s)
    refused = ", ".join(f"{flag(name)} {old} -> {new}" for name, old, new in changed
                        if name not in RESUMABLE)
    # compared as Models: a run saved before a Model field existed has its default
    other_model = not isinstance(saved.get("model"), dict) or \
        Model.from_json(saved["model"]) != model
    if other_model or refused:
        what = "of another model" if other_model else "with other settings"
        detail = refused or f"{saved.get('model')}"
        raise CkptError(f"{run.path} holds a run {what} ({detail}); use a new --train-dir, "
                        "or --restart to discard that run")
    step, rows = run.latest_step(), run.metrics()
    trained = max((r.get("epoch", 0) for r in rows if r.get("step", 0) <= step), default=0)
    if s.epochs < trained:
        raise CkptError(f"{run.path} has trained {trained} epochs: --epochs {s.epochs} is "
                        f"fewer; give --epochs {trained} or more, a new --train-dir, or "
                        "--restart")
    if saved.get("data", {}).get("fingerprint") != dataset.fingerprint:
        log(f"warning: the data changed since {run.path} was started; resuming anyway")
    applied = ", ".join(f"{flag(name)} {old} -> {new}" for name, old, new in changed)
    if applied:
        run.write_json(RUN, {**saved, "settings": dataclasses.asdict(s)})
    with_changes = f" with {applied}" if applied else ""
    done = _done(rows, step, s)
    if done:
        log(f"{run.path}: complete, {done}{with_changes}; more --epochs trains on, "
            "--restart starts over")
        return "complete"
    log(f"resuming from {latest}{with_changes}")
    return True


def _done(rows, step, s):
    """How the run of metrics `rows` ended, when its latest checkpoint (at `step`) is the end
    of its last epoch and that is the last epoch of `s`, or --patience epochs past the best
    one; else None."""
    if not rows or rows[-1].get("step") != step:
        return None
    epochs = rows[-1].get("epoch", 0)
    if epochs >= s.epochs:
        return f"{epochs} of {s.epochs} epochs"
    stale = epochs_since_best(rows)
    if s.patience and stale >= s.patience:
        return f"stopped early after {epochs} epochs (no better val_accuracy for {stale})"
    return None


def _train(s, run, model, dataset, note, resuming, restart, log, progress, on_epoch):
    """Load TensorFlow, check what needs it, train every stage; the summary."""
    from .loop import train_stage

    session_config(s.device, s.gpus)        # the check that needs TF (--gpus)
    run_stages = stages(s, model)
    plans = [_plan(s, stage, model) for stage in run_stages]    # errors first
    if s.mode == "features":
        _check_backbone_restored(plans[0], model)
    if note:
        log(note)
    for line in plans[0].notes:                 # how the checkpoint resolved, the head
        log(f"note: {line}")
    arrays = None
    if s.mode == "features":
        path = features.cache_path(s.cache_dir, s.checkpoint, plans[0], model, dataset)
        arrays, dataset, bad = features.cached(
            path, model, dataset, plans[0], s.checkpoint, batch_size=s.batch_size,
            config=session_config(s.device, s.gpus), progress=progress, log=log)
    else:
        dataset, bad = data.drop_corrupt(dataset)
    for line in data.skip_warnings(bad):
        log(line)
    if not resuming:
        if run.discard() and restart:
            log(f"--restart: discarded the run in {run.path}")
        os.makedirs(run.path, exist_ok=True)
        run.write_labels(dataset.classes)
        run.write_json(RUN, _run_json(s, model, dataset))
    run.keep_metrics_until(run.latest_step())
    stopped, restore_seconds = False, None
    for stage, plan in zip(run_stages, plans):
        stopped, seconds = train_stage(s, stage, plan, run, model, dataset, log, progress,
                                       on_epoch, arrays)
        restore_seconds = seconds if restore_seconds is None else restore_seconds
        if stopped:
            break
    return _summary(run, stopped, restore_seconds)


def _plan(s, stage, model):
    """The restore plan of a stage (stages differ in what they train)."""
    from .restore import plan_model

    if not s.checkpoint:
        model_vars = model.variables()
        return RestorePlan(trainable=[m.name for m in model_vars
                                      if m.trainable and role(m.name) == "model"],
                           model_shapes={m.name: m.shape for m in model_vars})
    return plan_model(s.checkpoint, model, dataclasses.replace(
        s.restore, train=stage.train, train_from=stage.train_from))


def _check_backbone_restored(plan, model):
    """features mode trains on what the checkpoint's backbone computes and copies that
    backbone into its checkpoints: every backbone variable must come from the checkpoint."""
    restored = {r.model for r in plan.restore}
    fresh = [m.name for m in model.backbone_variables() if m.name not in restored]
    if fresh:
        raise CkptError(f"--mode features needs the whole backbone from the checkpoint; the "
                        f"plan leaves {len(fresh)} of its variables fresh (first: {fresh[0]}): "
                        "use --mode head or finetune, or a checkpoint that holds them")


def _run_json(s, model, dataset):
    import tf_slim

    from .. import __version__
    from ..tfcompat import tf

    return {
        "model": model.to_json(),
        "settings": dataclasses.asdict(s),
        "data": {"source": dataset.source, "kind": dataset.kind,
                 "fingerprint": dataset.fingerprint, "classes": list(dataset.classes),
                 "train": dataset.train.count,
                 "val": dataset.val.count if dataset.val else 0},
        "versions": {"ckptkit": __version__, "tensorflow": tf.__version__,
                     "tf_slim": getattr(tf_slim, "__version__", None),
                     "numpy": np.__version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def plot_curves(train_dir):
    """curves.png of a train dir from its metrics (none before the first epoch)."""
    run = RunDir(train_dir)
    rows = run.metrics()
    if rows:
        plots.curves(rows, run.file(CURVES))


def plot_compare(train_dir):
    """compare.png of a --compare-scratch run: it and its scratch twin on one figure; its
    path."""
    run = RunDir(train_dir)
    path = run.file(COMPARE)
    plots.compare({"pretrained": run.metrics(),
                   "scratch": RunDir(run.file(SCRATCH)).metrics()}, path)
    return path


def _summary(run, stopped, restore_seconds):
    rows = run.metrics()
    best = max((r for r in rows if r.get("val_accuracy") is not None),
               key=lambda r: r["val_accuracy"], default=None)
    return {"train_dir": run.path, "stopped": stopped, "epochs": len(rows),
            "step": rows[-1]["step"] if rows else 0,
            "final": rows[-1] if rows else None, "best": best,
            "checkpoint": run.latest_checkpoint(), "restore_seconds": restore_seconds}
