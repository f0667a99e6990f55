"""One finetune stage (train_stage): its graph and session, the epoch loop (Loop) and its
checkpoints (Checkpoints): metrics and summaries per epoch, the rolling checkpoints a resume
starts from, best/, early stopping, and Ctrl-C / SIGTERM, which let the step in flight
finish, save a checkpoint and return stopped (the same command resumes).
"""
import contextlib
import glob
import math
import os
import re
import signal
import time

from ..fileio import STATE_FILE, link_or_copy, write_atomic, write_state
from ..formats.tf_v2_write import TFV2Writer
from ..legacy import CheckpointState
from ..paths import open_checkpoint
from ..tfcompat import tf
from .devices import session_config, strategy
from .restore import apply_plan
from .rundir import BEST, PLAN, epochs_since_best
from .trainers import FeatureTrainer, ImageTrainer

_SUMMARY_EVERY = 20     # steps between TensorBoard points of the training loss


def train_stage(s, stage, plan, run, model, dataset, log, progress, on_epoch, arrays):
    """Train one stage to its end epoch; returns (stopped, restore seconds or None).
    arrays: the cached features of features mode."""
    steps_per_epoch = max(1, math.ceil(dataset.train.count / s.batch_size))
    latest = run.latest_checkpoint()
    if run.latest_step() >= stage.end_epoch * steps_per_epoch:
        return False, None
    if s.mode == "two-stage":
        what = (f"unfreezing from {stage.train_from} at lr x{stage.lr_factor:g}"
                if stage.number == 2 else f"training the head ({', '.join(stage.train)})")
        log(f"stage {stage.number}: {what}, epochs {stage.start_epoch + 1}-{stage.end_epoch}")
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(s.seed)
        if stage.mode == "features":
            trainer = FeatureTrainer(s, stage, model, plan, steps_per_epoch, arrays)
        else:
            trainer = ImageTrainer(s, stage, model, dataset, plan, steps_per_epoch,
                                   strategy(s.device, s.gpus, s.devices))
        checkpoints = Checkpoints(s, stage, run, trainer)
        init = tf.group(tf.global_variables_initializer(), tf.local_variables_initializer())
    with tf.Session(graph=graph, config=session_config(s.device, s.gpus)) as sess:
        sess.run(init)
        started = time.perf_counter()
        if latest:
            _restore_present(sess, latest)
            seconds = None
        else:
            if s.checkpoint:
                copied = {r.model for r in trainer.copied}
                count = apply_plan(sess, plan, s.checkpoint,
                                   [r for r in plan.restore if r.model not in copied])
                also = f" (the backbone's {len(copied)} copied into each checkpoint as " \
                    "stored)" if copied else ""
                log(f"restored {count + len(copied)} variables from {s.checkpoint}{also}")
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


