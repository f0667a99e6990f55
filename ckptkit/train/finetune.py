"""The fine-tuning session of `ckptkit finetune`: a TF1 graph and Session per stage that
restores what the restore plan says, trains what it says, and leaves a train dir (rundir.py)
that resumes. This module orchestrates; settings.py checks and stages a run, trainers.py
builds the training graphs, loop.py runs the epochs and saves the checkpoints.

How a run goes
- The settings are checked, the data is loaded and checked (corrupt images dropped with a
  warning), and every stage's plan is made with restore.plan_model, exactly as `ckptkit plan`
  makes it; batch-norm layers outside the trained scopes run in inference mode (frozen like
  Keras' trainable=False: their moving statistics are used, never updated).
- Stages: head/features/finetune train once; two-stage trains the head first, then unfreezes
  from --train-from at a lower learning rate in a new graph (the Keras 4-step recipe). A
  head-only stage trains the model's head scopes: the new head, or with --keep-head the
  net's own classifier.
- Resume: when the train dir has a checkpoint, every graph variable it holds is restored
  from it (global_step and optimizer slots included) and the rest initialised; the epoch and
  the batches already done in it follow from global_step, and the data order of an epoch
  depends only on (seed, epoch), so a resumed run sees what an uninterrupted one would.
- Ctrl-C / SIGTERM: the current step finishes, a checkpoint is saved, the run returns with
  stopped=True; the same command resumes it.
- features mode: the backbone runs once over the data (feature cache, features.py) and the
  head trains on the cached arrays in a graph of the head alone, the backbone's variables
  declared and restored by the plan, so the checkpoints it saves are whole models for eval,
  predict and export; they are written at the end, not after every epoch (loop.Checkpoints).
"""
import dataclasses
import math
import os
import platform
import time

import numpy as np

from ..errors import CkptError
from ..paths import open_checkpoint
from ..plan import RestoreOptions, RestorePlan
from ..scopes import role
from ..tfcompat import tf
from . import data, features
from .devices import session_config, strategy
from .loop import Checkpoints, Loop
from .nets import Model
from .restore import apply_plan, plan_model
from .rundir import CURVES, PLAN, RUN, RunDir
from .settings import check, stages
from .trainers import FeatureTrainer, ImageTrainer


def finetune(settings, *, log=lambda line: None, progress=None, on_epoch=None, curves=True):
    """Run (or resume) `settings` (settings.Settings); returns a summary dict (see _summary).
    curves=False leaves curves.png out (a search draws it for its best trial only:
    plot_curves).

    on_epoch(row), when given, is called with each epoch's metrics row once its checkpoints
    are saved; an exception it raises (e.g. optuna.TrialPruned) ends the run there and
    propagates, the train dir left complete up to that epoch."""
    s = settings
    check(s)
    session_config(s.device, s.gpus)        # the check that needs TF (--gpus)
    run = RunDir(s.train_dir)
    dataset, note = data.load_run_data(s.data, val_data=s.val_data, val_split=s.val_split,
                                       seed=s.seed, num_classes=s.num_classes)
    model = s.model(len(dataset.classes))
    resuming = run.latest_checkpoint() is not None
    if resuming:
        _check_resumable(run, model, dataset, log)
    run_stages = stages(s, model)
    plans = [_plan(s, stage, model) for stage in run_stages]    # errors first
    if note:
        log(note)
    arrays = None
    if s.mode == "features":
        path = features.cache_path(s.cache_dir, s.checkpoint, plans[0], model, dataset)
        arrays, dataset, bad = features.cached(
            path, model, dataset, plans[0], s.checkpoint, batch_size=s.batch_size,
            config=session_config(s.device, s.gpus), progress=progress, log=log)
    else:
        dataset, bad = data.drop_corrupt(dataset)
    for path in bad:
        log(f"warning: skipping unreadable image {path}")
    os.makedirs(run.path, exist_ok=True)
    run.keep_metrics_until(run.latest_step())
    if not resuming:
        run.write_labels(dataset.classes)
        run.write_json(RUN, _run_json(s, model, dataset))
    stopped, restore_seconds = False, None
    for stage, plan in zip(run_stages, plans):
        stopped, seconds = _train_stage(s, stage, plan, run, model, dataset, log, progress,
                                        on_epoch, arrays)
        restore_seconds = seconds if restore_seconds is None else restore_seconds
        if stopped:
            break
    if curves:
        plot_curves(run.path)
    summary = _summary(run, stopped, restore_seconds)
    if s.compare_scratch and not stopped:
        scratch = dataclasses.replace(
            s, checkpoint=None, mode="finetune", restore=RestoreOptions(), head_epochs=0,
            compare_scratch=False, train_dir=os.path.join(s.train_dir, "scratch"))
        log("training the same model from random initialisation (--compare-scratch) ...")
        summary["scratch"] = finetune(scratch, log=log, progress=progress)
    return summary


