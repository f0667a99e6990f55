"""A study dir's files and its Optuna storage: what running a study (study.py) and reporting
on one (report.py) both open. Optuna is imported on first use, never by importing this."""
import inspect
import json
import os

from ...errors import CkptError

STUDY_DB, STUDY_JSON, TRIALS, CSV = "study.db", "study.json", "trials", "trials.csv"
HISTORY, IMPORTANCES = "history.png", "importances.png"
STUDY_NAME = "ckptkit"
HEARTBEAT, GRACE = 20, 120          # seconds: a worker's heartbeat, and when it is stale


def import_optuna():
    """Optuna, quiet; a one-line error when it is not installed."""
    try:
        import optuna
    except ImportError:
        raise CkptError("ckptkit search needs Optuna: pip install 'ckptkit[search]'") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def sqlite_url(study_dir):
    """The default storage: SQLite in the study dir."""
    return "sqlite:///" + os.path.abspath(os.path.join(study_dir, STUDY_DB))


def open_storage(optuna, url, on_stale=None):
    """The RDBStorage at `url`, with heartbeats; on_stale(study, trial) is called for a trial
    whose worker's heartbeat went stale (Optuna renamed that argument once)."""
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    stale = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in \
        inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback"
    return optuna.storages.RDBStorage(
        url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT, grace_period=GRACE,
        **{stale: on_stale})


def read_json(path):
    """A JSON object file (study.json) as a dict; a one-line error otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except ValueError as e:
        raise CkptError(f"{path}: not valid JSON ({e})") from None


def finished(study):
    """The study's complete and pruned trials: what --trials counts."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
