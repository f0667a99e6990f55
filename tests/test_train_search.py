"""`ckptkit search` on real images: a LeNet pretrained on digits 0-4 (as in
test_train_finetune.py) searched over on digits 5-9, with `ckptkit eval` as the oracle of the
best trial and the study's SQLite storage as the record of who ran what."""
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import FAST
from helpers.images import digits_folder

pytestmark = pytest.mark.tf



def _config(tmp_path, target, pretrained, params, *, study="study", settings=None, **kwargs):
    from ckptkit.plan import RestoreOptions
    from ckptkit.train.search.space import parse_space
    from ckptkit.train.search.study import SearchSettings
    from ckptkit.train.settings import Settings

    base = dict(net="lenet", data=str(target), train_dir="", checkpoint=str(pretrained),
                restore=RestoreOptions(exclude=("Logits",)), mode="head", epochs=3,
                cache_dir=str(tmp_path / "cache"), **FAST)
    base.update(settings or {})
    return SearchSettings(base=Settings(**base), space=parse_space(params),
                          study_dir=str(tmp_path / study), **kwargs)


def _args(tmp_path, target, pretrained, study, *extra):
    return ["search", "--net", "lenet", "--checkpoint", pretrained, "--data", target,
            "--exclude", "Logits", "--study-dir", tmp_path / study, "--batch-size", "16",
            "--dropout", "0", "--no-augment", "--cache-dir", tmp_path / "cache", *extra]


def _study(study_dir):
    import optuna

    return optuna.load_study(study_name="ckptkit",
                             storage=f"sqlite:///{os.path.join(study_dir, 'study.db')}")


def _epochs(train_dir):
    with open(os.path.join(train_dir, "metrics.jsonl")) as f:
        lines = f.read().splitlines()
    return [json.loads(line)["epoch"] for line in lines]


@pytest.fixture(scope="module")
def six(tmp_path_factory, tf, target, pretrained):
    """A 6-trial TPE search of head-only trials, run through the CLI in this process."""
    from click.testing import CliRunner

    from ckptkit.cli import cli

    tmp = tmp_path_factory.mktemp("six")
    args = _args(tmp, target, pretrained, "study", "--mode", "head", "--epochs", "3",
                 "--trials", "6", "--param", "lr=loguniform:1e-3:1e-1",
                 "--param", "optimizer=choice:sgd,momentum,adam",
                 "--param", "dropout=uniform:0:0.5", "--no-prune")
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="ckptkit")
    return tmp, result


def test_a_six_trial_search_finishes_and_eval_reproduces_the_best(six):
    from optuna.trial import TrialState

    from ckptkit.train.evaluate import evaluate

    tmp, result = six
    assert result.exit_code == 0, result.output
    study = _study(tmp / "study")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    assert all(t.user_attrs["mode"] == "features" for t in trials)
    # one backbone pass for the whole study: the other five trials read the cache
    assert result.stderr.count("cached the backbone's features") == 1
    best = study.best_trial
    assert best.value == max(t.value for t in trials)
    assert evaluate(best.user_attrs["train_dir"])["accuracy"] == pytest.approx(best.value,
                                                                                abs=1e-9)
    out = result.stdout
    assert out.splitlines()[0].split() == ["trial", "state", "val_acc", "time", "params"]
    assert f"best trial {best.number}: val_accuracy {best.value:.4f}" in out
    for name in ("trials.csv", "history.png", "importances.png", "study.json"):
        assert (tmp / "study" / name).is_file(), name
    lines = (tmp / "study" / "trials.csv").read_text().splitlines()
    assert lines[0].startswith("number,state,val_accuracy,seconds,epochs,mode,dropout,lr,")
    assert len(lines) == 7
    for t in trials:
        assert _epochs(t.user_attrs["train_dir"]) == [1, 2, 3]


