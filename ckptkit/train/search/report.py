"""The results of a search study: one row per trial, the summary `ckptkit search` prints,
trials.csv, and the history and importances plots. report() reads a study dir without
running anything."""
import csv
import io
import math
import os

from ...errors import CkptError
from ...fileio import write_atomic
from ..plots import figure, save
from .storage import (CSV, HISTORY, IMPORTANCES, STUDY_JSON, STUDY_NAME, finished,
                      import_optuna, open_storage, read_json, sqlite_url)


def report(study_dir, storage=None):
    """The summary of a study dir without running anything."""
    path = os.path.join(study_dir, STUDY_JSON)
    if not os.path.isfile(path):
        raise CkptError(f"{study_dir}: not a search study dir (no {STUDY_JSON})")
    saved = read_json(path)
    storage = storage or saved.get("storage") or sqlite_url(study_dir)
    optuna = import_optuna()
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(optuna, storage))
    except KeyError:
        raise CkptError(f"{study_dir}: the study holds no trials yet") from None
    return summary(study_dir, study, stopped=False)


def trial_rows(trials):
    """One dict per trial: number, state, value (objective, or the pruned trial's best
    val_accuracy so far), seconds, params, train_dir, mode, epochs."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        value = t.value if t.value is not None else t.user_attrs.get("val_accuracy")
        state = t.state.name.lower()
        if state == "fail" and t.user_attrs.get("interrupted"):
            state = "interrupted"
        rows.append({"number": t.number, "state": state, "value": value,
                     "seconds": t.user_attrs.get("seconds"), "params": dict(t.params),
                     "train_dir": t.user_attrs.get("train_dir"),
                     "mode": t.user_attrs.get("mode"),
                     "epochs": max(t.intermediate_values, default=0),
                     "retry_of": t.user_attrs.get("retry_of")})
    return rows


def summary(study_dir, study, stopped):
    """What a search returns: the best trial, counts by state, every trial's row."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        b = max(complete, key=lambda t: (t.value, -t.number))
        best = {"number": b.number, "value": b.value, "params": dict(b.params),
                "train_dir": b.user_attrs.get("train_dir")}
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {"study_dir": study_dir, "stopped": stopped, "best": best, "counts": counts,
            "trials": rows}


def write_csv(study_dir, rows):
    """trials.csv of the trial rows; returns its path."""
    path = os.path.join(study_dir, CSV)
    names = sorted({k for r in rows for k in r["params"]})
    text = io.StringIO(newline="")
    out = csv.writer(text)
    out.writerow(["number", "state", "val_accuracy", "seconds", "epochs", "mode"] + names
                 + ["train_dir"])
    for r in rows:
        out.writerow([r["number"], r["state"], "" if r["value"] is None else r["value"],
                      "" if r["seconds"] is None else r["seconds"], r["epochs"],
                      r["mode"] or ""] + [r["params"].get(n, "") for n in names]
                     + [r["train_dir"] or ""])
    write_atomic(path, text.getvalue())
    return path


def plots(study, study_dir, log):
    """history.png always (once a trial finished); importances.png when they can be told."""
    from optuna.trial import TrialState

    done = sorted(finished(study), key=lambda t: t.number)
    written = []
    if not done:
        return written
    fig = figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    values = [t.value if t.value is not None else t.user_attrs.get("val_accuracy")
              for t in done]
    for state, marker, label in ((TrialState.COMPLETE, "o", "complete"),
                                 (TrialState.PRUNED, "x", "pruned")):
        xs = [t.number for t, v in zip(done, values) if t.state == state and v is not None]
        ys = [v for t, v in zip(done, values) if t.state == state and v is not None]
        if xs:
            ax.plot(xs, ys, marker, linestyle="none", label=label)
    best, line = -math.inf, []
    for t in done:
        if t.state == TrialState.COMPLETE and t.value is not None:
            best = max(best, t.value)
        line.append(best if best > -math.inf else math.nan)
    ax.plot([t.number for t in done], line, "-", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("val_accuracy")
    ax.set_title("optimisation history")
    ax.legend(loc="lower right")
    save(fig, os.path.join(study_dir, HISTORY))
    written.append(os.path.join(study_dir, HISTORY))
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    varied = {k for t in complete for k in t.params
              if len({str(u.params.get(k)) for u in complete}) > 1}
    if len(complete) < 3 or not varied:
        log("parameter importances need at least 3 complete trials that differ")
        return written
    try:
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except Exception as e:          # too few trials, or scikit-learn missing
        log(f"parameter importances: not computed ({str(e).splitlines()[0]})")
        return written
    names = list(importances)[::-1]
    fig = figure(6, max(2.0, 1.0 + 0.4 * len(names)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance for val_accuracy (fANOVA)")
    ax.set_title("parameter importances")
    fig.tight_layout()
    save(fig, os.path.join(study_dir, IMPORTANCES))
    written.append(os.path.join(study_dir, IMPORTANCES))
    return written