def _plan(s, stage, model):
    """The restore plan of a stage (stages differ in what they train)."""
    if not s.checkpoint:
        model_vars = model.variables()
        return RestorePlan(trainable=[m.name for m in model_vars
                                      if m.trainable and role(m.name) == "model"],
                           model_shapes={m.name: m.shape for m in model_vars})
    return plan_model(s.checkpoint, model, dataclasses.replace(
        s.restore, train=stage.train, train_from=stage.train_from))


def _run_json(s, model, dataset):
    import tf_slim

    from .. import __version__

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


def _check_resumable(run, model, dataset, log):
    if not os.path.isfile(run.file(RUN)):
        raise CkptError(f"{run.path} holds checkpoints but no {RUN}: not a ckptkit train dir; "
                        "give a new --train-dir (a pretrained checkpoint goes in --checkpoint)")
    saved = run.read_run()
    # compared as Models: a run saved before a Model field existed has its default
    if not isinstance(saved.get("model"), dict) or Model.from_json(saved["model"]) != model:
        raise CkptError(f"{run.path} holds a run of another model ({saved.get('model')}); "
                        "use a new --train-dir, or the same settings to resume")
    if saved.get("data", {}).get("fingerprint") != dataset.fingerprint:
        log(f"warning: the data changed since {run.path} was started; resuming anyway")
    log(f"resuming from {run.latest_checkpoint()}")


def _train_stage(s, stage, plan, run, model, dataset, log, progress, on_epoch, arrays):
    """Train one stage to its end epoch; returns (stopped, restore seconds or None).
    arrays: the cached features of features mode."""
    steps_per_epoch = max(1, math.ceil(dataset.train.count / s.batch_size))
    latest = run.latest_checkpoint()
    done = run.latest_step()
    if done >= stage.end_epoch * steps_per_epoch:
        return False, None
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(s.seed)
        if stage.mode == "features":
            trainer = FeatureTrainer(s, stage, model, plan, steps_per_epoch, arrays,
                                     model.variables())
        else:
            trainer = ImageTrainer(s, stage, model, dataset, plan, steps_per_epoch,
                                   strategy(s.device, s.gpus, s.devices))
        checkpoints = Checkpoints(s, stage, run, trainer.fixed)
        init = tf.group(tf.global_variables_initializer(), tf.local_variables_initializer())
    with tf.Session(graph=graph, config=session_config(s.device, s.gpus)) as sess:
        sess.run(init)
        started = time.perf_counter()
        if latest:
            _restore_present(sess, latest)
            seconds = None
        else:
            if s.checkpoint:
                count = apply_plan(sess, plan, s.checkpoint)
                log(f"restored {count} variables from {s.checkpoint}")
            run.write_json(PLAN, plan.to_json())
            seconds = time.perf_counter() - started
        checkpoints.sess = sess
        loop = Loop(s, stage, run, sess, trainer, checkpoints, log, progress,
                    steps_per_epoch, on_epoch)
        return loop.run(), seconds


def _restore_present(sess, prefix):
    """Restore every graph variable the checkpoint holds; the others keep their init."""
    with open_checkpoint(prefix) as reader:
        held = {v.name for v in reader}
    present = {v.op.name: v for v in sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
               if v.op.name in held}
    tf.train.Saver(present).restore(sess, prefix)


def plot_curves(train_dir):
    """curves.png of a train dir from its metrics (none before the first epoch)."""
    run = RunDir(train_dir)
    rows = run.metrics()
    if rows:
        from .plots import curves

        curves(rows, run.file(CURVES))


def _summary(run, stopped, restore_seconds):
    rows = run.metrics()
    best = max((r for r in rows if r.get("val_accuracy") is not None),
               key=lambda r: r["val_accuracy"], default=None)
    return {"train_dir": run.path, "stopped": stopped, "epochs": len(rows),
            "step": rows[-1]["step"] if rows else 0,
            "final": rows[-1] if rows else None, "best": best,
            "checkpoint": run.latest_checkpoint(), "restore_seconds": restore_seconds}