def test_only_the_three_best_trials_keep_their_checkpoints(six, ckptkit):
    tmp, _ = six
    ranked = sorted(_study(tmp / "study").get_trials(), key=lambda t: (-t.value, t.number))
    for i, t in enumerate(ranked):
        run = t.user_attrs["train_dir"]
        files = set(os.listdir(run))
        assert {"run.json", "metrics.jsonl", "plan.json", "labels.txt"} <= files
        assert ("checkpoint" in files and "best" in files) == (i < 3), (i, sorted(files))
        assert not any(f.startswith("model.ckpt") for f in files) or i < 3
    # eval on a trial whose checkpoints went says why
    dropped = ranked[3]
    code, out, err = ckptkit("eval", "--train-dir", dropped.user_attrs["train_dir"])
    assert code == 2 and out == ""
    assert err == (f"ckptkit: error: {dropped.user_attrs['train_dir']}: no checkpoint in this "
                   f"train dir (search trial {dropped.number} is not among the 3 best complete "
                   "trials, and --keep-models 3 keeps the checkpoints of the 3 best complete "
                   "trials only; use one of those (trials.csv), or search with --keep-models "
                   "all)\n")


def test_report_prints_the_table_without_running(six, ckptkit):
    tmp, _ = six
    before = (tmp / "study" / "study.db").stat().st_mtime_ns
    code, out, err = ckptkit("search", "--report", tmp / "study")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["trial", "state", "val_accuracy", "epochs", "time", "lr",
                                "optimizer", "dropout"]
    assert len([line for line in lines[1:7] if " complete " in line]) == 6
    assert "6 complete" in out and "best trial" in out
    assert (tmp / "study" / "study.db").stat().st_mtime_ns == before
    code, out, err = ckptkit("search", "--report", tmp / "study", "--json")
    summary = json.loads(out)
    assert summary["counts"] == {"complete": 6} and len(summary["trials"]) == 6


@pytest.mark.parametrize("change, message", [
    (dict(net="lenet", data="other"), r"holds a study of --data .*target.*, not .*other"),
    (dict(params=["lr=loguniform:1e-3:1e-2"]),
     r"holds a study of another space \(dropout=uniform:0.0:0.5 lr="),
    (dict(settings=dict(epochs=4)), r"holds a study with other --epochs; use a new"),
])
def test_a_study_dir_of_other_data_net_or_space_is_refused(six, target, pretrained, change,
                                                           message):
    from ckptkit.errors import CkptError
    from ckptkit.train.search.study import search

    tmp, _ = six
    params = change.pop("params", ["lr=loguniform:1e-3:1e-1",
                                   "optimizer=choice:sgd,momentum,adam",
                                   "dropout=uniform:0:0.5"])
    data = tmp / change.pop("data") if "data" in change else target
    if data != target:
        digits_folder(data, [1, 2], 5)
    cfg = _config(tmp, data, pretrained, params, trials=7, prune=False,
                  settings=change.get("settings"))
    with pytest.raises(CkptError, match=message):
        search(cfg)
    assert len(_study(tmp / "study").get_trials()) == 6


def test_pruning_stops_an_absurd_learning_rate_early(tf, tmp_path, target, pretrained):
    from ckptkit.train.search.study import search

    """lr 1e4 blows up a head with a hidden ReLU layer (a linear head would not care: its
    argmax ignores the weights' scale)."""
    cfg = _config(tmp_path, target, pretrained, ["lr=choice:0.1,10000"], trials=4,
                  settings=dict(epochs=4, optimizer="sgd", hidden=(32,)), sampler="random",
                  prune_startup=2, keep_models=None)
    summary = search(cfg)
    pruned = [r for r in summary["trials"] if r["state"] == "pruned"]
    assert pruned, summary["trials"]
    for row in pruned:
        assert row["params"]["lr"] == "10000"
        assert _epochs(row["train_dir"]) == list(range(1, row["epochs"] + 1))
        assert row["epochs"] < 4
        # a pruned features-mode trial still writes its deferred checkpoints
        assert os.path.isfile(os.path.join(row["train_dir"], "checkpoint"))
        assert os.path.isdir(os.path.join(row["train_dir"], "best"))
    assert summary["best"]["params"]["lr"] == "0.1"
    # the same study with --keep-models 1: no trial to run, the pruned lose their checkpoints
    # and eval on one says why
    from ckptkit.errors import CkptError
    from ckptkit.train.evaluate import evaluate

    search(dataclasses.replace(cfg, keep_models=1))
    with pytest.raises(CkptError, match=rf"no checkpoint in this train dir \(search trial "
                                        rf"{pruned[0]['number']} was pruned, and --keep-models 1 "
                                        r"keeps the checkpoints of the 1 best complete"):
        evaluate(pruned[0]["train_dir"])


