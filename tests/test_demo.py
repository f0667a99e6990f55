"""tools/demo, reduced (--quick), on a fresh folder: the whole main job runs on real MNIST
images and every step's output is there."""
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.tf


def test_quick_demo_runs_the_main_job_end_to_end(tmp_path):
    env = dict(os.environ, CKPTKIT_DEMO_DATA=str(tmp_path / "data"),
               CKPTKIT_DEMO_RUNS=str(tmp_path / "runs"),
               CKPTKIT_PRETRAIN_DIR=str(tmp_path / "pretrain"),
               CKPTKIT_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(["bash", str(ROOT / "tools" / "demo"), "--quick"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for command in ("ckptkit inspect pretrained:lenet_mnist_0to4", "ckptkit plan",
                    "--mode features", "--compare-scratch", "ckptkit eval",
                    "ckptkit predict"):
        assert f"+ {command}" in done.stderr or command in done.stderr, command
    runs = tmp_path / "runs"
    for folder in ("features", "finetune", "finetune/scratch"):
        rows = [json.loads(line) for line in (runs / folder / "metrics.jsonl").open()]
        assert rows and all(0 <= r["val_accuracy"] <= 1 for r in rows), folder
    assert (runs / "finetune" / "curves.png").is_file()
    table = done.stdout[done.stdout.index("run "):]
    assert "same net from scratch, same budget" in table
    assert len(list((tmp_path / "data" / "target" / "train").glob("*/*.png"))) == 50
