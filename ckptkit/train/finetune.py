"""The fine-tuning session of `ckptkit finetune`: a TF1 graph and Session that restores what
the restore plan says, trains what it says, and leaves a train dir (rundir.py) that resumes.

How a run goes
- The data is loaded and checked (corrupt images dropped with a warning), the model's
  variables are listed and planned against the checkpoint exactly as `ckptkit plan` does;
  batch-norm layers outside the trained scopes run in inference mode (frozen like Keras'
  trainable=False: their moving statistics are used, never updated).
- Stages: head/features/finetune train once; two-stage trains the head first, then unfreezes
  from --train-from at a lower learning rate in a new graph (the Keras 4-step recipe).
- Resume: when the train dir has a checkpoint, every graph variable it holds is restored
  from it (global_step and optimizer slots included) and the rest initialised; the epoch and
  the batches already done in it follow from global_step, and the data order of an epoch
  depends only on (seed, epoch), so a resumed run sees what an uninterrupted one would.
- Ctrl-C / SIGTERM: the current step finishes, a checkpoint is saved, the run returns with
  stopped=True; the same command resumes it.
- features mode: the backbone runs once over the data (feature cache, features.py) and the
  head trains on the cached arrays in a graph of the head alone, the backbone's variables
  declared and restored by the plan, so the checkpoints it saves are whole models for eval,
  predict and export; they are written at the end, not after every epoch (_Checkpoints).

`loss` in the metrics is the cross-entropy (what val_loss also measures); the objective
minimised adds the net's weight-decay terms of the trained variables.
"""
import contextlib
import dataclasses
import math
import os
import platform
import signal
import time
from dataclasses import dataclass

import numpy as np

from ..errors import CkptError
from ..paths import open_checkpoint
from ..plan import RestorePlan, plan_restore
from ..scopes import role
from ..tfcompat import tf
from ..zoo.nets import get_net
from . import data, features, optim
from .devices import session_config, strategy, uses_gpu
from .nets import Model, model_variables
from .restore import apply_plan
from .rundir import BEST, CURVES, PLAN, RUN, RunDir

