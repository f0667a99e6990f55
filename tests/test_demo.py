"""tools/demo, reduced (--quick), on a fresh folder: the whole main job runs on real MNIST
images and every step's output is there; its arguments are checked before anything runs, and
it never deletes a folder it did not make."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent



def _demo(*args, env=None):
    return subprocess.run(["bash", str(ROOT / "tools" / "demo"), *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, code, said", [
    (["--help"], 0, "usage: tools/demo [--quick]\nRuns the main job end to end"),
    (["-h"], 0, "usage: tools/demo [--quick]\n"),
    (["--quik"], 2, "tools/demo: unknown argument '--quik'\nusage: tools/demo [--quick]\n"),
    (["--quick", "extra"], 2, "tools/demo: unknown argument 'extra'\n"),
])
def test_arguments_are_checked_before_anything_runs(tmp_path, args, code, said):
    env = dict(os.environ, CKPTKIT_DEMO_RUNS=str(tmp_path / "runs"),
               CKPTKIT_DEMO_DATA=str(tmp_path / "data"))
    done = _demo(*args, env=env)
    assert (done.returncode, done.stdout) == (code, "")
    assert done.stderr.startswith(said)
    assert list(tmp_path.iterdir()) == []


def test_a_runs_folder_the_demo_did_not_make_is_never_deleted(tmp_path):
    runs = tmp_path / "mine"
    runs.mkdir()
    (runs / "thesis.tex").write_text("years of work")
    env = dict(os.environ, CKPTKIT_DEMO_RUNS=str(runs), CKPTKIT_DEMO_DATA=str(tmp_path / "d"))
    done = _demo("--quick", env=env)
    assert done.returncode == 2
    assert done.stderr == (f"tools/demo: {runs} exists and was not made by the demo (no "
                           ".ckptkit-demo-runs in it); move it away or set CKPTKIT_DEMO_RUNS "
                           "to another folder\n")
    assert (runs / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "d").exists()


@pytest.mark.tf
def test_quick_demo_runs_the_main_job_end_to_end(quick_demo):
    done = quick_demo.done          # conftest runs it once, for tests/test_readme.py too
    assert done.returncode == 0, done.stderr[-3000:]
    for command in ("ckptkit inspect pretrained:lenet_mnist_0to4", "ckptkit plan",
                    "--mode features", "--compare-scratch", "ckptkit eval",
                    "ckptkit predict"):
        assert f"+ {command}" in done.stderr or command in done.stderr, command
    runs = quick_demo.runs
    for folder in ("features", "finetune", "finetune/scratch"):
        rows = [json.loads(line) for line in (runs / folder / "metrics.jsonl").open()]
        assert rows and all(0 <= r["val_accuracy"] <= 1 for r in rows), folder
    assert (runs / "finetune" / "curves.png").is_file()
    assert (runs / ".ckptkit-demo-runs").is_file()     # the mark that lets a rerun replace it
    table = done.stdout[done.stdout.index("run "):]
    assert "same net from scratch, same budget" in table
    assert len(list((quick_demo.data / "target" / "train").glob("*/*.png"))) == 50