def test_sampled_restore_choices_go_into_the_trial_s_restore_options(tf, tmp_path, target,
                                                                     pretrained):
    """train, lr-mult and layer-decay are restore options: a sample lands in
    Settings.restore, and --train naming only the model's head scope makes the trial a
    cached-features one (where one layer trains: no decay)."""
    from ckptkit.train.search.study import search

    cfg = _config(tmp_path, target, pretrained, ["train=choice:Logits",
                                                 "lr_mult=choice:Logits=10",
                                                 "layer-decay=choice:0.5"],
                  trials=1, prune=False, settings=dict(mode="finetune", epochs=1))
    row, = search(cfg)["trials"]
    assert (row["state"], row["mode"]) == ("complete", "features")
    with open(os.path.join(row["train_dir"], "run.json")) as f:
        restore = json.load(f)["settings"]["restore"]
    assert (restore["exclude"], restore["lr_mults"]) == (["Logits"], ["Logits=10"])
    assert restore["layer_decay"] == 1.0
    with open(os.path.join(row["train_dir"], "plan.json")) as f:
        assert json.load(f)["lr_mults"] == {"Logits/weights": 10.0, "Logits/biases": 10.0}


def test_two_jobs_never_run_the_same_trial(tf, tmp_path, target, pretrained):
    from ckptkit.train.search.study import search

    cfg = _config(tmp_path, target, pretrained, ["lr=loguniform:1e-3:1e-1"], trials=3,
                  jobs=2, prune=False, settings=dict(epochs=1))
    summary = search(cfg)
    study = _study(tmp_path / "study")
    trials = study.get_trials()
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert 3 <= len(finished) <= 4 and len(trials) == len(finished)
    dirs = [t.user_attrs["train_dir"] for t in trials]
    assert len(set(dirs)) == len(dirs)
    # the workers' samplers are seeded apart: no worker repeats another's samples
    assert len({t.params["lr"] for t in trials}) == len(trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2 and str(os.getpid()) not in {w.rpartition(":")[2] for w in workers}
    for d in dirs:
        assert _epochs(d) == [1]                # no train dir got a second run's epochs
        with open(os.path.join(d, "run.json")) as f:
            run = json.load(f)
        assert run["settings"]["train_dir"] == d
    assert summary["counts"] == {"complete": len(finished)}


def test_a_killed_search_resumes_without_losing_or_repeating_a_trial(tmp_path, target,
                                                                      pretrained):
    """SIGKILL in the middle of trial 1, after its first epoch's checkpoint; the same command
    fails it, retries it in its own train dir from that checkpoint, and finishes the study.
    (Trials on images: cached-features trials checkpoint at their end, they redo seconds.)"""
    args = [sys.executable, "-c", "from ckptkit.cli import main; main()"] + [
        str(a) for a in _args(tmp_path, target, pretrained, "study", "--mode", "head",
                              "--epochs", "10", "--batch-size", "4", "--trials", "2",
                              "--param", "lr=loguniform:1e-4:1e-2", "--no-prune",
                              "--optimizer", "adam", "--no-feature-cache")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mid = tmp_path / "study" / "trials" / "0001" / "checkpoint"
    deadline = time.time() + 120
    while not mid.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    study = _study(tmp_path / "study")
    done = {t.number: (t.value, t.params) for t in study.get_trials()
            if t.state.name == "COMPLETE"}
    assert list(done) == [0]
    assert study.get_trials()[1].state.name == "RUNNING"
    first = (tmp_path / "study/trials/0000/metrics.jsonl").read_text()
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert "trial 1 was interrupted" in again.stderr
    resumed = re.search(r"resuming from .*trials/0001/model\.ckpt-(\d+)$", again.stderr, re.M)
    assert resumed and 0 < int(resumed[1]) < 10 * 38, again.stderr      # mid-trial
    trials = _study(tmp_path / "study").get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].state.name == "FAIL"
    assert (trials[0].value, trials[0].params) == done[0]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert len(retry) == 1 and retry[0].params == trials[1].params
    assert retry[0].user_attrs["train_dir"] == trials[1].user_attrs["train_dir"]
    assert (tmp_path / "study/trials/0000/metrics.jsonl").read_text() == first
    for t in trials:
        if t.state.name == "COMPLETE":
            assert _epochs(t.user_attrs["train_dir"]) == list(range(1, 11))


@pytest.mark.parametrize("extra, message", [
    (["--data", "nowhere"], r"no data at nowhere"),
    (["--exclude", "Logitz"], r"Logitz"),
    (["--sampler", "grid"], r"--sampler grid needs choice: parameters; lr are ranges"),
    (["--mode", "two-stage"], r"--mode two-stage needs --train-from"),
])
def test_bad_fixed_settings_are_one_line_errors_and_no_search(ckptkit, tmp_path, target,
                                                              pretrained, extra, message):

    code, out, err = ckptkit(*_args(tmp_path, target, pretrained, "study", "--trials", "3",
                                    "--epochs", "1", "--param", "lr=loguniform:1e-3:1e-1",
                                    *extra))
    assert code == 2, err
    lines = err.splitlines()
    assert re.search(message, lines[-1]) and lines[-1].startswith("ckptkit: error: ")
    if (tmp_path / "study" / "study.db").exists():     # a plan error: the first trial's
        assert [t.state.name for t in _study(tmp_path / "study").get_trials()] == ["FAIL"]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_processes_joining_a_server_at_once_draw_apart(tmp_path, monkeypatch, sampler):
    """Two processes (machines a and b) open the same --storage study before either has a
    trial, as machines started together do: their samplers are seeded apart, so their first
    samples differ; local studies stay reproducible from --seed."""
    import optuna
    from ckptkit.train.search import study

    def joined(machine, **kwargs):
        monkeypatch.setattr(study, "_worker_id", lambda: f"{machine}:4242")
        return study._study(_config(tmp_path, "data", "ckpt", ["lr=loguniform:1e-3:1e-1"],
                                    sampler=sampler, **kwargs), optuna)
    lr = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    url = f"sqlite:///{tmp_path / 'server.db'}"
    a, b = joined("a", storage=url), joined("b", storage=url)     # neither has a trial yet
    assert a.ask(lr).params != b.ask(lr).params
    for name in ("local_a", "local_b"):
        (tmp_path / name).mkdir()
    a, b = joined("a", study="local_a"), joined("b", study="local_b")
    assert a.ask(lr).params == b.ask(lr).params


def test_two_machines_share_one_postgresql_study(tmp_path, target, pretrained):
    """Optuna's distributed mode as documented: two processes, each standing for a machine
    with its own --study-dir, on one --storage postgresql:// URL of a real PostgreSQL server
    (pgserver's embedded one, in the dev extra)."""
    pgserver = pytest.importorskip("pgserver", reason="pgserver (dev extra) not installed")
    pytest.importorskip("psycopg", reason="psycopg (dev extra) not installed")
    import optuna

    # pgserver runs postgres as another user, who must reach the data folder: not under
    # pytest's per-user temp root, whose 0700 a concurrent pytest run may restore
    pg = tempfile.mkdtemp(prefix="ckptkit-pg-")
    server = pgserver.get_server(pg, cleanup_mode="stop")
    try:
        url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)

        def machine(name):
            return subprocess.Popen(
                [sys.executable, "-c", "from ckptkit.cli import main; main()"] + [
                    str(a) for a in _args(tmp_path, target, pretrained, name, "--mode", "head",
                                          "--epochs", "4", "--trials", "6", "--no-prune",
                                          "--no-feature-cache",     # trials of seconds
                                          "--param", "lr=loguniform:1e-3:1e-1",
                                          "--storage", url)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # as Optuna's docs run it: the study made first, then the workers started together
        # (a second worker started once the first was training could find every trial
        # taken: a start with TF's import takes longer than a trial of 2 epochs here)
        optuna.create_study(study_name="ckptkit", storage=url, direction="maximize")
        first, second = machine("a"), machine("b")
        for proc in (first, second):
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        trials = optuna.load_study(study_name="ckptkit", storage=url).get_trials()
        assert 6 <= len(trials) <= 7 and {t.state.name for t in trials} == {"COMPLETE"}
        dirs = [t.user_attrs["train_dir"] for t in trials]
        assert len(set(dirs)) == len(dirs)
        machines = {os.path.basename(os.path.dirname(os.path.dirname(d))) for d in dirs}
        assert machines == {"a", "b"}, dirs           # both took trials of the one study
        assert len({t.user_attrs["worker"] for t in trials}) == 2
        assert len({t.params["lr"] for t in trials}) == len(trials)
        for d in dirs:
            assert _epochs(d) == [1, 2, 3, 4]
    finally:
        server.cleanup()
        shutil.rmtree(pg, ignore_errors=True)
