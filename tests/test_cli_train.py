"""The training commands through the CLI: `finetune`, `eval`, `predict` and `export` on real
images (scikit-learn's digits: a LeNet pretrained on digits 0-4, fine-tuned on 5-9), and the
bad input each must turn into one line `ckptkit: error: ...`, exit 2, leaving no checkpoint.

Small on purpose: 100 target images, one or two epochs, one shared fine-tuned train dir."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers.bundle_writer import write_bundle
from helpers.images import digits_folder

pytestmark = pytest.mark.tf

FAST = ["--batch-size", "16", "--dropout", "0", "--optimizer", "adam", "--lr", "1e-3",
        "--no-augment"]
ERROR = re.compile(r"ckptkit: error: [^\n]+\n\Z")
EPOCH = re.compile(r"^epoch (\d+)/2  loss \d+\.\d{4}  accuracy \d\.\d{4}  val_loss \d+\.\d{4}  "
                   r"val_accuracy \d\.\d{4}  \d+ img/s$", re.M)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tf):
    """A LeNet trained (library call, briefly) on digits 0-4."""
    from ckptkit.train.finetune import finetune
    from ckptkit.train.settings import Settings

    root = tmp_path_factory.mktemp("source")
    data = digits_folder(root / "digits", range(5), 20)
    finetune(Settings(net="lenet", data=str(data), train_dir=str(root / "run"), epochs=1,
                      batch_size=16, dropout=0.0, optimizer="adam", lr=1e-3, augment=False))
    return root / "run"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """Digits 5-9: 12 training and 8 validation images per class (100 in all)."""
    root = tmp_path_factory.mktemp("target")
    digits_folder(root / "train", range(5, 10), 12)
    digits_folder(root / "val", range(5, 10), 8, offset=12)
    return root


def _finetune_args(pretrained, data, train_dir, *extra):
    return ["finetune", "--net", "lenet", "--checkpoint", pretrained, "--data", data,
            "--exclude", "Logits", "--train-dir", train_dir, "--epochs", "2", *FAST, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pretrained, target):
    """(exit code, stdout, stderr, train dir) of `ckptkit finetune ... --json`, in process."""
    from click.testing import CliRunner

    from ckptkit.cli import cli

    run = tmp_path_factory.mktemp("ft") / "run"
    args = _finetune_args(pretrained, target, run, "--json")
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="ckptkit")
    return result.exit_code, result.stdout, result.stderr, run


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _checkpoints(folder):
    """Names of checkpoint files anywhere under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and (".ckpt" in p.name or p.name == "checkpoint"))


def _one_error_line(code, out, err, pattern):
    assert code == 2, (code, out, err)
    assert ERROR.fullmatch(err), err
    assert "Traceback" not in err and "internal error" not in err, err
    assert re.search(pattern, err), err


# ---------------------------------------------------------------- help

@pytest.mark.parametrize("command, example", [
    ("finetune", "ckptkit finetune --net resnet_v1_50 --checkpoint"),
    ("eval", "ckptkit eval --train-dir runs/a"),
    ("predict", "ckptkit predict --train-dir runs/a"),
    ("export", "ckptkit export --train-dir runs/a -o exported/"),
])
def test_help_shows_examples(ckptkit, command, example):
    code, out, err = ckptkit(command, "--help")
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: ckptkit {command} ")
    assert re.search(r"^  Examples?:\n    ckptkit ", out, re.M)
    assert example in out


# ---------------------------------------------------------------- finetune