MODES = ("head", "features", "finetune", "two-stage")
_SUMMARY_EVERY = 20     # steps between TensorBoard points of the training loss


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on; saved in run.json. See `ckptkit finetune --help`."""

    net: str
    data: str
    train_dir: str
    checkpoint: str = None          # None: train from random initialisation
    val_data: str = None
    val_split: float = None         # None: the data's own val split, else 0.1
    num_classes: int = None
    mode: str = "finetune"
    exclude: tuple = ()
    train: tuple = ()
    train_from: str = None
    lr_mults: tuple = ()
    maps: tuple = ()
    match: str = "component"
    use_moving_averages: bool = False
    allow_mismatch: bool = False
    hidden: tuple = ()
    dropout: float = 0.5
    image_size: int = 0
    epochs: int = 10
    head_epochs: int = 0            # two-stage: epochs of the head stage (0: half)
    stage2_lr: float = 0.1          # two-stage: learning-rate factor of the second stage
    batch_size: int = 32
    optimizer: str = "momentum"
    lr: float = 0.01
    momentum: float = 0.9
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: float = 0.0
    decay_rate: float = 0.1
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    clip_norm: float = 0.0
    augment: bool = True
    seed: int = 0
    keep: int = 3
    save_every: float = 600.0       # seconds between checkpoints inside an epoch
    patience: int = 0               # early stopping: epochs without a better val accuracy
    device: str = "auto"
    gpus: str = None
    devices: tuple = ()             # data-parallel over these (default: every GPU, if > 1)
    mixed_precision: bool = False
    compare_scratch: bool = False
    cache_dir: str = None


@dataclass(frozen=True)
class _Stage:
    number: int
    mode: str                       # head | features | finetune
    train: tuple
    train_from: str
    end_epoch: int
    lr_factor: float = 1.0
    start_epoch: int = 0


def finetune(settings, *, log=lambda line: None, progress=None, on_epoch=None, curves=True):
    """Run (or resume) `settings`; returns a summary dict (see _summary). curves=False leaves
    curves.png out (a search draws it for its best trial only: plot_curves).

    on_epoch(row), when given, is called with each epoch's metrics row once its checkpoints
    are saved; an exception it raises (e.g. optuna.TrialPruned) ends the run there and
    propagates, the train dir left complete up to that epoch."""
    s = _checked(settings)
    run = RunDir(s.train_dir)
    dataset, note = data.load_run_data(s.data, val_data=s.val_data, val_split=s.val_split,
                                       seed=s.seed, num_classes=s.num_classes)
    model = Model(s.net, len(dataset.classes), s.image_size, tuple(s.hidden), s.dropout)
    resuming = run.latest_checkpoint() is not None
    if resuming:
        _check_resumable(run, model, dataset, log)
    stages = _stages(s)
    model_vars = model_variables(model.record, model.num_classes, head_scope=model.head_scope,
                                 hidden=model.hidden, dropout=model.dropout)
    plans = [_plan(s, stage, model, model_vars) for stage in stages]   # errors first
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
    for stage, plan in zip(stages, plans):
        stopped, seconds = _train_stage(s, stage, plan, run, model, dataset, log, progress,
                                        on_epoch, (arrays, model_vars))
        restore_seconds = seconds if restore_seconds is None else restore_seconds
        if stopped:
            break
    if curves:
        plot_curves(run.path)
    summary = _summary(run, stopped, restore_seconds)
    if s.compare_scratch and not stopped:
        scratch = dataclasses.replace(
            s, checkpoint=None, mode="finetune", train=(), train_from=None, exclude=(),
            lr_mults=(), maps=(), head_epochs=0, compare_scratch=False,
            train_dir=os.path.join(s.train_dir, "scratch"))
        log("training the same model from random initialisation (--compare-scratch) ...")
        summary["scratch"] = finetune(scratch, log=log, progress=progress)
    return summary


def _checked(s):
    """`s` with its values checked and normalised (one-line errors before any work)."""
    if s.mode not in MODES:
        raise CkptError(f"unknown mode {s.mode!r}; use one of {', '.join(MODES)}")
    if s.mode in ("head", "features") and (s.train or s.train_from):
        raise CkptError(f"--mode {s.mode} trains the new head only; --train/--train-from "
                        "belong to --mode finetune or two-stage")
    if s.mode == "two-stage" and not s.train_from:
        raise CkptError("--mode two-stage needs --train-from SCOPE: where the second stage "
                        "unfreezes the backbone (e.g. resnet_v1_50/block4)")
    if s.mode in ("head", "features", "two-stage") and not s.checkpoint:
        raise CkptError(f"--mode {s.mode} needs --checkpoint: a random backbone is not worth "
                        "freezing")
    for name in ("epochs", "batch_size", "keep"):
        if getattr(s, name) < 1:
            raise CkptError(f"--{name.replace('_', '-')} must be at least 1")
    if s.mode == "two-stage" and s.epochs < 2:
        raise CkptError("--mode two-stage needs --epochs of at least 2 (one per stage)")
    if s.mode == "two-stage" and s.head_epochs >= s.epochs:
        raise CkptError(f"--head-epochs {s.head_epochs} leaves no epoch of --epochs "
                        f"{s.epochs} for the second stage")
    get_net(s.net)
    session_config(s.device, s.gpus)
    for option, path in (("--train-dir", s.train_dir), ("--cache-dir", s.cache_dir)):
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise CkptError(f"{option} {path}: a file, not a folder")
    if not 0 <= s.label_smoothing < 1:
        raise CkptError(f"--label-smoothing must be in [0, 1), got {s.label_smoothing}")
    if not s.lr > 0:
        raise CkptError(f"--lr must be positive, got {s.lr}")
    if s.optimizer not in optim.OPTIMIZERS:
        raise CkptError(f"unknown optimizer {s.optimizer!r}; use one of "
                        f"{', '.join(optim.OPTIMIZERS)}")
    return s


def _stages(s):
    head = (Model.head_scope,)
    if s.mode in ("head", "features"):
        return [_Stage(1, s.mode, head, None, s.epochs)]
    if s.mode == "finetune":
        return [_Stage(1, "finetune", tuple(s.train), s.train_from, s.epochs)]
    first = min(s.head_epochs or max(1, s.epochs // 2), s.epochs - 1)
    return [_Stage(1, "head", head, None, first),
            _Stage(2, "finetune", (), s.train_from, s.epochs, s.stage2_lr, first)]


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
    if saved.get("model") != model.to_json():
        raise CkptError(f"{run.path} holds a run of another model ({saved.get('model')}); "
                        "use a new --train-dir, or the same settings to resume")
    if saved.get("data", {}).get("fingerprint") != dataset.fingerprint:
        log(f"warning: the data changed since {run.path} was started; resuming anyway")
    log(f"resuming from {run.latest_checkpoint()}")


# --- one stage -------------------------------------------------------------------------------

def _train_stage(s, stage, plan, run, model, dataset, log, progress, on_epoch, features_of):
    """Train one stage to its end epoch; returns (stopped, restore seconds or None).
    features_of: (cached feature arrays, the model's variables) for features mode."""
    steps_per_epoch = max(1, math.ceil(dataset.train.count / s.batch_size))
    latest = run.latest_checkpoint()
    done = run.latest_step()
    if done >= stage.end_epoch * steps_per_epoch:
        return False, None
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(s.seed)
        if stage.mode == "features":
            trainer = _FeatureTrainer(s, stage, model, plan, steps_per_epoch, *features_of)
        else:
            trainer = _ImageTrainer(s, stage, model, dataset, plan, steps_per_epoch,
                                    strategy(s.device, s.gpus, s.devices))
        checkpoints = _Checkpoints(s, stage, run, getattr(trainer, "fixed", ()))
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
        loop = _Loop(s, stage, run, sess, trainer, checkpoints, log, progress,
                     steps_per_epoch, on_epoch)
        return loop.run(), seconds


def _plan(s, stage, model, model_vars):
    """The restore plan of this stage (trainable lists differ between stages)."""
    record = model.record
    if not s.checkpoint:
        return RestorePlan(trainable=[m.name for m in model_vars
                                      if m.trainable and role(m.name) == "model"],
                           model_shapes={m.name: m.shape for m in model_vars})
    with open_checkpoint(s.checkpoint) as reader:
        plan = plan_restore(
            list(reader), model_vars, exclude=s.exclude, maps=s.maps, match=s.match,
            use_moving_averages=s.use_moving_averages, label_offset=record.label_offset,
            allow_mismatch=s.allow_mismatch, train=list(stage.train) or None,
            train_from=stage.train_from, lr_mults=s.lr_mults)
    plan.check()
    return plan


def frozen_batch_norms(names, trainable):
    """Anchored scope patterns of the batch-norm layers whose parameters are not trained."""
    trainable = set(trainable)
    frozen = []
    for name in names:
        if not name.endswith("/moving_mean"):
            continue
        scope = name[:-len("/moving_mean")]
        own = [f"{scope}/{p}" for p in ("beta", "gamma") if f"{scope}/{p}" in names] or \
            [f"{scope.rpartition('/')[0]}/weights"]
        if not trainable.intersection(own):
            frozen.append("/" + scope)
    return frozen


def _restore_present(sess, prefix):
    """Restore every graph variable the checkpoint holds; the others keep their init."""
    with open_checkpoint(prefix) as reader:
        held = {v.name for v in reader}
    present = {v.op.name: v for v in sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
               if v.op.name in held}
    tf.train.Saver(present).restore(sess, prefix)


def _objective(s, logits, labels, num_classes, trained):
    """(loss to minimise, cross-entropy, correct count) of a batch."""
    targets = tf.one_hot(labels, num_classes)
    if s.label_smoothing:
        targets = targets * (1 - s.label_smoothing) + s.label_smoothing / num_classes
    xent = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(
        labels=tf.stop_gradient(targets), logits=logits), name="xent")
    owners = tuple(v.op.name + "/" for v in trained)
    terms = [r for r in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
             if r.op.name.startswith(owners)]
    if s.weight_decay and s.optimizer != "adamw":
        terms += [s.weight_decay * tf.nn.l2_loss(v) for v in trained if v.shape.ndims > 1]
    total = tf.add_n([xent] + terms, name="objective") if terms else xent
    return total, xent, _correct(logits, labels)


