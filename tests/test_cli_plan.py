"""`ckptkit plan`: the table, --json, and one-line errors, on small slim-like checkpoints
(pure: --target), and on a real tf_slim graph (--net, marked tf)."""
import json

import numpy as np
import pytest
from helpers.bundle_writer import write_bundle

W = np.float32


def _pretrained():
    """A slim-like ImageNet checkpoint: backbone, 1000-class logits, Adam slots, a step."""
    t = {"net/conv1/weights": np.ones((3, 3, 3, 8), W),
         "net/conv1/BatchNorm/beta": np.zeros(8, W),
         "net/conv1/BatchNorm/moving_mean": np.zeros(8, W),
         "net/logits/weights": np.ones((1, 1, 8, 1000), W),
         "net/logits/biases": np.zeros(1000, W),
         "global_step": np.array(7, np.int64)}
    t.update({f"{k}/Adam": v for k, v in list(t.items()) if k.endswith("weights")})
    return t


def _model(classes):
    """The same net with a `classes`-way logits layer, as `inspect --json` would list it."""
    return [{"name": "net/conv1/weights", "shape": [3, 3, 3, 8], "dtype": "float32"},
            {"name": "net/conv1/BatchNorm/beta", "shape": [8], "dtype": "float32"},
            {"name": "net/conv1/BatchNorm/moving_mean", "shape": [8], "dtype": "float32",
             "trainable": False},
            {"name": "net/logits/weights", "shape": [1, 1, 8, classes], "dtype": "float32"},
            {"name": "net/logits/biases", "shape": [classes], "dtype": "float32"}]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    ckpt = write_bundle(root / "pre" / "model.ckpt", _pretrained()).prefix
    target = root / "model5.json"
    target.write_text(json.dumps({"variables": _model(5)}))
    return ckpt, target


TABLE = """\
restore                             3 variables            232
excluded                            2 variables             45
  net/logits/weights                [1,1,8,5] by logits
  net/logits/biases                 [5] by logits
missing (initialised fresh)         0 variables              0
mismatched                          0 variables              0
unused: model weights               2 variables          9,000
  net/logits/biases                 [1000]
  net/logits/weights                [1,1,8,1000]
unused: optimizer slots (expected)  2 variables          8,216
unused: step counters (expected)    1 variable               1
trainable                           2 variables             45
"""


def test_table(ckptkit, files):
    ckpt, target = files
    assert ckptkit("plan", ckpt, "--target", target, "--exclude", "logits",
                   "--train", "net/logits") == (0, TABLE, "")


def test_a_pretrained_entry_with_ema_restores_the_shadows_by_default(ckptkit, tmp_path,
                                                                      monkeypatch):
    """MobileNet's published checkpoints were evaluated with their EMA shadows: an entry with
    `ema: true` makes them the default for pretrained:NAME, --no-moving-averages the
    weights; any other path keeps the weights."""
    from ckptkit.zoo import pretrained

    prefix = write_bundle(tmp_path / "pre" / "ema_net" / "model.ckpt", {
        "net/w": np.zeros(2, np.float32),
        "net/w/ExponentialMovingAverage": np.ones(2, np.float32)}).prefix
    (tmp_path / "registry.json").write_text(json.dumps({"entries": [
        {"name": "emanet", "net": "lenet", "local": "ema_net", "ema": True}]}))
    (tmp_path / "target.json").write_text(json.dumps(
        [{"name": "net/w", "shape": [2], "dtype": "float32"}]))
    monkeypatch.setenv(pretrained.REGISTRY_ENV, str(tmp_path / "registry.json"))
    monkeypatch.setenv(pretrained.DIR_ENV, str(tmp_path / "pre"))
    shadow = [{"model": "net/w", "ckpt": "net/w/ExponentialMovingAverage"}]
    for path, flags, restored in (("pretrained:emanet", [], shadow),
                                  ("pretrained:emanet", ["--no-moving-averages"], ["net/w"]),
                                  (prefix, [], ["net/w"]),
                                  (prefix, ["--use-moving-averages"], shadow)):
        code, out, err = ckptkit("plan", path, "--target", tmp_path / "target.json", "--json",
                                 *flags)
        assert code == 0, err
        assert json.loads(out)["restore"] == restored, (path, flags)


def test_json_contract(ckptkit, files):
    ckpt, target = files
    code, out, err = ckptkit("plan", ckpt, "--target", target, "--exclude", "logits",
                             "--train", "logits", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "restore": ["net/conv1/weights", "net/conv1/BatchNorm/beta",
                    "net/conv1/BatchNorm/moving_mean"],
        "excluded": ["net/logits/weights", "net/logits/biases"],
        "excluded_tensors": [],
        "missing": [], "mismatched": [],
        "unused": ["global_step", "net/conv1/weights/Adam", "net/logits/biases",
                   "net/logits/weights", "net/logits/weights/Adam"],
        "trainable": ["net/logits/weights", "net/logits/biases"]}