def test_finetune_json_summary_and_epoch_lines(trained, pretrained):
    code, out, err, run = trained
    assert code == 0, err
    summary = json.loads(out)
    assert summary["train_dir"] == str(run)
    assert summary["stopped"] is False
    steps = 2 * -(-60 // 16)
    assert (summary["epochs"], summary["step"]) == (2, steps)
    assert summary["checkpoint"] == str(run / f"model.ckpt-{steps}")
    assert summary["restore_seconds"] >= 0
    rows = _metrics(run)
    assert summary["final"] == rows[-1]
    assert summary["best"]["val_accuracy"] == max(r["val_accuracy"] for r in rows)
    assert set(summary["final"]) >= {"epoch", "step", "loss", "accuracy", "val_loss",
                                     "val_accuracy", "lr", "images_per_sec"}
    assert "scratch" not in summary
    assert f"\nrestored 6 variables from {pretrained}\n" in f"\n{err}"
    assert [int(n) for n in EPOCH.findall(err)] == [1, 2]
    assert "Traceback" not in err
    for name in ("run.json", "plan.json", "labels.txt", "curves.png", "metrics.jsonl",
                 "checkpoint", "best/checkpoint"):
        assert (run / name).is_file(), name
    assert (run / "labels.txt").read_text() == "0:5\n1:6\n2:7\n3:8\n4:9\n"


def test_finetune_rerun_of_a_finished_run_says_it_is_complete_and_prints_the_table(
        ckptkit, trained, pretrained, target):
    *_, run = trained
    before = _checkpoints(run)
    code, out, err = ckptkit(*_finetune_args(pretrained, target, run))
    assert code == 0, err
    assert err == (f"{run}: complete, 2 of 2 epochs; more --epochs trains on, --restart "
                   "starts over\n")
    assert not EPOCH.search(err)                 # nothing left to train
    lines = out.splitlines()
    assert re.fullmatch(r"run +epochs +best val_accuracy +final val_accuracy +train dir",
                        lines[0])
    assert re.fullmatch(rf"pretrained +2 +\d\.\d{{4}} +\d\.\d{{4}} +{re.escape(str(run))}",
                        lines[1])
    assert len(lines) == 2
    assert _checkpoints(run) == before


# ---------------------------------------------------------------- eval

def test_eval_table(ckptkit, trained):
    *_, run = trained
    best = max(r["val_accuracy"] for r in _metrics(run))
    (run / "confusion.png").unlink(missing_ok=True)
    code, out, err = ckptkit("eval", "--train-dir", run)
    assert (code, err) == (0, "engine: TensorFlow\n")
    lines = out.splitlines()
    assert re.fullmatch(rf"{re.escape(str(run))}/best/model\.ckpt-\d+ on \S+ "
                        r"\(validation split\): 40 images", lines[0])
    accuracy = float(re.fullmatch(r"accuracy (\d\.\d{4})  top-5 (\d\.\d{4})  loss \S+",
                                  lines[1]).group(1))
    assert accuracy == pytest.approx(best, abs=5e-5)
    assert lines[2] == ""
    assert re.fullmatch(r"class +images +accuracy", lines[3])
    assert [line.split()[:2] for line in lines[4:9]] == [[str(d), "8"] for d in range(5, 10)]
    assert re.fullmatch(r"true \\ predicted +5 +6 +7 +8 +9", lines[10])
    counts = [[int(n) for n in line.split()[1:]] for line in lines[11:16]]
    assert [sum(row) for row in counts] == [8] * 5
    assert sum(counts[i][i] for i in range(5)) == round(accuracy * 40)
    assert lines[-1] == f"confusion matrix drawn to {run / 'confusion.png'}"
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_json_matches_the_best_val_accuracy(ckptkit, trained):
    *_, run = trained
    best = max(r["val_accuracy"] for r in _metrics(run))
    code, out, err = ckptkit("eval", "--train-dir", run, "--json")
    assert (code, err) == (0, "engine: TensorFlow\n")
    result = json.loads(out)
    assert result["count"] == 40
    assert result["accuracy"] == pytest.approx(best, abs=1e-9)
    assert result["labels"] == ["5", "6", "7", "8", "9"]
    assert [c["count"] for c in result["per_class"]] == [8] * 5
    assert sum(map(sum, result["confusion"])) == 40
    assert result["top5"] == 1.0                # 5 classes: the top 5 are all of them
    assert result["confusion_png"] == str(run / "confusion.png")
    assert (run / "confusion.png").is_file()


def test_eval_last_and_other_data(ckptkit, trained, target):
    *_, run = trained
    code, out, err = ckptkit("eval", "--train-dir", run, "--last", "--data", target / "val",
                             "--json")
    assert (code, err) == (0, "engine: TensorFlow\n")
    result = json.loads(out)
    assert result["checkpoint"] == str(run / "model.ckpt-8")
    assert result["count"] == 40 and result["data"] == str(target / "val")


def test_eval_on_other_data_warns_of_unreadable_images_and_keeps_the_run_s_matrix(
        ckptkit, trained, target, tmp_path):
    *_, run = trained
    ckptkit("eval", "--train-dir", run)
    own = (run / "confusion.png").read_bytes()
    test = tmp_path / "test"
    shutil.copytree(target / "val", test)
    broken = test / "5" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out, err = ckptkit("eval", "--train-dir", run, "--data", test, "--json")
    assert code == 0
    assert err == (f"warning: skipping unreadable image {broken} (truncated PNG)\n"
                   "engine: TensorFlow\n")
    result = json.loads(out)
    assert result["count"] == 40
    assert result["confusion_png"] == str(run / "confusion-test.png")
    assert (run / "confusion-test.png").read_bytes()[:4] == b"\x89PNG"
    assert (run / "confusion.png").read_bytes() == own
    code, out, err = ckptkit("eval", "--train-dir", run, "--data", test)
    assert out.splitlines()[-1] == f"confusion matrix drawn to {run / 'confusion-test.png'}"


# ---------------------------------------------------------------- predict

def test_predict_files_and_a_folder(ckptkit, trained, target):
    *_, run = trained
    files = sorted((target / "val" / "7").glob("*.png"))[:2]
    code, out, err = ckptkit("predict", "--train-dir", run, *files, target / "val" / "9",
                             "--top-k", "3")
    assert (code, err) == (0, "engine: TensorFlow\n")
    lines = out.splitlines()
    nines = sorted((target / "val" / "9").glob("*.png"))
    assert [line.partition(": ")[0] for line in lines] == [str(p) for p in files + nines]
    for line in lines:
        tops = re.fullmatch(r"\S+: (\d) (\d\.\d{3})  (\d) (\d\.\d{3})  (\d) (\d\.\d{3})", line)
        assert tops, line
        probs = [float(p) for p in tops.groups()[1::2]]
        assert probs == sorted(probs, reverse=True)
        assert set(tops.groups()[::2]) <= set("56789")


def test_predict_a_folder_skips_hidden_files_and_folders(ckptkit, trained, target, tmp_path):
    *_, run = trained
    folder = tmp_path / "photos"
    shutil.copytree(target / "val" / "8", folder / "eights")
    shutil.copytree(target / "val" / "8", folder / ".ipynb_checkpoints")
    (folder / "eights" / "._0001.png").write_bytes(b"AppleDouble junk")
    (folder / "notes.txt").write_text("not an image\n")
    code, out, err = ckptkit("predict", "--train-dir", run, folder, "--json")
    assert (code, err) == (0, "engine: TensorFlow\n")
    paths = [item["path"] for item in json.loads(out)]
    assert paths == sorted(str(p) for p in (folder / "eights").glob("[!.]*.png"))
    assert len(paths) == 8


def test_predict_json_top_k_is_sorted(ckptkit, trained, target):
    *_, run = trained
    code, out, err = ckptkit("predict", "--train-dir", run, target / "val" / "5", "--json",
                             "--top-k", "9")
    assert (code, err) == (0, "engine: TensorFlow\n")
    results = json.loads(out)
    assert len(results) == 8
    for item in results:
        assert set(item) == {"path", "top"}
        top = item["top"]
        assert len(top) == 5                     # clipped to the model's classes
        assert sorted(t["label"] for t in top) == ["5", "6", "7", "8", "9"]
        assert [t["label"] for t in top] == [str(5 + t["index"]) for t in top]
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)