def _correct(logits, labels):
    hits = tf.equal(tf.argmax(logits, 1), tf.cast(labels, tf.int64))
    return tf.reduce_sum(tf.cast(hits, tf.int32))


def _optimizers(s, stage, steps_per_epoch, lr_mults):
    """({multiplier: optimizer at lr * multiplier}, learning rate, global step) of a stage."""
    step = tf.train.get_or_create_global_step()
    first = stage.start_epoch * steps_per_epoch
    total = (stage.end_epoch - stage.start_epoch) * steps_per_epoch
    lr = optim.learning_rate(
        step - first, base=s.lr * stage.lr_factor, schedule=s.schedule, total_steps=total,
        warmup_steps=round(s.warmup_epochs * steps_per_epoch),
        decay_steps=round(s.decay_epochs * steps_per_epoch), decay_rate=s.decay_rate)
    optimizers = {}
    for mult in {1.0, *lr_mults.values()}:
        opt = optim.optimizer(s.optimizer, lr * mult, momentum=s.momentum)
        if s.mixed_precision and uses_gpu(s.device):
            opt = tf.mixed_precision.enable_mixed_precision_graph_rewrite(opt)
        optimizers[mult] = opt
    return optimizers, lr, step


def _minimize(s, optimizers, loss, trained, lr_mults, step, update_ops):
    """The update of `trained` variables (after the batch-norm `update_ops`), each by the
    optimizer of its learning-rate multiplier; global_step counts once."""
    grads = optim.clip(optimizers[1.0].compute_gradients(loss, var_list=trained), s.clip_norm)
    updates = []
    with tf.control_dependencies(update_ops):
        for mult, pairs in optim.by_multiplier(grads, lr_mults):
            updates.append(optimizers[mult].apply_gradients(
                pairs, global_step=None if updates else step))
    return tf.group(*updates)


