"""Shared fixtures: the real-checkpoint corpus and its oracle, a CLI runner, and the quick
demo's run (once per session)."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("CKPTKIT_CORPUS", ROOT.parent / "shared" / "corpus"))
CORPUS_MISSING = f"real-checkpoint corpus not found at {CORPUS} (set CKPTKIT_CORPUS)"


def corpus_cases():
    """Case names of the corpus, or [] when it is absent (tests then skip with a reason)."""
    if not (CORPUS / "oracle.json").is_file():
        return []
    return sorted(json.loads((CORPUS / "oracle.json").read_text()))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The suite's caches (the zoo's variable lists, features) in a folder of its own, for
    every test and the processes they start: never the user's ~/.cache/ckptkit."""
    saved = os.environ.get("CKPTKIT_CACHE")
    os.environ["CKPTKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("CKPTKIT_CACHE")
    else:
        os.environ["CKPTKIT_CACHE"] = saved


@pytest.fixture(scope="session")
def oracle():
    if not (CORPUS / "oracle.json").is_file():
        pytest.skip(CORPUS_MISSING)
    return json.loads((CORPUS / "oracle.json").read_text())


@pytest.fixture(scope="session")
def corpus():
    if not CORPUS.is_dir():
        pytest.skip(CORPUS_MISSING)
    return CORPUS


@pytest.fixture(scope="session")
def tf():
    """tf.compat.v1 in graph mode, through ckptkit's one TensorFlow import (tests using it
    are marked tf)."""
    from ckptkit.tfcompat import tf

    return tf


@pytest.fixture
def runner():
    """Invoke the click CLI in-process: runner.invoke(cli, [...])."""
    return CliRunner()


@pytest.fixture
def ckptkit(runner):
    """ckptkit(*args) -> (exit code, stdout, stderr); paths may be Path objects."""
    from ckptkit.cli import cli

    def invoke(*args):
        result = runner.invoke(cli, [str(a) for a in args], prog_name="ckptkit")
        assert "Traceback" not in result.output
        return result.exit_code, result.stdout, result.stderr
    return invoke


@pytest.fixture(scope="session")
def without(tmp_path_factory):
    """without(modules, *args) -> CompletedProcess of `ckptkit ARGS` in a process that cannot
    import any of `modules` (a module of that name raising ModuleNotFoundError first on its
    path, as an absent one would)."""
    def run(modules, *args):
        folder = tmp_path_factory.mktemp("without")
        for name in modules:
            (folder / f"{name}.py").write_text(
                f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        return subprocess.run([sys.executable, "-c", "from ckptkit.cli import main; main()",
                               *map(str, args)], capture_output=True, text=True, env=env,
                              timeout=120)
    return run


@pytest.fixture(scope="session")
def no_tf(without):
    """run(*args): `ckptkit ARGS` where importing TensorFlow fails (see without)."""
    return lambda *args: without(("tensorflow",), *args)

# --- training: real digit images and a LeNet pretrained on them ------------------------------

FAST = dict(batch_size=16, dropout=0.0, optimizer="adam", lr=1e-3, augment=False)


@pytest.fixture(scope="session")
def target(tmp_path_factory):
    """Digits 5-9 (scikit-learn's): 30 training and 20 validation images per class, as
    train/ and val/ image folders."""
    from helpers.images import digits_folder

    root = tmp_path_factory.mktemp("target")
    digits_folder(root / "train", range(5, 10), 30)
    digits_folder(root / "val", range(5, 10), 20, offset=30)
    return root


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, tf):
    """The train dir of a LeNet trained from scratch on digits 0-4 (60 per class, 10% held
    out), 3 epochs: the pretrained checkpoint the fine-tuning tests start from."""
    from helpers.images import digits_folder

    from ckptkit.train.finetune import finetune
    from ckptkit.train.settings import Settings

    root = tmp_path_factory.mktemp("source")
    data = digits_folder(root / "digits", range(5), 60)
    finetune(Settings(net="lenet", data=str(data), train_dir=str(root / "run"), epochs=3,
                      **FAST))
    return root / "run"


# --- the demo: tools/demo --quick, run once for tests/test_demo.py and tests/test_readme.py ---

@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """`tools/demo --quick` run once, in a fresh folder: .done (its CompletedProcess, text),
    and its folders .data (demo-data), .runs (demo-runs), .pretrain (pretrain) and .cache.
    Tests using it need TensorFlow (mark them tf) and check .done.returncode themselves."""
    root = tmp_path_factory.mktemp("demo")
    demo = SimpleNamespace(data=root / "data", runs=root / "runs", pretrain=root / "pretrain",
                           cache=root / "cache")
    env = dict(os.environ, CKPTKIT_DEMO_DATA=str(demo.data), CKPTKIT_DEMO_RUNS=str(demo.runs),
               CKPTKIT_PRETRAIN_DIR=str(demo.pretrain), CKPTKIT_CACHE=str(demo.cache))
    demo.done = subprocess.run(["bash", str(ROOT / "tools" / "demo"), "--quick"], env=env,
                               capture_output=True, text=True, timeout=600)
    return demo


# --- porting: real photos, random-init checkpoints --------------------------------------------

@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Six PNG crops (400x400 and 380x360) of the real photos installed packages ship."""
    import matplotlib
    import numpy as np
    import sklearn.datasets
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    sources = [Path(sklearn.datasets.__file__).parent / "images" / "china.jpg",
               Path(sklearn.datasets.__file__).parent / "images" / "flower.jpg",
               Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    for i, source in enumerate(sources):
        photo = np.asarray(Image.open(source).convert("RGB"))
        Image.fromarray(photo[:400, :400]).save(folder / f"photo{i}.png")
        Image.fromarray(photo[-380:, -360:]).save(folder / f"crop{i}.png")
    return folder


@pytest.fixture(scope="session")
def checkpoints(tf, tmp_path_factory):
    """net -> prefix of its random-init checkpoint (made once per session: the Keras and the
    PyTorch port tests share them; nothing may write there)."""
    from helpers.port import random_checkpoint

    made = {}

    def get(net):
        if net not in made:
            folder = tmp_path_factory.mktemp(net)
            made[net] = random_checkpoint(tf, net, folder / "model.ckpt", seed=1)
        return made[net]
    return get