def test_predict_a_corrupt_file_is_an_error_line_and_the_others_are_classified(
        ckptkit, trained, target, tmp_path):
    *_, run = trained
    good = sorted((target / "val" / "6").glob("*.png"))[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    code, out, err = ckptkit("predict", "--train-dir", run, good[0], broken, empty, good[1],
                             "--top-k", "1")
    assert code == 1 and err == "engine: TensorFlow\n"
    lines = out.splitlines()
    assert len(lines) == 4
    assert re.fullmatch(rf"{re.escape(str(good[0]))}: \d \d\.\d{{3}}", lines[0])
    assert lines[1].startswith(f"{broken}: error: cannot decode")
    assert lines[1] == f"{broken}: error: cannot decode: truncated PNG"
    assert lines[2] == f"{empty}: error: empty file"
    assert re.fullmatch(rf"{re.escape(str(good[1]))}: \d \d\.\d{{3}}", lines[3])
    code, out, err = ckptkit("predict", "--train-dir", run, good[0], broken, "--json")
    assert code == 1
    results = json.loads(out)
    assert "top" in results[0] and results[1]["error"].startswith("cannot decode")


def test_predict_a_missing_file_among_others_is_an_error_line_and_the_rest_are_classified(
        ckptkit, trained, target, tmp_path):
    *_, run = trained
    good = sorted((target / "val" / "6").glob("*.png"))[:2]
    missing = tmp_path / "absent.png"
    text = tmp_path / "notes.jpg"
    text.write_text("shopping list\n")
    code, out, err = ckptkit("predict", "--train-dir", run, good[0], missing, text, good[1],
                             "--top-k", "1")
    assert code == 1 and err == "engine: TensorFlow\n"
    lines = out.splitlines()
    assert len(lines) == 4
    assert re.fullmatch(rf"{re.escape(str(good[0]))}: \d \d\.\d{{3}}", lines[0])
    assert lines[1] == f"{missing}: error: cannot read: No such file or directory"
    assert lines[2] == f"{text}: error: cannot decode: not an image (text)"
    assert re.fullmatch(rf"{re.escape(str(good[1]))}: \d \d\.\d{{3}}", lines[3])


# ---------------------------------------------------------------- export

def test_export_writes_the_folder_and_refuses_a_non_empty_one(ckptkit, trained, tmp_path):
    *_, run = trained
    out_dir = tmp_path / "exported"
    code, out, err = ckptkit("export", "--train-dir", run, "-o", out_dir)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert re.fullmatch(rf"exported {re.escape(str(run))}/best/model\.ckpt-\d+ \(lenet, 5 "
                        rf"classes\) to {re.escape(str(out_dir))}", lines[0])
    assert lines[1] == ("  saved_model/  tags serve, signatures serving_default, "
                        "predict_arrays")
    assert lines[2] == ("  frozen_graph.pb  input input:0 (string [None]: encoded JPEG, PNG, "
                        "BMP or GIF file contents), outputs probabilities:0, classes:0, "
                        "logits:0, labels:0")
    assert lines[3] == "  export.json  tensor names, labels, preprocessing"
    assert len(lines) == 4
    assert (out_dir / "saved_model" / "saved_model.pb").is_file()
    assert (out_dir / "frozen_graph.pb").stat().st_size > 0
    info = json.loads((out_dir / "export.json").read_text())
    assert info["labels"] == ["5", "6", "7", "8", "9"] and info["net"] == "lenet"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "export.json", "frozen_graph.pb", "labels.txt", "saved_model"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = ckptkit("export", "--train-dir", run, "-o", out_dir)
    _one_error_line(code, out, err, r"exists and is not empty")
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == before


# ---------------------------------------------------------------- bad finetune input

def _missing_data(tmp, target):
    return ["--data", tmp / "nope"]


def _text_data(tmp, target):
    (tmp / "notes.txt").write_text("these are not images\n" * 10)
    return ["--data", tmp / "notes.txt"]


def _fake_npz(tmp, target):
    (tmp / "fake.npz").write_bytes(b"not a zip file at all")
    return ["--data", tmp / "fake.npz"]


def _empty_class(tmp, target):
    data = digits_folder(tmp / "data", [5, 6], 4)
    for png in (data / "6").iterdir():
        png.unlink()
    return ["--data", data]


def _one_class(tmp, target):
    return ["--data", digits_folder(tmp / "data", [5], 4)]


def _corrupt_checkpoint(tmp, target):
    rng = np.random.default_rng(0)
    (tmp / "x.ckpt.index").write_bytes(rng.bytes(300))
    (tmp / "x.ckpt.data-00000-of-00001").write_bytes(rng.bytes(3000))
    return ["--checkpoint", tmp / "x.ckpt"]


def _foreign_train_dir(tmp, target):
    (tmp / "run").mkdir()
    write_bundle(tmp / "run" / "model.ckpt-5",
                 {"dense/kernel": np.ones((2, 3), np.float32),
                  "global_step": np.array(5, np.int64)})
    (tmp / "run" / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-5"\n')
    return []


def _train_dir_a_file(tmp, target):
    (tmp / "taken").write_text("mine\n")
    return ["--train-dir", tmp / "taken"]


BAD_FINETUNE = {
    "missing data": (_missing_data, r"no data at .*nope"),
    "data a text file": (_text_data, r"notes\.txt"),
    "data a fake npz": (_fake_npz, r"fake\.npz: not an \.npz file \(not a zip archive\)"),
    "empty class folder": (_empty_class, r"class folder .*6.* has no images"),
    "one class": (_one_class, r"at least 2 classes, found 1 \(5\)"),
    "num-classes mismatch": (["--num-classes", "7"],
                             r"--num-classes 7 but the data has 5 classes"),
    "two-stage without train-from": (["--mode", "two-stage"],
                                     r"--mode two-stage needs --train-from"),
    "head with train": (["--mode", "head", "--train", "Logits"],
                        r"--mode head trains the new head only"),
    "unknown net": (["--net", "lenett"], r"unknown net 'lenett'.*; closest: lenet$"),
    "exclude matching nothing": (["--exclude", "Logitz"], r"Logitz"),
    "missing checkpoint": (lambda tmp, target: ["--checkpoint", tmp / "absent.ckpt"],
                           r"absent\.ckpt"),
    "corrupt checkpoint": (_corrupt_checkpoint, r"x\.ckpt"),
    "foreign train dir": (_foreign_train_dir, r"holds checkpoints but no run\.json"),
    "restart a foreign train dir": (lambda tmp, target: _foreign_train_dir(tmp, target)
                                    + ["--restart"], r"holds checkpoints but no run\.json"),
    "gpus abc": (["--gpus", "abc"], r"--gpus takes GPU numbers like 0,1, not 'abc'"),
    "device gpu on a cpu": (["--device", "gpu"], r"--device gpu, but TensorFlow sees no GPU"),
    "head 0,5": (["--head", "0,5"], r"--head takes layer sizes like 256,128, not '0,5'"),
    "head x": (["--head", "x"], r"--head takes layer sizes like 256,128, not 'x'"),
    "val-split 1.5": (["--val-split", "1.5"],
                      r"Invalid value for '--val-split': 1\.5 is not in the range 0<x<1"),
    "epochs 0": (["--epochs", "0"], r"Invalid value for '--epochs'"),
    "missing net": (lambda tmp, target: None, r"Missing option '--net'"),
    "train dir a file": (_train_dir_a_file, r"taken"),
    # the second stage's plan must be checked before the first stage trains
    "two-stage train-from matching nothing": (
        ["--mode", "two-stage", "--train-from", "LeNet/fc33", "--epochs", "2"],
        r"no variable matches scope 'LeNet/fc33'; closest: LeNet/fc3"),
}


def _drop_option(args, name):
    i = args.index(name)
    return args[:i] + args[i + 2:]


@pytest.mark.parametrize("case", BAD_FINETUNE)
def test_bad_finetune_input_is_one_error_line_and_no_checkpoint(
        ckptkit, tmp_path, pretrained, target, case):
    make, pattern = BAD_FINETUNE[case]
    extra = make(tmp_path, target) if callable(make) else make
    run = tmp_path / "run"
    args = _finetune_args(pretrained, target, run, "--epochs", "1")
    if extra is None:
        args = _drop_option(args, "--net")
        extra = []
    # a later --data/--checkpoint/--net wins over the base one in click
    before = _checkpoints(tmp_path)
    code, out, err = ckptkit(*args, *extra)
    _one_error_line(code, out, err, pattern)
    assert out == ""
    assert _checkpoints(tmp_path) == before
    assert not (run / "metrics.jsonl").exists()


@pytest.mark.parametrize("extra, pattern", [
    (["--net", "cifarnet"], r"holds a run of another model"),
    (["--head", "32"], r"holds a run of another model"),
], ids=["other net", "other head"])
def test_resuming_with_another_model_is_refused(ckptkit, tmp_path, trained, pretrained,
                                                target, extra, pattern):
    *_, source = trained
    run = tmp_path / "run"
    shutil.copytree(source, run)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    metrics = (run / "metrics.jsonl").read_text()
    code, out, err = ckptkit(*_finetune_args(pretrained, target, run), *extra)
    _one_error_line(code, out, err, pattern)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    assert (run / "metrics.jsonl").read_text() == metrics


# ---------------------------------------------------------------- bad eval/predict/export input

def _not_a_train_dir(tmp):
    (tmp / "plain").mkdir()
    (tmp / "plain" / "notes.txt").write_text("hello\n")
    return tmp / "plain"


def _corrupt_run_json(tmp, source):
    run = tmp / "run"
    shutil.copytree(source, run)
    (run / "run.json").write_text('{"model": {"net": "lenet", ')
    return run


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
@pytest.mark.parametrize("kind", ["not a train dir", "missing dir", "corrupt run.json"])
def test_train_dir_commands_refuse_a_bad_train_dir(ckptkit, tmp_path, trained, target,
                                                   command, kind):
    *_, source = trained
    if kind == "not a train dir":
        run, pattern = _not_a_train_dir(tmp_path), r"not a ckptkit train dir \(no run\.json"
    elif kind == "missing dir":
        run, pattern = tmp_path / "absent", r"absent.*not a ckptkit train dir"
    else:
        run, pattern = _corrupt_run_json(tmp_path, source), r"run\.json: not valid JSON"
    args = {"eval": ["eval", "--train-dir", run],
            "predict": ["predict", "--train-dir", run, target / "val" / "5"],
            "export": ["export", "--train-dir", run, "-o", tmp_path / "out"]}[command]
    code, out, err = ckptkit(*args)
    _one_error_line(code, out, err, pattern)
    assert out == ""
    assert not (tmp_path / "out").exists()


def test_predict_a_missing_file(ckptkit, trained, tmp_path):
    *_, run = trained
    code, out, err = ckptkit("predict", "--train-dir", run, tmp_path / "absent.png")
    _one_error_line(code, out, err, r"absent\.png: no such file")
    assert out == ""


def test_predict_a_folder_without_images(ckptkit, trained, tmp_path):
    *_, run = trained
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("x")
    code, out, err = ckptkit("predict", "--train-dir", run, tmp_path / "docs")
    _one_error_line(code, out, err, r"docs: no images")


def test_export_onto_an_existing_file(ckptkit, trained, tmp_path):
    *_, run = trained
    (tmp_path / "taken").write_text("mine\n")
    code, out, err = ckptkit("export", "--train-dir", run, "-o", tmp_path / "taken")
    _one_error_line(code, out, err, r"taken: exists and is not a directory")
    assert (tmp_path / "taken").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_train_dir_without_a_checkpoint(ckptkit, trained, tmp_path):
    *_, source = trained
    run = tmp_path / "run"
    run.mkdir()
    for name in ("run.json", "labels.txt"):
        shutil.copy(source / name, run / name)
    code, out, err = ckptkit("eval", "--train-dir", run)
    _one_error_line(code, out, err, r"no checkpoint in this train dir")


def test_a_real_process_prints_one_line_too(tmp_path, pretrained, target):
    """TensorFlow's own start-up (C++ logs, GPU probing) adds nothing to the error line."""
    args = _finetune_args(pretrained, target, tmp_path / "run", "--device", "gpu")
    done = subprocess.run([sys.executable, "-c", "from ckptkit.cli import main; main()",
                           *map(str, args)], capture_output=True, text=True, timeout=120)
    _one_error_line(done.returncode, done.stdout, done.stderr,
                    r"--device gpu, but TensorFlow sees no GPU")
    assert done.stdout == "" and _checkpoints(tmp_path) == []


def test_eval_on_data_of_one_known_class(ckptkit, trained, tmp_path):
    """Test data need not hold every class the model knows (README: "--data whose class
    names the model knows")."""
    *_, run = trained
    data = digits_folder(tmp_path / "sevens", [7], 6, offset=30)
    code, out, err = ckptkit("eval", "--train-dir", run, "--data", data, "--json")
    assert (code, err) == (0, "engine: TensorFlow\n")
    result = json.loads(out)
    assert result["count"] == 6
    assert [c["count"] for c in result["per_class"]] == [0, 0, 6, 0, 0]


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_truncated_checkpoint_in_the_train_dir_is_one_error_line(
        ckptkit, tmp_path, trained, target, command):
    *_, source = trained
    run = tmp_path / "run"
    shutil.copytree(source, run)
    for data in run.rglob("model.ckpt-*.data-*"):
        data.write_bytes(b"\0" * 10)
    args = {"eval": ["eval", "--train-dir", run],
            "predict": ["predict", "--train-dir", run, target / "val" / "5"],
            "export": ["export", "--train-dir", run, "-o", tmp_path / "out"]}[command]
    code, out, err = ckptkit(*args)
    _one_error_line(code, out, err, r"best/model\.ckpt-\d+")
    assert out == "" and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- without TensorFlow

def _copy(source, tmp):
    shutil.copytree(source, tmp / "run")
    return tmp / "run"


def _dropped(source, tmp):
    from ckptkit.train.rundir import RunDir

    run = _copy(source, tmp)
    RunDir(run).drop_checkpoints("search trial 3 was pruned, and --keep-models 3 keeps ...")
    return run


TF_FREE = {   # id -> (arguments given (tmp, trained train dir, pretrained, target), error)
    "unknown net": (lambda tmp, run, pre, tgt: _finetune_args(pre, tgt, tmp / "r") + [
        "--net", "lenett"], r"unknown net 'lenett'.*; closest: lenet$"),
    "one class": (lambda tmp, run, pre, tgt: _finetune_args(
        pre, digits_folder(tmp / "data", [5], 4), tmp / "r"), r"at least 2 classes, found 1"),
    "num-classes": (lambda tmp, run, pre, tgt: _finetune_args(pre, tgt, tmp / "r") + [
        "--num-classes", "7"], r"--num-classes 7 but the data has 5 classes"),
    "two-stage without train-from": (lambda tmp, run, pre, tgt: _finetune_args(
        pre, tgt, tmp / "r") + ["--mode", "two-stage"], r"--mode two-stage needs --train-from"),
    "gpus abc": (lambda tmp, run, pre, tgt: _finetune_args(pre, tgt, tmp / "r") + [
        "--gpus", "abc"], r"--gpus takes GPU numbers like 0,1, not 'abc'$"),
    "foreign train dir": (lambda tmp, run, pre, tgt: _foreign_train_dir(tmp, tgt) + [
        *_finetune_args(pre, tgt, tmp / "run"), "--restart"], r"no run\.json"),
    "changed settings": (lambda tmp, run, pre, tgt: _finetune_args(pre, tgt, _copy(run, tmp)) + [
        "--lr", "0.01", "--seed", "3"],
        r"holds a run with other settings \(--lr 0\.001 -> 0\.01, --seed 0 -> 3\); use a new "
        r"--train-dir, or --restart to discard that run$"),
    "another model": (lambda tmp, run, pre, tgt: _finetune_args(pre, tgt, _copy(run, tmp)) + [
        "--head", "32"], r"holds a run of another model \(--head none -> 32\)"),
    "fewer epochs": (lambda tmp, run, pre, tgt: _finetune_args(pre, tgt, _copy(run, tmp)) + [
        "--epochs", "1"], r"has trained 2 epochs: --epochs 1 is fewer"),
    "search one class": (lambda tmp, run, pre, tgt: [
        "search", "--net", "lenet", "--data", digits_folder(tmp / "data", [5], 4),
        "--study-dir", tmp / "s", "--param", "lr=loguniform:1e-3:1e-1"],
        r"at least 2 classes, found 1"),
    "search learning_rate": (lambda tmp, run, pre, tgt: [
        "search", "--net", "lenet", "--data", tgt, "--study-dir", tmp / "s",
        "--param", "learning_rate=loguniform:1e-3:1e-1"], r"closest: lr \(searchable"),
    "search grid of a range": (lambda tmp, run, pre, tgt: [
        "search", "--net", "lenet", "--data", tgt, "--study-dir", tmp / "s", "--sampler",
        "grid", "--param", "lr=loguniform:1e-3:1e-1"], r"--sampler grid needs choice:"),
    "eval not a train dir": (lambda tmp, run, pre, tgt: ["eval", "--train-dir", tmp],
                             r"not a ckptkit train dir"),
    "eval unknown classes": (lambda tmp, run, pre, tgt: [
        "eval", "--train-dir", run, "--data", digits_folder(tmp / "data", [3], 2)],
        r"classes 3 are not among the model's \(5, 6, 7, 8, 9\)"),
    "eval dropped checkpoints": (lambda tmp, run, pre, tgt: ["eval", "--train-dir",
                                                             _dropped(run, tmp)],
                                 r"no checkpoint in this train dir \(search trial 3 was "
                                 r"pruned, and --keep-models 3 keeps \.\.\.\)$"),
    "predict missing files": (lambda tmp, run, pre, tgt: [
        "predict", "--train-dir", run, tmp / "a.png", tmp / "b.png"],
        r"a\.png, .*b\.png: no such files$"),
    "predict not a train dir": (lambda tmp, run, pre, tgt: [
        "predict", "--train-dir", tmp, tgt / "val" / "5"], r"not a ckptkit train dir"),
    "export not empty": (lambda tmp, run, pre, tgt: [
        "export", "--train-dir", run, "-o", tmp], r"exists and is not empty"),
    "export dropped checkpoints": (lambda tmp, run, pre, tgt: [
        "export", "--train-dir", _dropped(run, tmp), "-o", tmp / "out"],
        r"search trial 3 was pruned"),
}


@pytest.mark.parametrize("case", TF_FREE)
def test_checks_that_need_no_tensorflow_answer_without_it(no_tf, tmp_path, trained,
                                                          pretrained, target, case):
    """Each is the right one line and exit 2 where importing TensorFlow would fail."""
    *_, run = trained
    make, pattern = TF_FREE[case]
    (tmp_path / "existing").write_text("x")     # export: a folder that is not empty
    done = no_tf(*make(tmp_path, run, pretrained, target))
    _one_error_line(done.returncode, done.stdout, done.stderr, pattern)
    assert done.stdout == ""


def test_a_finished_run_rerun_unchanged_is_complete_without_tensorflow(
        no_tf, trained, pretrained, target):
    *_, run = trained
    before = _checkpoints(run)
    done = no_tf(*_finetune_args(pretrained, target, run))
    assert done.returncode == 0, done.stderr
    assert done.stderr == (f"{run}: complete, 2 of 2 epochs; more --epochs trains on, "
                           "--restart starts over\n")
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["run", "epochs"] and lines[1].split()[:2] == [
        "pretrained", "2"]
    assert _checkpoints(run) == before