def _with_decay(s, update, trained, lr, lr_mults):
    """AdamW's decoupled decay after `update` (cross-replica: every copy decays alike)."""
    if s.optimizer != "adamw" or not s.weight_decay:
        return update
    with tf.control_dependencies([update]):
        return tf.group(update, optim.decoupled_decay(trained, lr, s.weight_decay, lr_mults))


def _trained_variables(plan):
    by_name = {optim.variable_name(v): v for v in tf.trainable_variables()}
    return [by_name[n] for n in plan.trainable if n in by_name]


class _ImageTrainer:
    """Trains on decoded, preprocessed (and augmented) images through tf.data; with a
    tf.distribute strategy, data-parallel over its devices (each replica takes its share of
    every batch, gradients are summed across replicas)."""

    def __init__(self, s, stage, model, dataset, plan, steps_per_epoch, strategy=None):
        record = model.record
        frozen = frozen_batch_norms(set(plan.model_shapes), plan.trainable)
        replicas = strategy.num_replicas_in_sync if strategy else 1
        with strategy.scope() if strategy else contextlib.nullcontext():
            self.train_in = data.Input(dataset.train, record, batch_size=s.batch_size,
                                       training=True, augment=s.augment, seed=s.seed,
                                       name="train", strategy=strategy)
            optimizers, self.lr, self.step = _optimizers(s, stage, steps_per_epoch,
                                                         plan.lr_mults)

            def replica_step(images, labels):
                before = set(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
                logits, _ = model.build(images, is_training=True, frozen=frozen)
                updates = [op for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)
                           if op not in before]
                trained = _trained_variables(plan)
                loss, xent, correct = _objective(s, logits, labels, model.num_classes,
                                                 trained)
                update = _minimize(s, optimizers, loss / replicas, trained, plan.lr_mults,
                                   self.step, updates)
                with tf.control_dependencies([update]):
                    return tf.identity(xent), correct, tf.size(labels)

            if strategy is None:
                outputs = replica_step(self.train_in.images, self.train_in.labels)
            else:
                per_replica = strategy.experimental_run(lambda batch: replica_step(*batch),
                                                        self.train_in.iterator)
                outputs = [strategy.reduce(op, value, axis=None) for op, value in zip(
                    (tf.distribute.ReduceOp.MEAN, tf.distribute.ReduceOp.SUM,
                     tf.distribute.ReduceOp.SUM), per_replica)]
            self.xent, self.correct, self.batch = outputs
            self.update = _with_decay(s, tf.group(*outputs), _trained_variables(plan),
                                      self.lr, plan.lr_mults)
        self.val_in = None
        if dataset.val is not None:
            self.val_in = data.Input(dataset.val, record, batch_size=s.batch_size,
                                     training=False, seed=s.seed, name="val")
            with tf.variable_scope(tf.get_variable_scope(), reuse=True):
                val_logits, _ = model.build(self.val_in.images, is_training=False)
            self.val_ops = _eval_ops(val_logits, self.val_in.labels, model.num_classes)

    def train_epoch(self, sess, epoch, skip):
        """Yield (xent, correct, batch size, lr) per step of `epoch`, from batch `skip`."""
        self.train_in.start(sess, epoch, skip=skip)
        fetches = [self.update, self.xent, self.correct, self.batch, self.lr]
        for _ in range(self.train_in.steps - skip):
            yield tuple(sess.run(fetches)[1:])

    def evaluate(self, sess):
        if self.val_in is None:
            return None, None
        self.val_in.start(sess, 0)
        return _accumulate(sess, self.val_ops, self.val_in.steps)


