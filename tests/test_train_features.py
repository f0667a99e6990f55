"""The feature cache (ckptkit/train/features.py): what its key depends on, old or broken
entries, and a cache hit that neither decodes an image nor builds the backbone, yet leaves
whole-model checkpoints that `ckptkit eval` reproduces."""
import json
import types

import numpy as np
import pytest
from conftest import FAST
from helpers.images import digits_folder

from ckptkit.plan import Restore, RestoreOptions
from ckptkit.train import features
from ckptkit.train.nets import Model
from ckptkit.train.settings import Settings


def _plan(*models):
    return types.SimpleNamespace(restore=[Restore(m, m, (1,)) for m in models])


def test_the_key_ignores_the_head_and_follows_backbone_data_and_size():
    data = types.SimpleNamespace(fingerprint="f1")
    plan = _plan("LeNet/conv1/weights", "Logits/weights")
    key = features.cache_key(None, plan, Model("lenet", 5, 28, (), 0.5), data)
    assert features.cache_key(None, _plan("LeNet/conv1/weights"),
                              Model("lenet", 5, 28, (256,), 0.1), data) == key
    for other in [(None, plan, Model("lenet", 5, 32), data),
                  (None, _plan("LeNet/conv2/weights"), Model("lenet", 5, 28), data),
                  (None, plan, Model("lenet", 5, 28), types.SimpleNamespace(fingerprint="f2"))]:
        assert features.cache_key(*other) != key


def test_broken_or_old_entries_read_as_missing(tmp_path):
    arrays = {"train_x": np.ones((3, 4), np.float32), "train_y": np.arange(3),
              "dropped": np.array(["a.png"])}
    path = str(tmp_path / "entry.npz")
    features.save(path, arrays)
    loaded = features.load(path)
    assert loaded["dropped"].tolist() == ["a.png"]
    np.testing.assert_array_equal(loaded["train_x"], arrays["train_x"])
    with open(path, "rb") as f:
        whole = f.read()
    with open(path, "wb") as f:
        f.write(whole[:len(whole) // 2])
    assert features.load(path) is None
    features.save(path, {k: v for k, v in arrays.items() if k != "dropped"})  # before 0.x
    assert features.load(path) is None
    assert features.load(str(tmp_path / "absent.npz")) is None
    assert [p.name for p in tmp_path.iterdir()] == ["entry.npz"]


@pytest.mark.tf
def test_a_cache_hit_decodes_no_image_builds_no_backbone_and_saves_whole_models(
        tmp_path, monkeypatch, pretrained):
    from ckptkit.train import data, finetune
    from ckptkit.train.evaluate import evaluate

    root = tmp_path / "data"
    digits_folder(root / "train", range(5, 8), 20)
    digits_folder(root / "val", range(5, 8), 10, offset=20)
    (root / "train" / "5" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    def run(name):
        lines = []
        summary = finetune.finetune(Settings(
            net="lenet", data=str(root), train_dir=str(tmp_path / name),
            checkpoint=str(pretrained), restore=RestoreOptions(exclude=("Logits",)),
            mode="features", epochs=2, cache_dir=str(tmp_path / "cache"), **FAST),
            log=lines.append)
        return summary, lines

    first, lines = run("first")
    assert any(line.startswith("cached the backbone's features") for line in lines)
    warned = [line for line in lines if line.startswith("warning: skipping")]
    assert len(warned) == 1 and warned[0].endswith("broken.png (truncated PNG)")

    def forbidden(*args, **kwargs):
        raise AssertionError("a cache hit must not decode images or run the backbone")
    monkeypatch.setattr(data, "drop_corrupt", forbidden)
    monkeypatch.setattr(features, "extract", forbidden)
    second, lines = run("second")
    assert any(line.startswith("features from the cache") for line in lines)
    assert [line for line in lines if line.startswith("warning: skipping")] == warned
    with open(tmp_path / "second" / "run.json") as f:
        assert json.load(f)["data"]["train"] == 60
    assert second["final"]["val_accuracy"] == first["final"]["val_accuracy"]
    monkeypatch.undo()
    for summary in (first, second):     # the backbone is in every checkpoint, restored
        assert evaluate(summary["train_dir"])["accuracy"] == summary["best"]["val_accuracy"]
    assert not list((tmp_path / "second").glob("*.meta"))


@pytest.mark.tf
def test_deferred_checkpoints_hold_the_best_epoch_exactly(tf, tmp_path, target, pretrained):
    """Features mode writes best/ once, from the best epoch's values kept in memory: it must
    equal the end of a run stopped at that epoch (epochs are deterministic prefixes)."""
    from ckptkit.train import finetune

    def run(name, epochs):
        return finetune.finetune(Settings(
            net="lenet", data=str(target), train_dir=str(tmp_path / name),
            checkpoint=str(pretrained), restore=RestoreOptions(exclude=("Logits",)),
            mode="features", epochs=epochs, cache_dir=str(tmp_path / "cache"),
            **{**FAST, "optimizer": "sgd", "lr": 0.5}))

    whole = run("whole", 5)
    best = whole["best"]["epoch"]
    assert best < 5, "this lr was chosen to peak early; pick one that does"
    prefix = run("prefix", best)

    def values(path):
        reader = tf.train.load_checkpoint(str(path))
        return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    from ckptkit.train.rundir import RunDir

    kept = values(RunDir(whole["train_dir"]).latest_checkpoint(best=True))
    again = values(prefix["checkpoint"])
    assert kept.keys() == again.keys() and "global_step" in kept
    for name in kept:
        np.testing.assert_array_equal(kept[name], again[name], err_msg=name)
    assert values(whole["checkpoint"])["global_step"] == whole["step"]
    assert sorted(p.name for p in (tmp_path / "whole").glob("model.ckpt-*.index")) == \
        [f"model.ckpt-{whole['step']}.index"]      # one save at the end, not one per epoch