class Checkpoints:
    """The checkpoints of one stage: the rolling ones (what a resume starts from) and best/.

    Image modes write the rolling checkpoint at the end of an epoch that is the best so far
    (best/ is then its files hard-linked, copied where links fail: not a second save) or
    that ends --save-every seconds or more after the last save; inside an epoch once those
    seconds pass; and when the stage ends or stops (a signal, early stopping, an on_epoch hook
    raising). A killed run loses at most --save-every seconds: a resume drops the metrics of
    the epochs after its checkpoint and trains them again, in the same order.

    Features mode saves no epoch's end: an epoch on cached features takes milliseconds, so
    the best epoch's variables (the head's, the step, the optimizer's) are kept in memory,
    and both are written when the stage ends or stops and every --save-every seconds; best/
    links the rolling checkpoint when the best epoch is the last. Its checkpoints are whole
    models written without TF's Saver (_write): the graph's variables as fetched, and the
    backbone tensors the plan restores (FeatureTrainer.copied) copied as stored from the
    checkpoint under their model names; the state file is the one TF's Saver would write
    (the --keep newest of this stage, older ones' files removed after it). Its graph is the
    head alone: no .meta, which would be no model to import."""

    def __init__(self, s, stage, run, trainer):
        self.s, self.run_dir, self.sess = s, run, None
        self.deferred = stage.mode == "features"
        self.copied = trainer.copied
        if self.deferred:
            self.variables = tf.global_variables()      # the head's, the step, the slots
            self.kept, self.started = [], time.time()     # (name, time); what the Saver keeps
        else:
            self.saver = tf.train.Saver(max_to_keep=s.keep, save_relative_paths=True)
        self.best, self.saved_step, self.saved_at = None, None, time.monotonic()

    def save(self, step):
        if self.deferred:
            name = self._name(step)
            self._write(self.run_dir.file(name), self._values(self.sess.run(self.variables)))
            self._point_rolling(name)
        else:
            self.saver.save(self.sess, self.run_dir.prefix, global_step=step)
        self.saved_step, self.saved_at = step, time.monotonic()

    def due(self):
        return time.monotonic() - self.saved_at > self.s.save_every

    def epoch_end(self, step, improved):
        if not self.deferred:
            if (improved or self.due()) and self.saved_step != step:
                self.save(step)
            if improved:
                self._link_best(step)
            return
        if improved:
            self.best = step, self.sess.run(self.variables)
        if self.due():
            self.flush(step)

    def flush(self, step):
        """Write what is not on disk yet: the rolling checkpoint of `step`, a deferred best."""
        if self.saved_step != step:
            self.save(step)
        if self.best is None:
            return
        best_step, values = self.best
        self.best = None
        if best_step == step:
            self._link_best(step)
            return
        name = self._name(best_step)
        self._write(os.path.join(self.run_dir.file(BEST), name), self._values(values))
        self._point_best(name)

    def _name(self, step):
        return f"{os.path.basename(self.run_dir.prefix)}-{step}"

    def _values(self, values):
        return {v.op.name: value for v, value in zip(self.variables, values)}

    def _write(self, prefix, values):
        """The V2 checkpoint `prefix` of `values` ({name: array}) and the copied backbone: each
        tensor's stored bytes (crc32c checked) where the checkpoint is a V2 bundle, else its
        decoded value (with the plan's label offset)."""
        with TFV2Writer(prefix) as writer:
            if self.copied:
                with open_checkpoint(self.s.checkpoint) as reader:
                    for r in self.copied:
                        if r.offset or not writer.copy(reader, reader.variable(r.ckpt),
                                                       r.model):
                            writer.add(r.model, r.sliced(reader.read(r.ckpt)))
            for name, value in values.items():
                writer.add(name, value)
            writer.commit()

    def _point_rolling(self, name):
        """The state file pointed at rolling checkpoint `name` as TF's Saver writes it (the
        --keep newest this stage wrote, their times, the stage's start), then the files of
        the one that fell out removed."""
        self.kept = [k for k in self.kept if k[0] != name] + [(name, time.time())]
        dropped, self.kept = self.kept[:-self.s.keep], self.kept[-self.s.keep:]
        write_atomic(self.run_dir.file(STATE_FILE), str(CheckpointState(
            name, [n for n, _ in self.kept], [t for _, t in self.kept], self.started)))
        for old, _ in dropped:
            for file in glob.glob(glob.escape(self.run_dir.file(old)) + ".*"):
                os.remove(file)

    def _link_best(self, step):
        """best/ as the rolling checkpoint of `step`: its files linked in, then _point_best."""
        name = self._name(step)
        best = self.run_dir.file(BEST)
        os.makedirs(best, exist_ok=True)
        for file in os.listdir(self.run_dir.path):
            if file.startswith(name + "."):
                link_or_copy(self.run_dir.file(file), os.path.join(best, file))
        self._point_best(name)

    def _point_best(self, name):
        """best/'s state file pointed at its checkpoint `name` (atomically), then the previous
        best's files removed."""
        best = self.run_dir.file(BEST)
        write_state(best, name, keep_listed=False)
        ours = re.compile(re.escape(os.path.basename(self.run_dir.prefix)) + r"-\d+\.")
        for file in os.listdir(best):
            if ours.match(file) and not file.startswith(name + "."):
                os.remove(os.path.join(best, file))


class Loop:
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
        stale = epochs_since_best(rows)
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
            if stop():          # came while the last epoch was evaluated or saved
                return None, step
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
                if stop() and step % per_epoch:     # in an epoch's last step: it ends first
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
