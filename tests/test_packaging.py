"""The wheel is the product: built from this tree, installed into a fresh virtual environment
without TensorFlow, it runs from any working directory and ships the pretrained registry as
package data (its source is pretrain/registry.json)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.bundle_writer import write_bundle

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600,
                          **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The bin/ folder of a fresh venv holding only the wheel and its declared dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "dist",
                 ROOT)
    assert built.returncode == 0, built.stderr
    wheels = list((root / "dist").glob("ckptkit-*.whl"))
    assert len(wheels) == 1
    made = _run(sys.executable, "-m", "venv", root / "venv")
    assert made.returncode == 0, made.stderr
    bin_dir = root / "venv" / "bin"
    done = _run(bin_dir / "python", "-m", "pip", "install", "-q", wheels[0])
    assert done.returncode == 0, done.stderr
    return bin_dir


def test_the_wheel_ships_the_registry(installed, tmp_path):
    files = _run(installed / "python", "-c",
                 "import ckptkit.zoo.pretrained as p; print(p.registry_path())", cwd=tmp_path)
    path = Path(files.stdout.strip())
    assert path.is_file() and not path.is_symlink() and "site-packages" in path.parts
    assert path.read_bytes() == (ROOT / "pretrain" / "registry.json").read_bytes()


def test_the_installed_command_works_anywhere_without_tensorflow(installed, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CKPTKIT_", "PYTHONPATH", "VIRTUAL_ENV"))}
    prefix = write_bundle(tmp_path / "model.ckpt",
                          {"net/w": np.ones((2, 3), np.float32)}).prefix
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ckptkit = installed / "ckptkit"

    version = _run(ckptkit, "--version", cwd=elsewhere, env=env)
    assert version.returncode == 0 and version.stdout.startswith("ckptkit, version ")
    listed = _run(ckptkit, "pretrained", "list", "--json", cwd=elsewhere, env=env)
    assert listed.returncode == 0, listed.stderr
    names = [item["name"] for item in json.loads(listed.stdout)]
    shipped = json.loads((ROOT / "pretrain" / "registry.json").read_text())["entries"]
    assert names == [entry["name"] for entry in shipped]
    inspected = _run(ckptkit, "inspect", prefix, "--json", cwd=elsewhere, env=env)
    assert inspected.returncode == 0, inspected.stderr
    assert [v["name"] for v in json.loads(inspected.stdout)["variables"]] == ["net/w"]
    no_tf = _run(installed / "python", "-c", "import tensorflow", cwd=elsewhere, env=env)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr


def test_an_added_checkpoint_resolves_by_name_from_anywhere(installed, tmp_path):
    """`pretrained add` in the wheel install: the files go to the per-user folder
    ($CKPTKIT_HOME here) and `pretrained:NAME` resolves from any working directory."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CKPTKIT_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["CKPTKIT_HOME"] = str(tmp_path / "home")
    prefix = write_bundle(tmp_path / "run" / "model.ckpt",
                          {"net/w": np.ones((2, 3), np.float32)}).prefix
    added = _run(installed / "ckptkit", "pretrained", "add", "mine", prefix, "--net", "lenet",
                 cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    for cwd in (tmp_path / "home", tmp_path / "run", Path("/")):
        inspected = _run(installed / "ckptkit", "inspect", "pretrained:mine", "--json",
                         cwd=cwd, env=env)
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["path"] == str(
            tmp_path / "home" / "pretrained" / "mine" / "model.ckpt")