def _eval_ops(logits, labels, num_classes):
    xent = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits))
    return [xent, _correct(logits, labels), tf.size(labels)]


def _accumulate(sess, ops, steps, feeds=()):
    """(mean loss, accuracy) over `steps` runs of the eval ops (or one run per feed)."""
    total = correct = seen = 0
    for feed in (feeds or [None] * steps):
        xent, hits, n = sess.run(ops, feed)
        total, correct, seen = total + float(xent), correct + int(hits), seen + int(n)
    return (total / seen, correct / seen) if seen else (None, None)


class _FeatureTrainer:
    """Trains the head on cached backbone features (features mode) in a graph of the head
    alone: the backbone's variables are declared, not built, so checkpoints hold the whole
    model (restored by the plan, never trained) for eval, predict and export."""

    def __init__(self, s, stage, model, plan, steps_per_epoch, arrays, model_vars):
        self.s, self.arrays, self.batch_size = s, arrays, s.batch_size
        head = model.head_scope + "/"
        self.fixed = [tf.Variable(tf.zeros(m.shape, m.dtype), trainable=False, name=m.name)
                      for m in model_vars if not m.name.startswith(head)]
        self.x = tf.placeholder(tf.float32, [None, *arrays["train_x"].shape[1:]], "features")
        self.y = tf.placeholder(tf.int64, [None], "labels")
        logits = model.head(self.x, is_training=True)
        trained = _trained_variables(plan)
        loss, self.xent, self.correct = _objective(s, logits, self.y, model.num_classes,
                                                   trained)
        optimizers, self.lr, self.step = _optimizers(s, stage, steps_per_epoch, plan.lr_mults)
        self.update = _with_decay(s, _minimize(s, optimizers, loss, trained, plan.lr_mults,
                                               self.step, []), trained, self.lr, plan.lr_mults)
        self.eval_ops = _eval_ops(model.head(self.x, is_training=False), self.y,
                                  model.num_classes)

    def train_epoch(self, sess, epoch, skip):
        x, y = self.arrays["train_x"], self.arrays["train_y"]
        order = np.random.default_rng([self.s.seed, epoch]).permutation(len(y))
        fetches = [self.update, self.xent, self.correct, self.lr]
        for start in range(skip * self.batch_size, len(y), self.batch_size):
            chosen = order[start:start + self.batch_size]
            _, xent, hits, lr = sess.run(fetches, {self.x: x[chosen], self.y: y[chosen]})
            yield xent, hits, len(chosen), lr

    def evaluate(self, sess):
        if "val_x" not in self.arrays:
            return None, None
        x, y = self.arrays["val_x"], self.arrays["val_y"]
        feeds = [{self.x: x[i:i + 1024], self.y: y[i:i + 1024]}
                 for i in range(0, len(y), 1024)]
        return _accumulate(sess, self.eval_ops, 0, feeds)