@pytest.mark.parametrize("args, message", [
    (["--exclude", "logitz"], "no variable matches scope 'logitz'; closest: net/logits"),
    (["--exclude", "Logits"], "no variable matches scope 'Logits'; closest: net/logits"),
    ([], r"net/logits/(weights|biases): .*1000.*5.*--exclude net/logits or --allow-mismatch"),
    (["--exclude", "net", "--exclude", "global_step"], "no variable matches scope "
                                                       "'global_step'"),
    (["--exclude", "net"], "nothing to restore"),
    (["--train", "net/logits", "--train-from", "net/conv1"], "train"),
    (["--map", "nope/=x/"], "nope/"),
    (["--exclude", "re:("], "invalid regular expression 're:\\('"),
    (["--layer-decay", "0.5"], r"--layer-decay follows the order a net builds its layers in: "
                               r"give --net, not --target$"),
    (["--layer-decay", "0"], r"--layer-decay.*0<x<=1"),
])
def test_errors_are_one_line(ckptkit, files, args, message):
    ckpt, target = files
    code, out, err = ckptkit("plan", ckpt, "--target", target, *args)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("ckptkit: error: ")
    assert __import__("re").search(message, err), err


def test_allow_mismatch_skips_and_reports(ckptkit, files):
    ckpt, target = files
    code, out, _ = ckptkit("plan", ckpt, "--target", target, "--allow-mismatch")
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert code == 0 and lines[:7] == [
        "restore 3 variables 232", "excluded 0 variables 0",
        "missing (initialised fresh) 0 variables 0", "mismatched 0 variables 0",
        "skipped (--allow-mismatch) 2 variables 45",
        "net/logits/weights model [1,1,8,5] float32, checkpoint [1,1,8,1000] float32",
        "net/logits/biases model [5] float32, checkpoint [1000] float32"]


def test_model_needs_exactly_one_source(ckptkit, files):
    ckpt, target = files
    for args in ([], ["--net", "resnet_v1_50", "--target", str(target)]):
        code, _, err = ckptkit("plan", ckpt, *args)
        assert (code, err) == (2, "ckptkit: error: give the model as exactly one of --net NAME "
                                  "or --target PATH\n")


def test_unknown_net_lists_the_known(ckptkit, files):
    code, _, err = ckptkit("plan", files[0], "--net", "resnet50")
    assert code == 2 and err.startswith("ckptkit: error: unknown net 'resnet50'; known: ")
    assert err.rstrip().endswith("closest: resnet_v1_50")


def test_plan_never_imports_tensorflow_with_target(files):
    import subprocess
    import sys

    ckpt, target = files
    code = ("import sys\nfrom ckptkit.cli import cli\n"
            f"cli.main(['plan', {str(ckpt)!r}, '--target', {str(target)!r}, '--exclude', "
            "'logits'], standalone_mode=False)\n"
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().endswith("False")


@pytest.mark.tf
def test_net_resnet_v1_50_new_head(ckptkit, tmp_path):
    """--net builds the real graph: 265 backbone variables restore, the new head is fresh."""
    from ckptkit.tfcompat import slim, tf
    from tf_slim.nets import resnet_v1

    with tf.Graph().as_default():
        with slim.arg_scope(resnet_v1.resnet_arg_scope()):
            resnet_v1.resnet_v1_50(tf.placeholder(tf.float32, [1, 64, 64, 3]), 1000)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            prefix = tf.train.Saver().save(sess, str(tmp_path / "model.ckpt"),
                                           write_meta_graph=False)
    code, out, err = ckptkit("plan", prefix, "--net", "resnet_v1_50", "--num-classes", "5",
                             "--train", "Logits", "--json")
    assert (code, err) == (0, "note: resnet_v1_50's classifier (resnet_v1_50/logits) is not "
                              "restored: a new 5-class head replaces it (--keep-head keeps it)\n")
    plan = json.loads(out)
    assert len(plan["restore"]) == 265
    assert plan["missing"] == ["Logits/weights", "Logits/biases"]
    assert plan["trainable"] == ["Logits/weights", "Logits/biases"]
    assert sorted(plan["excluded_tensors"]) == ["resnet_v1_50/logits/biases",
                                                "resnet_v1_50/logits/weights"]
    assert plan["unused"] == []
    # slim's own flag for the same thing is no error, and changes nothing here
    code, out, err = ckptkit("plan", prefix, "--net", "resnet_v1_50", "--num-classes", "5",
                             "--exclude", "resnet_v1_50/logits", "--json")
    assert code == 0 and sorted(json.loads(out)["excluded_tensors"]) == \
        sorted(plan["excluded_tensors"])
    # --layer-decay over the real graph's blocks: conv1, block1-4, then the new head at 1x
    code, out, err = ckptkit("plan", prefix, "--net", "resnet_v1_50", "--num-classes", "5",
                             "--layer-decay", "0.5", "--json")
    plan = json.loads(out)
    below = {"conv1": 5, "block1": 4, "block2": 3, "block3": 2, "block4": 1}
    assert code == 0 and plan["lr_mults"] == {
        name: 0.5 ** below[name.split("/")[1]] for name in plan["trainable"]
        if not name.startswith("Logits/")}
    assert len(plan["lr_mults"]) == len(plan["trainable"]) - 2
