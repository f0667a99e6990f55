"""A train dir: what `finetune` leaves behind and `eval`, `predict` and `export` read.

    run.json        the classifier (Model), every setting (data paths absolute: settings.py),
                    versions, the data's fingerprint
    labels.txt      class names, one `index:name` per line (tf-slim's labels file format)
    plan.json       the restore plan applied at the start
    metrics.jsonl   one JSON object per epoch
    model.ckpt-N    TF V2 checkpoints with a `checkpoint` state file; best/ holds the best one
    curves.png      accuracy and loss curves (a line where two-stage's stage 2 starts)
    confusion.png   the confusion matrix of the latest `ckptkit eval` on the run's own
                    validation split; confusion-NAME.png: on other data (eval --data NAME)
    events.out.tfevents.*   TensorBoard summaries
    scratch/        --compare-scratch: the same model trained from random initialisation,
                    a train dir of its own; compare.png draws both runs on one figure
    dropped.txt     why the checkpoints are gone (a search keeps its best trials' only)
    onnx/           the run's ONNX export (export --format onnx): model.onnx, export.json,
                    labels.txt; predict and eval run on it without TensorFlow

No TensorFlow here: Model.build (nets.py) loads it only when a graph is built.
"""
import contextlib
import json
import os
import shutil

from ..errors import CkptError, NotFound
from ..fileio import TEMP_MARK, write_atomic
from .nets import Model

RUN, LABELS, PLAN, METRICS, CURVES, CONFUSION, BEST, SCRATCH, COMPARE, DROPPED = (
    "run.json", "labels.txt", "plan.json", "metrics.jsonl", "curves.png", "confusion.png",
    "best", "scratch", "compare.png", "dropped.txt")
RUN_ONNX = "onnx"
# what finetune and eval write into a train dir, by name and by prefix: all --restart removes
_OURS = {RUN, LABELS, PLAN, METRICS, CURVES, CONFUSION, COMPARE, DROPPED, "checkpoint"}
_OURS_PREFIXES = ("model.ckpt", "events.out.tfevents.", "confusion-")


class RunDir:
    """Paths and small files of one train dir."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def prefix(self):
        """The prefix new checkpoints are saved under."""
        return self.file("model.ckpt")

    def latest_checkpoint(self, best=False):
        """Prefix of the newest checkpoint (of best/ when `best`), or None."""
        from ..paths import resolve

        folder = self.file(BEST) if best else self.path
        if not os.path.isfile(os.path.join(folder, "checkpoint")):
            return None
        try:
            return resolve(folder).path
        except CkptError:
            return None

    def latest_step(self):
        """global_step of the newest checkpoint (0 when there is none)."""
        from ..paths import open_checkpoint

        latest = self.latest_checkpoint()
        if latest is None:
            return 0
        with open_checkpoint(latest) as reader:
            return int(reader.read("global_step")) if "global_step" in reader else 0

    def drop_checkpoints(self, reason):
        """Delete the checkpoints (rolling and best/), keeping the record of the run: run.json,
        metrics, plan, labels, curves, and `reason` in dropped.txt, which `eval`, `predict`
        and `export` give for the missing checkpoint. The state file goes first, so no
        reader is pointed at a deleted checkpoint."""
        write_atomic(self.file(DROPPED), reason + "\n")
        self._remove(lambda name: name == "checkpoint" or name.startswith("model.ckpt"))

    def dropped(self):
        """Why the checkpoints were dropped (drop_checkpoints), or None."""
        try:
            with open(self.file(DROPPED), encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def discard(self):
        """Remove the run (finetune --restart): every file ckptkit wrote here, the scratch
        twin's included; files of others stay, and so do the folders holding them. A folder
        without run.json is no train dir of ckptkit's: nothing is removed. Whether there
        was a run to remove."""
        if not os.path.isfile(self.file(RUN)):
            return False
        if os.path.isfile(os.path.join(self.file(SCRATCH), RUN)):
            RunDir(self.file(SCRATCH)).discard()
        self._remove(lambda name: name in _OURS or name.startswith(_OURS_PREFIXES) or
                     TEMP_MARK in name)
        with contextlib.suppress(OSError):
            os.rmdir(self.file(SCRATCH))
        shutil.rmtree(self.file(RUN_ONNX), ignore_errors=True)
        return True

    def _remove(self, ours):
        """Delete the files `ours(name)` picks here and in best/ (the state file first), and
        best/ when that leaves it empty."""
        for folder in (self.path, self.file(BEST)):
            if not os.path.isdir(folder):
                continue
            for name in sorted(os.listdir(folder), key=lambda n: n != "checkpoint"):
                path = os.path.join(folder, name)
                if ours(name) and not os.path.isdir(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.file(BEST))

    def read_run(self):
        """run.json as a dict; NotFound when this is not a train dir."""
        try:
            with open(self.file(RUN), encoding="utf-8") as f:
                run = json.load(f)
            if not isinstance(run, dict):
                raise ValueError("not a JSON object")
            return run
        except FileNotFoundError:
            raise NotFound(f"{self.path}: not a ckptkit train dir (no {RUN}; make one with "
                           f"`ckptkit finetune --net NET --data DATA --train-dir {self.path}`)"
                           ) from None
        except ValueError as e:
            raise CkptError(f"{self.file(RUN)}: not valid JSON ({e})") from None

    def model(self):
        """The Model of this run."""
        run = self.read_run()
        if not isinstance(run.get("model"), dict):
            raise CkptError(f"{self.file(RUN)}: no model entry")
        return Model.from_json(run["model"])

    def labels(self):
        """Class names in label order, from labels.txt."""
        try:
            with open(self.file(LABELS), encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f if line.strip()]
        except FileNotFoundError:
            raise NotFound(f"{self.path}: no {LABELS}") from None
        names = {}
        for line in lines:
            index, sep, name = line.partition(":")
            if not sep or not index.strip().isdigit():
                raise CkptError(f"{self.file(LABELS)}: expected `index:name` lines, got "
                                f"{line!r}")
            names[int(index)] = name
        if sorted(names) != list(range(len(names))):
            raise CkptError(f"{self.file(LABELS)}: indices must run 0..{len(names) - 1}")
        return [names[i] for i in range(len(names))]

    def write_labels(self, classes):
        write_atomic(self.file(LABELS), "".join(f"{i}:{c}\n" for i, c in enumerate(classes)))

    def write_json(self, name, data):
        write_atomic(self.file(name), json.dumps(data, indent=2, sort_keys=True) + "\n")

    def metrics(self):
        """The rows of metrics.jsonl (a torn last line, from a kill, is ignored)."""
        rows = []
        try:
            with open(self.file(METRICS), encoding="utf-8") as f:
                for line in f:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        break
        except FileNotFoundError:
            pass
        return rows

    def keep_metrics_until(self, step):
        """Drop metrics rows past `step`: epochs a resumed run trains again (a kill between
        writing an epoch's row and saving its checkpoint), or all of a run that never saved."""
        rows = self.metrics()
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) != len(rows):
            write_atomic(self.file(METRICS), "".join(json.dumps(r, sort_keys=True) + "\n"
                                                     for r in kept))

    def append_metrics(self, row):
        with open(self.file(METRICS), "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def epochs_since_best(rows):
    """Epochs of metrics `rows` since the best val_accuracy: what --patience counts."""
    best, stale = None, 0
    for row in rows:
        acc = row.get("val_accuracy")
        if acc is not None and (best is None or acc > best):
            best, stale = acc, 0
        else:
            stale += 1
    return stale