# --- the epoch loop --------------------------------------------------------------------------

class _Checkpoints:
    """The checkpoints of one stage: the rolling ones (what a resume starts from) and best/.

    Image modes save both after every epoch. Features mode defers them: an epoch on cached
    features takes milliseconds while every save rewrites the whole backbone, so the best
    epoch's changing variables (all but the declared backbone) are kept in memory and both
    are written when the stage ends or stops (a signal, early stopping, an on_epoch hook
    raising) and every save_every seconds; a killed run then redoes at most that much."""

    def __init__(self, s, stage, run, fixed):
        self.s, self.run_dir, self.sess = s, run, None
        self.saver = tf.train.Saver(max_to_keep=s.keep, save_relative_paths=True)
        # the same save ops (no second set to build), keeping one checkpoint
        best = tf.train.SaverDef()
        best.CopyFrom(self.saver.as_saver_def())
        best.max_to_keep = 1
        self.best_saver = tf.train.Saver(saver_def=best, save_relative_paths=True)
        self.deferred = stage.mode == "features"
        # features mode's graph is the head alone: its .meta would be no model to import
        self.meta = not self.deferred
        fixed = {v.op.name for v in fixed}
        self.changing = [v for v in tf.global_variables() if v.op.name not in fixed]
        self.best, self.saved_step, self.saved_at = None, None, time.monotonic()

    def save(self, step):
        self.saver.save(self.sess, self.run_dir.prefix, global_step=step,
                        write_meta_graph=self.meta)
        self.saved_step, self.saved_at = step, time.monotonic()

    def due(self):
        return time.monotonic() - self.saved_at > self.s.save_every

    def epoch_end(self, step, improved):
        if not self.deferred:
            self.save(step)
            if improved:
                self._save_best(step)
            return
        if improved:
            self.best = step, self.sess.run(self.changing)
        if self.due():
            self.flush(step)

    def flush(self, step):
        """Write what is not on disk yet: the rolling checkpoint of `step`, a deferred best."""
        if self.saved_step != step:
            self.save(step)
        if self.best is not None:
            best_step, values = self.best
            now = self.sess.run(self.changing)
            self._load(values)
            self._save_best(best_step)
            self._load(now)
            self.best = None

    def _save_best(self, step):
        self.best_saver.save(self.sess, self.run_dir.file(f"{BEST}/model.ckpt"),
                             global_step=step, write_meta_graph=self.meta)

    def _load(self, values):
        for var, value in zip(self.changing, values):
            var.load(value, self.sess)


