"""One finetune stage (train_stage): its graph and session, the epoch loop (Loop) and its
checkpoints (Checkpoints): metrics and summaries per epoch, the rolling checkpoints a resume
starts from, best/, early stopping, and Ctrl-C / SIGTERM, which let the step in flight
finish, save a checkpoint and return stopped (the same command resumes).
"""
import contextlib
import math
import os
import re
import signal
import time

from ..fileio import link_or_copy, write_state
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


class Checkpoints:
    """The checkpoints of one stage: the rolling ones (what a resume starts from) and best/.

    Image modes write the rolling checkpoint at the end of an epoch that is the best so far
    (best/ is then its files hard-linked, copied where links fail: not a second save) or
    that ends --save-every seconds or more after the last save; inside an epoch once those
    seconds pass; and when the stage ends or stops (a signal, early stopping, an on_epoch hook
    raising). A killed run loses at most --save-every seconds: a resume drops the metrics of
    the epochs after its checkpoint and trains them again, in the same order.
    Features mode saves no epoch's end: an epoch on cached features takes milliseconds while
    every save rewrites the whole backbone, so the best epoch's changing variables (all but
    the declared backbone) are kept in memory, and both are written when the stage ends or
    stops and every --save-every seconds."""

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
            if (improved or self.due()) and self.saved_step != step:
                self.save(step)
            if improved:
                self._link_best(step)
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

    def _link_best(self, step):
        """best/ as the rolling checkpoint of `step`: its files linked in, the state file
        pointed at them (atomically), then the previous best's files removed."""
        name = f"{os.path.basename(self.run_dir.prefix)}-{step}"
        best = self.run_dir.file(BEST)
        os.makedirs(best, exist_ok=True)
        ours = re.compile(re.escape(os.path.basename(self.run_dir.prefix)) + r"-\d+\.")
        for file in os.listdir(self.run_dir.path):
            if file.startswith(name + "."):
                link_or_copy(self.run_dir.file(file), os.path.join(best, file))
        write_state(best, name, keep_listed=False)
        for file in os.listdir(best):
            if ours.match(file) and not file.startswith(name + "."):
                os.remove(os.path.join(best, file))

    def _load(self, values):
        for var, value in zip(self.changing, values):
            var.load(value, self.sess)


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
