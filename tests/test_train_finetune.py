"""The fine-tuning session on real images (scikit-learn's digits): a LeNet pretrained here on
digits 0-4 is fine-tuned on digits 5-9, with TensorFlow's own reader as the oracle of what
changed in the checkpoints."""
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import FAST

from helpers.images import digits_folder

from ckptkit.errors import CkptError
from ckptkit.plan import RestoreOptions
from ckptkit.train.settings import Settings

pytestmark = pytest.mark.tf



@pytest.fixture(scope="module")
def finetune(tf):
    from ckptkit.train import finetune

    return finetune


def _settings(tmp_path, target, pretrained, **kwargs):
    values = dict(net="lenet", data=str(target), train_dir=str(tmp_path / "run"),
                  checkpoint=str(pretrained), restore=RestoreOptions(exclude=("Logits",)),
                  epochs=2, cache_dir=str(tmp_path / "cache"), **FAST)
    values.update(kwargs)
    return Settings(**values)


def _values(tf, prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_pretraining_learns_and_leaves_a_complete_train_dir(pretrained):
    rows = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["val_accuracy"] > 0.8          # 5 digits: chance is 0.2
    for name in ("run.json", "plan.json", "labels.txt", "curves.png", "checkpoint",
                 "best/checkpoint"):
        assert (pretrained / name).is_file(), name
    assert (pretrained / "labels.txt").read_text() == "0:0\n1:1\n2:2\n3:3\n4:4\n"
    assert any(p.name.startswith("events.out.tfevents") for p in pretrained.iterdir())
    run = json.loads((pretrained / "run.json").read_text())
    assert run["model"]["net"] == "lenet" and run["data"]["train"] + run["data"]["val"] == 300
    assert run["data"]["val"] == 30                # 10% of each class held out
    assert rows[-1]["step"] == 3 * -(-270 // 16)
    best = max(rows, key=lambda r: r["val_accuracy"])      # the first of equals
    assert [p.name for p in (pretrained / "best").glob("*.index")] == \
        [f"model.ckpt-{best['step']}.index"]
    assert len(list(pretrained.glob("model.ckpt-*.index"))) == 3


def test_train_logits_keeps_every_backbone_variable_bit_identical(
        tf, finetune, tmp_path, target, pretrained):
    s = _settings(tmp_path, target, pretrained,
                  restore=RestoreOptions(exclude=("Logits",), train=("Logits",)))
    summary = finetune.finetune(s)
    before = _values(tf, tf.train.latest_checkpoint(str(pretrained)))
    after = _values(tf, summary["checkpoint"])
    backbone = [n for n in after if n.startswith("LeNet/") and "/Adam" not in n]
    assert len(backbone) == 6          # conv1, conv2, fc3: weights and biases
    for name in backbone:
        assert np.array_equal(after[name], before[name]), name
    assert not np.array_equal(after["Logits/weights"], before["Logits/weights"])
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    plan = json.loads((tmp_path / "run/plan.json").read_text())
    assert plan["trainable"] == ["Logits/weights", "Logits/biases"]
    assert sorted(plan["restore"]) == sorted(backbone)


def test_lr_mult_gives_the_head_ten_times_the_step_even_with_adam(
        tf, finetune, tmp_path, target, pretrained):
    """Adam's first step moves every weight by the learning rate (its update does not depend
    on the gradient's scale): 1e-3 for the backbone, 1e-2 for a Logits=10 head."""
    summary = finetune.finetune(_settings(
        tmp_path, target, pretrained, epochs=1, batch_size=150,
        restore=RestoreOptions(exclude=("Logits",), lr_mults=("Logits=10",))))
    assert summary["step"] == 1
    before = _values(tf, tf.train.latest_checkpoint(str(pretrained)))
    after = _values(tf, summary["checkpoint"])
    step = np.abs(after["LeNet/fc3/weights"] - before["LeNet/fc3/weights"]).max()
    assert step == pytest.approx(1e-3, rel=1e-3)
    head = np.abs(after["Logits/biases"]).max()           # biases start at zero
    assert head == pytest.approx(1e-2, rel=1e-3)
    from ckptkit.scopes import role

    assert {"Logits/weights/Adam", "LeNet/fc3/weights/Adam", "beta1_power_1"} <= set(after)
    assert sorted(n for n in after if role(n) == "model") == sorted(
        ["Logits/weights", "Logits/biases"] + [f"LeNet/{layer}/{kind}" for layer in
                                               ("conv1", "conv2", "fc3")
                                               for kind in ("weights", "biases")])


def test_layer_decay_gives_each_block_its_step_even_with_adam(
        tf, finetune, tmp_path, target, pretrained):
    """--layer-decay 0.5 under a Logits=10 head: Adam's first step is 1e-3 x 0.5 per block
    below the head (fc3, conv2, conv1), 1e-2 for the head."""
    summary = finetune.finetune(_settings(
        tmp_path, target, pretrained, epochs=1, batch_size=150,
        restore=RestoreOptions(exclude=("Logits",), lr_mults=("Logits=10",),
                               layer_decay=0.5)))
    before = _values(tf, tf.train.latest_checkpoint(str(pretrained)))
    after = _values(tf, summary["checkpoint"])
    for layer, mult in (("fc3", 0.5), ("conv2", 0.25), ("conv1", 0.125)):
        for kind in ("weights", "biases"):
            name = f"LeNet/{layer}/{kind}"
            step = np.abs(after[name] - before[name]).max()
            assert step == pytest.approx(1e-3 * mult, rel=1e-3), name
    assert np.abs(after["Logits/biases"]).max() == pytest.approx(1e-2, rel=1e-3)


def test_resume_continues_global_step_and_matches_an_uninterrupted_run(
        tf, finetune, tmp_path, target, pretrained):
    whole = finetune.finetune(_settings(tmp_path / "a", target, pretrained, epochs=2))
    first = finetune.finetune(_settings(tmp_path / "b", target, pretrained, epochs=1))
    steps = -(-150 // 16)
    assert first["step"] == steps
    resumed = finetune.finetune(_settings(tmp_path / "b", target, pretrained,
                                          epochs=2))
    assert resumed["step"] == whole["step"] == 2 * steps
    a, b = _values(tf, whole["checkpoint"]), _values(tf, resumed["checkpoint"])
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert resumed["final"]["val_accuracy"] == pytest.approx(whole["final"]["val_accuracy"],
                                                             abs=0.02)


def _interrupt_at(step):
    """A progress callback that sends this process SIGINT when the run reaches `step`: the
    loop's Ctrl-C, at an exact step."""
    done = [0]

    @contextlib.contextmanager
    def progress(total, label):
        def advance(n, **fields):
            done[0] += n
            if done[0] == step:
                os.kill(os.getpid(), signal.SIGINT)
        yield advance
    return progress


@pytest.mark.parametrize("mode, tolerance", [("finetune", 1e-4), ("features", 0)])
@pytest.mark.parametrize("stop_at", [4, 10], ids=["mid-epoch", "between-epochs"])
def test_a_stopped_run_resumes_to_what_an_uninterrupted_one_gives(
        tf, finetune, tmp_path, target, pretrained, stop_at, mode, tolerance):
    """Ctrl-C in step 4 of epoch 1, or in its last step (10): the checkpoint is that step,
    epoch 1's row is written only when the epoch ended, and the resumed run ends where the
    uninterrupted one does (features mode: exactly; both runs share one feature cache, so
    the progress bars counted are the training loop's)."""
    same = dict(epochs=2, mode=mode, cache_dir=str(tmp_path / "cache"))
    whole = finetune.finetune(_settings(tmp_path / "a", target, pretrained, **same))
    s = _settings(tmp_path / "b", target, pretrained, **same)
    stopped = finetune.finetune(s, progress=_interrupt_at(stop_at))
    assert stopped["stopped"] and stopped["checkpoint"].endswith(f"model.ckpt-{stop_at}")
    assert stopped["epochs"] == (1 if stop_at == 10 else 0)
    resumed = finetune.finetune(s)
    assert not resumed["stopped"] and resumed["step"] == whole["step"] == 20
    a, b = _values(tf, whole["checkpoint"]), _values(tf, resumed["checkpoint"])
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=tolerance, atol=tolerance / 10,
                                   err_msg=name)
    rows = [json.loads(line) for line in (tmp_path / "b/run/metrics.jsonl").read_text()
            .splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert resumed["final"]["val_loss"] == pytest.approx(whole["final"]["val_loss"],
                                                         rel=tolerance, abs=0)


def test_image_modes_save_at_the_best_epoch_and_the_last_within_save_every(
        tf, finetune, tmp_path, target, pretrained):
    """At a learning rate too small to change a prediction, only epoch 1 is the best: with
    --save-every 600 the rolling checkpoints are epoch 1's (best/ links it) and the last."""
    steps = -(-150 // 16)
    summary = finetune.finetune(_settings(tmp_path, target, pretrained, epochs=4, lr=1e-12),
                                curves=False)
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [steps, 2 * steps, 3 * steps, 4 * steps]
    assert len({r["val_accuracy"] for r in rows}) == 1
    assert sorted(p.name for p in run.glob("model.ckpt-*.index")) == \
        [f"model.ckpt-{steps}.index", f"model.ckpt-{4 * steps}.index"]
    assert [p.name for p in (run / "best").glob("*.index")] == [f"model.ckpt-{steps}.index"]
    assert os.path.samefile(run / "best" / f"model.ckpt-{steps}.index",
                            run / f"model.ckpt-{steps}.index")
    assert summary["checkpoint"] == str(run / f"model.ckpt-{4 * steps}")


def test_features_mode_trains_the_head_as_head_mode_does_and_reuses_its_cache(
        tf, finetune, tmp_path, target, pretrained):
    # both start from the checkpoint's own head (nothing excluded) and see the same batches
    # (no dropout, no augmentation): training on cached features is training the same head
    same = dict(restore=RestoreOptions(), epochs=3, cache_dir=str(tmp_path / "cache"))
    head = finetune.finetune(_settings(tmp_path / "head", target, pretrained,
                                       mode="head", **same))
    lines = []
    feats = finetune.finetune(_settings(tmp_path / "feat", target, pretrained,
                                        mode="features", **same), log=lines.append)
    assert any(line.startswith("cached the backbone's features") for line in lines)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert feats["final"][key] == pytest.approx(head["final"][key], rel=1e-4), key
    a, b = _values(tf, head["checkpoint"]), _values(tf, feats["checkpoint"])
    model = [n for n in a if n.startswith(("LeNet/", "Logits/")) and "/Adam" not in n]
    assert len(model) == 8 and set(model) <= set(b)
    for name in model:         # the backbone bit-identical, the head trained alike
        if name.startswith("LeNet/"):
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)
        else:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-6, err_msg=name)
    lines = []
    finetune.finetune(_settings(tmp_path / "again", target, pretrained,
                                mode="features", epochs=1,
                                cache_dir=str(tmp_path / "cache")), log=lines.append)
    assert any(line.startswith("features from the cache") for line in lines)
    assert not any("cached the backbone" in line for line in lines)


def test_two_stage_unfreezes_from_the_scope_with_a_lower_rate(
        tf, finetune, tmp_path, target, pretrained):
    from ckptkit.train.plots import curves

    lines = []
    summary = finetune.finetune(_settings(
        tmp_path, target, pretrained, mode="two-stage", epochs=3,
        restore=RestoreOptions(exclude=("Logits",), train_from="LeNet/fc3")), log=lines.append)
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [1, 2, 2]
    assert rows[1]["lr"] == pytest.approx(1e-4)
    stage_lines = [line for line in lines if line.startswith("stage ")]
    assert stage_lines == ["stage 1: training the head (Logits), epochs 1-1",
                           "stage 2: unfreezing from LeNet/fc3 at lr x0.1, epochs 2-3"]
    assert lines.index(stage_lines[1]) > lines.index(next(
        line for line in lines if line.startswith("epoch 1/3")))
    # curves.png is drawn from these rows: a line between epochs 1 and 2 marks stage 2
    fig = curves(rows, tmp_path / "again.png")
    marks = [line.get_xdata()[0] for line in fig.axes[0].get_lines()
             if line.get_label() == "Start Fine Tuning"]
    assert marks == [1.5] and (tmp_path / "run" / "curves.png").is_file()
    before = _values(tf, tf.train.latest_checkpoint(str(pretrained)))
    after = _values(tf, summary["checkpoint"])
    assert np.array_equal(after["LeNet/conv2/weights"], before["LeNet/conv2/weights"])
    assert not np.array_equal(after["LeNet/fc3/weights"], before["LeNet/fc3/weights"])


def test_compare_scratch_trains_the_same_model_from_random_weights(
        finetune, tmp_path, target, pretrained):
    summary = finetune.finetune(_settings(tmp_path, target, pretrained, epochs=1,
                                          compare_scratch=True))
    scratch = summary["scratch"]
    assert scratch["train_dir"] == str(tmp_path / "run" / "scratch")
    assert scratch["epochs"] == summary["epochs"] == 1
    plan = json.loads((tmp_path / "run/scratch/plan.json").read_text())
    assert plan["restore"] == []
    # both runs on one figure, in the pretrained run's train dir
    assert summary["compare_png"] == str(tmp_path / "run" / "compare.png")
    assert (tmp_path / "run" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    from ckptkit import render

    assert render.finetune_table(summary)[-1] == f"both drawn to {summary['compare_png']}"


def test_eval_reproduces_the_best_val_accuracy(finetune, tmp_path, target, pretrained):
    from ckptkit.train.evaluate import evaluate

    summary = finetune.finetune(_settings(tmp_path, target, pretrained, epochs=2))
    result = evaluate(summary["train_dir"])
    assert result["count"] == 100
    assert result["accuracy"] == pytest.approx(summary["best"]["val_accuracy"], abs=1e-9)
    assert np.array(result["confusion"]).sum() == 100
    assert [c["label"] for c in result["per_class"]] == ["5", "6", "7", "8", "9"]
    assert result["confusion_png"] == os.path.join(summary["train_dir"], "confusion.png")
    assert os.path.isfile(result["confusion_png"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="two-stage"), r"--mode two-stage needs --train-from"),
    (dict(mode="head", restore=RestoreOptions(exclude=("Logits",), train=("Logits",))),
     r"--mode head trains the new head only"),
    (dict(num_classes=7), r"--num-classes 7 but the data has 5 classes"),
    (dict(restore=RestoreOptions(exclude=("Logitz",))), r"Logitz"),
    (dict(net="lenett"), r"unknown net 'lenett'"),
    (dict(mode="features", keep_head=True), r"--keep-head does not go with --mode features"),
    (dict(restore=RestoreOptions(strict=True), hidden=(8,)),
     r"cannot be restored \(--strict\)"),
    (dict(keep_head=True), r"head='keep' reuses the 10-class classifier of lenet"),
])
def test_bad_settings_fail_before_training(finetune, tmp_path, target, pretrained, kwargs,
                                           message):
    from ckptkit.errors import CkptError

    with pytest.raises(CkptError, match=message):
        finetune.finetune(_settings(tmp_path, target, pretrained, **kwargs))
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_without_matplotlib_a_run_names_the_extra_before_training(
        finetune, tmp_path, target, pretrained, monkeypatch):
    from ckptkit.errors import CkptError

    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib fails
    with pytest.raises(CkptError, match=r"^figures need matplotlib, which is not installed: "
                                        r"pip install 'ckptkit\[tf\]'$"):
        finetune.finetune(_settings(tmp_path, target, pretrained))
    assert not (tmp_path / "run").exists()


def test_include_and_strict_are_honoured_as_plan_model_plans_them(
        finetune, tmp_path, target, pretrained):
    from ckptkit.train.restore import plan_model

    options = RestoreOptions(include=("LeNet",), strict=True, train=("Logits",))
    s = _settings(tmp_path, target, pretrained, epochs=1, restore=options)
    finetune.finetune(s)
    plan = json.loads((tmp_path / "run/plan.json").read_text())
    assert plan == plan_model(str(pretrained), s.model(5), options).to_json()
    assert plan["excluded"] == ["Logits/weights", "Logits/biases"]    # not included
    assert len(plan["restore"]) == 6 and plan["missing"] == []
    assert plan["trainable"] == ["Logits/weights", "Logits/biases"]


def test_keep_head_trains_the_net_s_own_classifier(finetune, tmp_path, pretrained):
    """LeNet's own 10-class classifier (LeNet/fc4, not in a checkpoint pretrained with a new
    head) on the ten digits: a head-only run trains exactly that scope."""
    from ckptkit.train.evaluate import evaluate
    from ckptkit.train.restore import plan_model

    data = digits_folder(tmp_path / "digits", range(10), 10)
    options = RestoreOptions()
    s = _settings(tmp_path, data, pretrained, mode="head", keep_head=True, epochs=1,
                  restore=options)
    summary = finetune.finetune(s)
    model = s.model(10)
    assert model.head_scopes == ("LeNet/fc4",)
    plan = json.loads((tmp_path / "run/plan.json").read_text())
    assert plan == plan_model(str(pretrained), model, dataclasses.replace(
        options, train=model.head_scopes)).to_json()
    assert plan["trainable"] == plan["missing"] == ["LeNet/fc4/weights", "LeNet/fc4/biases"]
    assert {"Logits/weights", "Logits/biases"} <= set(plan["unused"])
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert run["model"]["keep_head"] is True and run["settings"]["keep_head"] is True
    assert evaluate(summary["train_dir"])["count"] == 10


def test_a_train_dir_from_before_keep_head_resumes(finetune, tmp_path, target, pretrained):
    finetune.finetune(_settings(tmp_path, target, pretrained, epochs=1))
    path = tmp_path / "run" / "run.json"
    run = json.loads(path.read_text())
    del run["model"]["keep_head"]
    path.write_text(json.dumps(run))
    lines = []
    summary = finetune.finetune(_settings(tmp_path, target, pretrained, epochs=2),
                                log=lines.append)
    assert any(line.startswith("resuming from") for line in lines)
    assert summary["epochs"] == 2


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def test_a_rerun_with_other_settings_is_refused_naming_each_change(
        finetune, tmp_path, target, pretrained):
    from ckptkit.errors import CkptError

    finetune.finetune(_settings(tmp_path, target, pretrained, epochs=1))
    run = tmp_path / "run"
    before = _files(run)
    with pytest.raises(CkptError) as caught:
        finetune.finetune(_settings(tmp_path, target, pretrained, epochs=2, lr=1e-2,
                                    optimizer="momentum", label_smoothing=0.1))
    assert str(caught.value) == (
        f"{run} holds a run with other settings (--optimizer adam -> momentum, --lr 0.001 -> "
        "0.01, --label-smoothing 0.0 -> 0.1); use a new --train-dir, or --restart to "
        "discard that run")
    assert _files(run) == before


def test_a_resume_applies_the_settings_it_may_change_and_says_so(
        finetune, tmp_path, target, pretrained):
    from ckptkit.errors import CkptError

    run = tmp_path / "run"
    finetune.finetune(_settings(tmp_path, target, pretrained, epochs=1))
    lines = []
    summary = finetune.finetune(_settings(tmp_path, target, pretrained, epochs=2, keep=2,
                                          patience=5), log=lines.append)
    steps = -(-150 // 16)
    assert lines[0] == (f"resuming from {run}/model.ckpt-{steps} with --epochs 1 -> 2, "
                        "--keep 3 -> 2, --patience 0 -> 5")
    assert summary["epochs"] == 2 and summary["step"] == 2 * steps
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert (settings["epochs"], settings["keep"], settings["patience"]) == (2, 2, 5)
    # the same again: complete, said in one line, nothing trained or written
    before, lines = _files(run), []
    again = finetune.finetune(_settings(tmp_path, target, pretrained, epochs=2, keep=2,
                                        patience=5), log=lines.append)
    assert lines == [f"{run}: complete, 2 of 2 epochs; more --epochs trains on, --restart "
                     "starts over"]
    assert again == {**summary, "restore_seconds": None} and _files(run) == before
    with pytest.raises(CkptError, match=rf"^{run} has trained 2 epochs: --epochs 1 is fewer; "
                                        r"give --epochs 2 or more, a new --train-dir, or "
                                        r"--restart$"):
        finetune.finetune(_settings(tmp_path, target, pretrained, epochs=1, keep=2,
                                    patience=5))


def _in_a(tmp_path, target, monkeypatch):
    """Work in tmp_path/a, which holds the target data as digits/; its absolute path."""
    shutil.copytree(target, tmp_path / "a" / "digits")
    monkeypatch.chdir(tmp_path / "a")
    return os.path.join(os.getcwd(), "digits")


def test_a_relative_data_path_is_stored_absolute_so_eval_and_resume_work_from_elsewhere(
        finetune, tmp_path, target, pretrained, monkeypatch):
    from ckptkit.train.evaluate import evaluate

    data, run, steps = _in_a(tmp_path, target, monkeypatch), tmp_path / "run", -(-150 // 16)
    finetune.finetune(_settings(tmp_path, "digits", pretrained, epochs=1))
    saved = json.loads((run / "run.json").read_text())
    assert (saved["settings"]["data"], saved["data"]["source"]) == (data, data)
    elsewhere = tmp_path / "b" / "deeper"       # where digits/ is not
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert evaluate(str(run))["data"] == f"{data} (validation split)"
    # the same data by another relative path: only --epochs changes
    lines = []
    finetune.finetune(_settings(tmp_path, os.path.relpath(data), pretrained, epochs=2),
                      log=lines.append)
    assert lines[0] == f"resuming from {run}/model.ckpt-{steps} with --epochs 1 -> 2"
    monkeypatch.chdir(tmp_path / "a")           # the first relative path, from where it was
    lines = []
    summary = finetune.finetune(_settings(tmp_path, "digits", pretrained, epochs=2),
                                log=lines.append)
    assert lines == [f"{run}: complete, 2 of 2 epochs; more --epochs trains on, --restart "
                     "starts over"]
    assert summary["step"] == 2 * steps


def test_an_older_run_json_s_relative_data_path_is_read_from_the_current_directory(
        finetune, tmp_path, target, pretrained, monkeypatch):
    from ckptkit.errors import NotFound
    from ckptkit.train.evaluate import evaluate

    _in_a(tmp_path, target, monkeypatch)
    run = tmp_path / "run"
    finetune.finetune(_settings(tmp_path, "digits", pretrained, epochs=1))
    saved = json.loads((run / "run.json").read_text())
    saved["settings"]["data"] = "digits"        # as ckptkit wrote it before
    (run / "run.json").write_text(json.dumps(saved))
    assert evaluate(str(run))["data"] == "digits (validation split)"
    lines = []
    finetune.finetune(_settings(tmp_path, "digits", pretrained, epochs=1), log=lines.append)
    assert lines == [f"{run}: complete, 1 of 1 epochs; more --epochs trains on, --restart "
                     "starts over"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound, match=r"^no data at digits$"):
        evaluate(str(run))


def test_restart_discards_the_old_run_and_nothing_else(finetune, tmp_path, target,
                                                       pretrained):
    run = tmp_path / "run"
    finetune.finetune(_settings(tmp_path, target, pretrained, epochs=2))
    (run / "notes.txt").write_text("mine\n")
    (run / "best" / "keep.me").write_text("mine too\n")
    lines = []
    summary = finetune.finetune(_settings(tmp_path, target, pretrained, epochs=1, lr=1e-2),
                                log=lines.append, restart=True)
    assert f"--restart: discarded the run in {run}" in lines
    assert not any(line.startswith("resuming") for line in lines)
    steps = -(-150 // 16)
    assert summary["epochs"] == 1 and summary["step"] == steps
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["lr"] == pytest.approx(1e-2)
    assert json.loads((run / "run.json").read_text())["settings"]["lr"] == 1e-2
    assert sorted(p.name for p in run.glob("model.ckpt-*.index")) == [
        f"model.ckpt-{steps}.index"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    assert (run / "notes.txt").read_text() == "mine\n"
    assert (run / "best" / "keep.me").read_text() == "mine too\n"


def test_bad_data_gets_a_clear_error(finetune, tmp_path, pretrained):
    from ckptkit.errors import CkptError

    one = digits_folder(tmp_path / "one", [3], 5)
    with pytest.raises(CkptError, match=r"class"):
        finetune.finetune(_settings(tmp_path, one, pretrained))
    empty = digits_folder(tmp_path / "empty", [3, 4], 5)
    for png in (empty / "4").iterdir():
        png.unlink()
    with pytest.raises(CkptError, match=r"has no images"):
        finetune.finetune(_settings(tmp_path, empty, pretrained))


def test_corrupt_images_are_skipped_with_a_warning(finetune, tmp_path, pretrained):
    data = digits_folder(tmp_path / "data", [5, 6], 10)
    (data / "5" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (data / "6" / "empty.jpg").write_bytes(b"")
    lines = []
    summary = finetune.finetune(_settings(tmp_path, data, pretrained, epochs=1),
                                log=lines.append)
    warned = [line for line in lines if line.startswith("warning: skipping")]
    assert len(warned) == 2 and any("broken.png" in w for w in warned)
    assert summary["epochs"] == 1


def test_sigterm_saves_and_the_same_command_resumes(tmp_path, target, pretrained):
    args = [sys.executable, "-c", "from ckptkit.cli import main; main()", "finetune",
            "--net", "lenet",
            "--checkpoint", str(pretrained), "--data", str(target), "--exclude", "Logits",
            "--train-dir", str(tmp_path / "run"), "--epochs", "40", "--batch-size", "4",
            "--optimizer", "adam", "--lr", "1e-3", "--no-augment"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (tmp_path / "run" / "metrics.jsonl").exists() and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"run the same command to resume" in err
    state = (tmp_path / "run" / "checkpoint").read_text()
    stopped_at = int(state.split('"')[1].rpartition("-")[2])
    assert stopped_at >= 38                     # at least one epoch of 38 steps
    epochs = stopped_at // 38 + 1
    args[args.index("--epochs") + 1] = str(epochs)
    done = subprocess.run(args + ["--json"], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert b"resuming from" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["step"] == epochs * 38 and summary["epochs"] == epochs
    assert os.path.isfile(str(tmp_path / "run" / "curves.png"))


DATA_PARALLEL = """
import json, sys
import tensorflow as tf
cpu, = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ckptkit.errors import CkptError
from ckptkit.plan import RestoreOptions
from ckptkit.train.finetune import finetune
from ckptkit.train.settings import Settings
settings = Settings(**json.loads(sys.argv[1]), restore=RestoreOptions(exclude=["Logits"]))
summary = finetune(settings)
print(json.dumps(summary["final"]))
"""


def test_data_parallel_over_two_devices_matches_one_device(tmp_path, target, pretrained):
    """MirroredStrategy over two logical CPU devices (standing in for two GPUs): each takes
    half of every batch and the summed gradients give the one-device result."""
    base = dict(net="lenet", data=str(target), checkpoint=str(pretrained), epochs=1, **FAST)
    finals = []
    for name, devices in (("one", []), ("two", ["/cpu:0", "/cpu:1"])):
        settings = dict(base, train_dir=str(tmp_path / name), devices=devices)
        done = subprocess.run([sys.executable, "-c", DATA_PARALLEL, json.dumps(settings)],
                              capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        finals.append(json.loads(done.stdout.splitlines()[-1]))
    one, two = finals
    assert two["step"] == one["step"] == -(-150 // 16)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    assert two["val_accuracy"] == pytest.approx(one["val_accuracy"], abs=0.011)


@pytest.fixture(scope="module")
def resnet_v1_50(tf, tmp_path_factory):
    """A tf_slim resnet_v1_50 checkpoint (1000 classes, as published), saved by TF."""
    from ckptkit.tfcompat import slim
    from tf_slim.nets import resnet_v1

    prefix = tmp_path_factory.mktemp("resnet") / "resnet_v1_50.ckpt"
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        with slim.arg_scope(resnet_v1.resnet_arg_scope()):
            resnet_v1.resnet_v1_50(tf.placeholder(tf.float32, [1, 224, 224, 3]), 1000)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, str(prefix), write_meta_graph=False)
    return prefix


def test_resnet_v1_50_end_to_end_on_tiny_images(tf, finetune, tmp_path, resnet_v1_50):
    """The real net: restore 265 variables, train the new head only, and the whole backbone
    (batch-norm moving statistics included) comes out bit-identical."""
    data = tmp_path / "data"
    digits_folder(data / "train", [1, 7], 16, size=32, rgb=True)
    digits_folder(data / "val", [1, 7], 8, offset=16, size=32, rgb=True)
    summary = finetune.finetune(Settings(
        net="resnet_v1_50", checkpoint=str(resnet_v1_50), data=str(data),
        train_dir=str(tmp_path / "run"),
        restore=RestoreOptions(exclude=("Logits",), train=("Logits",)),
        image_size=32, epochs=3, batch_size=8, optimizer="adam", lr=1e-2, augment=False))
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    plan = json.loads((tmp_path / "run/plan.json").read_text())
    assert len(plan["restore"]) == 265 and plan["trainable"] == ["Logits/weights",
                                                                  "Logits/biases"]
    before, after = _values(tf, resnet_v1_50), _values(tf, summary["checkpoint"])
    backbone = [n for n in after if n.startswith("resnet_v1_50/") and "/Adam" not in n]
    assert len(backbone) == 265
    for name in backbone:
        assert np.array_equal(after[name], before[name]), name


@pytest.fixture
def renamed_lenet(tf, tmp_path, pretrained):
    """The pretrained LeNet's checkpoint with its scope renamed to Old (saved by TF): a plan
    needs --map Old/=LeNet/."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(pretrained)))
    prefix = tmp_path / "renamed" / "model.ckpt"
    with tf.Graph().as_default():
        for name in reader.get_variable_to_shape_map():
            tf.Variable(reader.get_tensor(name), name=re.sub(r"^LeNet/", "Old/", name))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, str(prefix), write_meta_graph=False)
    return prefix


def _whole_model(tf, model, prefixes):
    """{prefix: {name: value}} of every variable of `model`'s whole graph, as eval builds it,
    restored by TF from each prefix (infer.restore: eval's way)."""
    from ckptkit.train.infer import restore

    size, channels = model.record.image_size, model.record.channels
    with tf.Graph().as_default():
        model.build(tf.placeholder(tf.float32, [1, size, size, channels]), is_training=False)
        variables = tf.global_variables()
        with tf.Session() as sess:
            found = {}
            for prefix in prefixes:
                restore(sess, str(prefix))
                found[prefix] = dict(zip([v.op.name for v in variables], sess.run(variables)))
    return found


@pytest.mark.parametrize("net", ["resnet_v1_50", "lenet"])
def test_features_mode_checkpoints_are_the_source_backbone_and_the_trained_head_exactly(
        tf, finetune, tmp_path, monkeypatch, request, target, net):
    """Features mode's graph is the head alone; its checkpoints (rolling and best/) copy the
    backbone from the checkpoint. TF restores each into the whole model: every backbone
    variable is the checkpoint tensor the plan names (resnet_v1_50; a LeNet whose scope needs
    --map), every other tensor the value the training session held, and nothing else is in
    the checkpoint."""
    from ckptkit.train import loop
    from ckptkit.train.rundir import RunDir

    held = {}
    write = loop.Checkpoints._write

    def noting(self, prefix, values):
        held[os.path.basename(prefix)] = values       # model.ckpt-STEP, rolling or best/
        write(self, prefix, values)
    monkeypatch.setattr(loop.Checkpoints, "_write", noting)
    if net == "resnet_v1_50":
        source = request.getfixturevalue("resnet_v1_50")
        data = tmp_path / "data"
        digits_folder(data / "train", [1, 7], 16, size=32, rgb=True)
        digits_folder(data / "val", [1, 7], 8, offset=16, size=32, rgb=True)
        s = Settings(net=net, checkpoint=str(source), data=str(data), image_size=32,
                     train_dir=str(tmp_path / "run"), restore=RestoreOptions(exclude=("Logits",)),
                     mode="features", epochs=3, cache_dir=str(tmp_path / "cache"),
                     **{**FAST, "batch_size": 8, "lr": 1e-2})
        backbone = 265
    else:
        source = request.getfixturevalue("renamed_lenet")
        s = _settings(tmp_path, target, source, mode="features", epochs=3, restore=RestoreOptions(
            exclude=("Logits",), maps=("Old/=LeNet/",)))
        backbone = 6
    lines = []
    summary = finetune.finetune(s, log=lines.append)
    assert f"restored {backbone} variables from {source} (the backbone's {backbone} copied " \
        "into each checkpoint as stored)" in lines
    run = RunDir(summary["train_dir"])
    restores = json.loads((tmp_path / "run" / "plan.json").read_text())["restore"]
    pairs = dict((r, r) if isinstance(r, str) else (r["model"], r["ckpt"]) for r in restores)
    assert len(pairs) == backbone and (net == "resnet_v1_50" or all(
        ckpt == model.replace("LeNet/", "Old/") for model, ckpt in pairs.items()))
    prefixes = [summary["checkpoint"], run.latest_checkpoint(best=True)]
    source_values = _values(tf, source)
    for prefix, model in _whole_model(tf, run.model(), prefixes).items():
        trained = held[os.path.basename(prefix)]
        stored = _values(tf, prefix)
        assert stored.keys() == model.keys() | trained.keys()
        assert not set(pairs) & set(trained)               # the backbone is not in the graph
        for name, value in model.items():
            np.testing.assert_array_equal(
                value, source_values[pairs[name]] if name in pairs else trained[name], name)
        for name, value in trained.items():
            np.testing.assert_array_equal(stored[name], value, name)


def test_best_is_the_best_epochs_checkpoint_linked_not_saved_again(tf, pretrained, tmp_path):
    """best/ holds the files of the best epoch's rolling checkpoint (hard links: the same
    bytes, no second save); they outlive the rolling checkpoint's deletion (--keep)."""
    rows = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    step = max(rows, key=lambda r: r["val_accuracy"])["step"]
    files = sorted(p.name for p in (pretrained / "best").glob("model.ckpt-*"))
    assert files == [f"model.ckpt-{step}.data-00000-of-00001", f"model.ckpt-{step}.index",
                     f"model.ckpt-{step}.meta"]
    for name in files:
        assert os.path.samefile(pretrained / "best" / name, pretrained / name)
    assert (pretrained / "best" / "checkpoint").read_text() == (
        f'model_checkpoint_path: "model.ckpt-{step}"\n'
        f'all_model_checkpoint_paths: "model.ckpt-{step}"\n')
    expected = _values(tf, pretrained / f"model.ckpt-{step}")
    copy = tmp_path / "run"
    shutil.copytree(pretrained, copy)           # copies: links do not survive copytree
    for name in files:
        os.remove(copy / name)                  # what the rolling saver's --keep does
    assert tf.train.latest_checkpoint(str(copy / "best")) == str(copy / "best" /
                                                                   f"model.ckpt-{step}")
    got = _values(tf, copy / "best" / f"model.ckpt-{step}")
    assert sorted(got) == sorted(expected)
    assert all(np.array_equal(got[k], expected[k]) for k in got)


def test_features_mode_refuses_a_plan_that_leaves_the_backbone_fresh(
        finetune, tmp_path, target, pretrained):
    # the features would come from a random conv1 the checkpoints could not hold
    s = _settings(tmp_path, target, pretrained, mode="features",
                  restore=RestoreOptions(exclude=("Logits", "LeNet/conv1")))
    with pytest.raises(CkptError, match=r"^--mode features needs the whole backbone from the "
                       r"checkpoint; the plan leaves 2 of its variables fresh \(first: "
                       r"LeNet/conv1/(biases|weights)\)"):
        finetune.finetune(s)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