class _Loop:
    """Epochs of one stage: metrics, summaries, checkpoints, best model, early stopping."""

    def __init__(self, s, stage, run, sess, trainer, checkpoints, log, progress,
                 steps_per_epoch, on_epoch=None):
        self.s, self.stage, self.run_dir, self.sess = s, stage, run, sess
        self.per_epoch = steps_per_epoch
        self.trainer, self.checkpoints = trainer, checkpoints
        self.log, self.progress, self.on_epoch = log, progress, on_epoch
        self.writer = tf.summary.FileWriter(run.path)

    def run(self):
        """Train to the stage's end; True when stopped by a signal."""
        s, stage, checkpoints = self.s, self.stage, self.checkpoints
        step = int(self.sess.run(self.trainer.step))
        per_epoch = self.per_epoch
        epoch, skip = divmod(step, per_epoch)
        rows = self.run_dir.metrics()
        best = max((r["val_accuracy"] for r in rows if r.get("val_accuracy") is not None),
                   default=None)
        stale = _epochs_since_best(rows)
        try:
            with _stop_signals() as stop:
                while epoch < stage.end_epoch:
                    if s.patience and stale >= s.patience:
                        self.log(f"early stop: no better val_accuracy for {stale} epochs")
                        break
                    row, step = self.epoch(epoch, skip, step, per_epoch, stop)
                    if row is None:
                        checkpoints.flush(step)
                        self.log(f"stopped at step {step}; saved {self.run_dir.prefix}-"
                                 f"{step}; run the same command to resume")
                        return True
                    self.run_dir.append_metrics(row)
                    self.summaries(row, step)
                    acc = row["val_accuracy"]
                    improved = acc is not None and (best is None or acc > best)
                    best, stale = (acc, 0) if improved else (best, stale + 1)
                    checkpoints.epoch_end(step, improved)
                    self.log(_epoch_line(row, s.epochs))
                    if self.on_epoch is not None:
                        try:
                            self.on_epoch(dict(row))
                        except BaseException:
                            checkpoints.flush(step)
                            raise
                    epoch, skip = epoch + 1, 0
            checkpoints.flush(step)
        finally:
            self.writer.close()
        return False

    def epoch(self, epoch, skip, step, per_epoch, stop):
        """Train one epoch; (metrics row, step), or (None, step) when a signal came."""
        xent_sum = correct = seen = 0
        lr = None
        train_seconds = 0.0
        with _progress(self.progress, per_epoch - skip,
                       f"epoch {epoch + 1}/{self.s.epochs}") as advance:
            steps = self.trainer.train_epoch(self.sess, epoch, skip)
            while True:
                begun = time.perf_counter()
                result = next(steps, None)
                if result is None:
                    break
                train_seconds += time.perf_counter() - begun
                xent, hits, n, lr = result
                step += 1
                xent_sum, correct, seen = xent_sum + float(xent) * n, correct + int(hits), \
                    seen + int(n)
                advance(1, loss=xent_sum / seen, acc=correct / seen,
                        ips=seen / max(train_seconds, 1e-9))
                if step % _SUMMARY_EVERY == 0:
                    self.scalars(step, {"train/batch_loss": float(xent), "train/lr": lr})
                if stop():
                    return None, step
                if self.checkpoints.due():
                    self.checkpoints.save(step)
        val_loss, val_acc = self.trainer.evaluate(self.sess)
        return {
            "epoch": epoch + 1, "step": step, "stage": self.stage.number,
            "loss": xent_sum / seen if seen else None,
            "accuracy": correct / seen if seen else None,
            "val_loss": val_loss, "val_accuracy": val_acc,
            "lr": float(lr) if lr is not None else None,
            "images_per_sec": seen / train_seconds if train_seconds else None,
        }, step

    def scalars(self, step, values):
        summary = tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=float(v))
                                    for k, v in values.items() if v is not None])
        self.writer.add_summary(summary, step)

    def summaries(self, row, step):
        self.scalars(step, {"loss": row["loss"], "accuracy": row["accuracy"],
                            "val_loss": row["val_loss"], "val_accuracy": row["val_accuracy"],
                            "lr": row["lr"], "images_per_sec": row["images_per_sec"]})
        self.writer.flush()


def _epochs_since_best(rows):
    best, stale = None, 0
    for row in rows:
        acc = row.get("val_accuracy")
        if acc is not None and (best is None or acc > best):
            best, stale = acc, 0
        else:
            stale += 1
    return stale


def _epoch_line(row, epochs):
    def num(key, fmt):
        return "-" if row.get(key) is None else format(row[key], fmt)
    return (f"epoch {row['epoch']}/{epochs}  loss {num('loss', '.4f')}  "
            f"accuracy {num('accuracy', '.4f')}  val_loss {num('val_loss', '.4f')}  "
            f"val_accuracy {num('val_accuracy', '.4f')}  {num('images_per_sec', '.0f')} img/s")


@contextlib.contextmanager
def _progress(progress, total, label):
    """The caller's progress bar (advance(n, **fields)), or a no-op."""
    if progress is None:
        yield lambda n, **fields: None
    else:
        with progress(total, label) as advance:
            yield advance


@contextlib.contextmanager
def _stop_signals():
    """Yield stop(): True once SIGINT or SIGTERM arrived (the step in flight finishes)."""
    received = []
    handlers = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    except ValueError:          # not the main thread: no signal handling
        pass
    try:
        yield lambda: bool(received)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


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
