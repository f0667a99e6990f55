"""Inception-v4, Inception-ResNet-v2 and OverFeat, the nets ckptkit writes in
train/architectures/ after tensorflow/models research/slim, checked against public facts.

No published variable listing of these checkpoints exists in /work/shared/nets (its README),
so each net is checked against what public sources state:
- research/slim's own tests (nets/inception_v4_test.py at f09d6225, inception_resnet_v2_test.py
  at 88d23b67, overfeat_test.py at 64f40ce1): end point names and shapes;
- parameter totals: osmr/imgclsmob pytorch/README.md (27b264d0) lists the PyTorch ports of
  these checkpoints (Cadene's pretrained-models.pytorch) with 42,679,816 (InceptionV4) and
  55,843,464 (InceptionResNetV2) parameters: the checkpoint's trainable tensors without the
  auxiliary classifier, plus a batch-norm gamma per channel (the port adds it; the checkpoint
  has none, so as many as the moving means), with a 1000-class Logits layer;
  Keras' InceptionResNetV2 (keras.applications, the same layers and gamma-free batch norm)
  has 55,873,736 parameters in 898 weights, of which its 1000-class top is 2 weights and
  1536 * 1000 + 1000 parameters;
- research/slim's code: layer names, classifier scopes and shapes, the count of convolutions,
  arg scopes (initialisers, weight decay, batch-norm decay and epsilon), the residual scales;
- tf_slim 1.1's own overfeat (installed): OverFeat's variables, initialisers and weight decay.

Graphs of the Inception nets take 5-20 s to build here, so each is built once per module with
its own classifier at 299 px (the checkpoint the plan and run tests use is saved from it); the
new head's variables are the ones `plan --num-classes 5` builds (nets.model_variables caches
them). The fine-tuning run is Inception-v4's, the cheaper Inception, on 75 px images: the
smallest its base takes (Mixed_7a's VALID 3x3 stride-2 convolutions meet a 3x3 map).
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT

from helpers.images import digits_folder
from helpers.runs import decayed, serve, values

from ckptkit.scopes import compile_pattern
from ckptkit.zoo.nets import get_net

pytestmark = pytest.mark.tf

NAMES = ["inception_v4", "inception_resnet_v2", "overfeat"]
INCEPTIONS = NAMES[:2]
LISTINGS = ROOT.parent / "shared" / "nets"
FEATURES = {"inception_v4": 1536, "inception_resnet_v2": 1536, "overfeat": 4096}

# research/slim inception_v4_test.py testAllEndPointsShapes (batch 1, 1001 classes)
V4_END_POINTS = {
    "Conv2d_1a_3x3": [149, 149, 32], "Conv2d_2a_3x3": [147, 147, 32],
    "Conv2d_2b_3x3": [147, 147, 64], "Mixed_3a": [73, 73, 160], "Mixed_4a": [71, 71, 192],
    "Mixed_5a": [35, 35, 384], **{f"Mixed_5{c}": [35, 35, 384] for c in "bcde"},
    "Mixed_6a": [17, 17, 1024], **{f"Mixed_6{c}": [17, 17, 1024] for c in "bcdefgh"},
    "Mixed_7a": [8, 8, 1536], **{f"Mixed_7{c}": [8, 8, 1536] for c in "bcd"},
    "AuxLogits": [1001], "global_pool": [1, 1, 1536], "PreLogitsFlatten": [1536],
    "Logits": [1001], "Predictions": [1001]}
# inception_resnet_v2_test.py: testBuildAndCheckAllEndPointsUptoPreAuxLogits,
# testBuildEndPoints (Conv2d_7b_1x1, Logits, AuxLogits) and testBuildNoClasses (the pool);
# Mixed_7a is in testBuildBaseNetwork's list, its shape in the code's comment (8 x 8 x 2080)
IRV2_END_POINTS = {
    "Conv2d_1a_3x3": [149, 149, 32], "Conv2d_2a_3x3": [147, 147, 32],
    "Conv2d_2b_3x3": [147, 147, 64], "MaxPool_3a_3x3": [73, 73, 64],
    "Conv2d_3b_1x1": [73, 73, 80], "Conv2d_4a_3x3": [71, 71, 192],
    "MaxPool_5a_3x3": [35, 35, 192], "Mixed_5b": [35, 35, 320], "Mixed_6a": [17, 17, 1088],
    "PreAuxLogits": [17, 17, 1088], "Mixed_7a": [8, 8, 2080], "Conv2d_7b_1x1": [8, 8, 1536],
    "AuxLogits": [1001], "global_pool": [1, 1, 1536], "PreLogitsFlatten": [1536],
    "Logits": [1001], "Predictions": [1001]}
# overfeat_test.py testEndPoints (ckptkit adds Logits, the flattened fc8)
OVERFEAT_END_POINTS = [f"overfeat/{n}" for n in (
    "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7",
    "fc8")] + ["Logits"]

# research/slim's code: the classifiers' variables (299 px: the aux kernel is 5x5)
CLASSIFIERS = {
    "inception_v4": [
        ("InceptionV4/AuxLogits/Conv2d_1b_1x1/weights", (1, 1, 1024, 128)),
        ("InceptionV4/AuxLogits/Conv2d_2a/weights", (5, 5, 128, 768)),
        ("InceptionV4/AuxLogits/Aux_logits/weights", (768, 1001)),
        ("InceptionV4/AuxLogits/Aux_logits/biases", (1001,)),
        ("InceptionV4/Logits/Logits/weights", (1536, 1001)),
        ("InceptionV4/Logits/Logits/biases", (1001,))],
    "inception_resnet_v2": [
        ("InceptionResnetV2/AuxLogits/Conv2d_1b_1x1/weights", (1, 1, 1088, 128)),
        ("InceptionResnetV2/AuxLogits/Conv2d_2a_5x5/weights", (5, 5, 128, 768)),
        ("InceptionResnetV2/AuxLogits/Logits/weights", (768, 1001)),
        ("InceptionResnetV2/AuxLogits/Logits/biases", (1001,)),
        ("InceptionResnetV2/Logits/Logits/weights", (1536, 1001)),
        ("InceptionResnetV2/Logits/Logits/biases", (1001,))],
}
# convolutions in research/slim's inception_v4.py: stem 3, Mixed_3a 1, 4a 6, 5a 1,
# 4 Inception-A x 7, Reduction-A 4, 7 Inception-B x 10, Reduction-B 6, 3 Inception-C x 10
V4_CONVS = 3 + 1 + 6 + 1 + 4 * 7 + 4 + 7 * 10 + 6 + 3 * 10


def _in(scopes, name):
    return any(compile_pattern(s).matches(name) for s in scopes)


def _initializer_ops(tf, variable):
    """The op types that compute a variable's initial value, scalar constants as (Const,
    value): the initialiser's kind and parameters (stddev, bias value)."""
    types, todo = set(), [variable.initial_value.op]
    while todo:
        op = todo.pop()
        value = tf.make_ndarray(op.get_attr("value")) if op.type == "Const" else None
        types.add(("Const", value.item()) if value is not None and value.ndim == 0
                  else op.type)
        todo.extend(t.op for t in op.inputs)
    return types


def _collect(tf, build, size, batch=1, save=None):
    """Build in a fresh graph on [batch, size, size, 3] images: variables (name, shape, dtype,
    trainable), end point shapes without the batch, logits shape, decayed names, initializer
    op types per variable, the graph; the initialized variables saved to `save`."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        logits, end_points = build(tf.placeholder(tf.float32, [batch, size, size, 3]))
        trainable = set(tf.trainable_variables())
        variables = tf.global_variables()
        facts = dict(
            variables=[(v.op.name, tuple(v.shape.as_list()), v.dtype.base_dtype.name,
                        v in trainable) for v in variables],
            end_points={k: t.shape.as_list()[1:] for k, t in end_points.items()},
            logits=logits.shape.as_list(), decayed=decayed(tf.get_default_graph()), graph=graph,
            initializers={v.op.name: _initializer_ops(tf, v) for v in variables})
        if save:
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                facts["checkpoint"] = tf.train.Saver().save(sess, str(save),
                                                            write_meta_graph=False)
    return facts


@pytest.fixture(scope="module")
def nets(tf):
    from ckptkit.train import nets
    return nets


@pytest.fixture(scope="module")
def keep(nets, tf, tmp_path_factory):
    """keep(name): the net with its own classifier at its image size (cached), saved as a
    checkpoint (facts["checkpoint"]): the published checkpoint's variables."""
    cache = {}

    def get(name):
        if name not in cache:
            record = get_net(name)
            prefix = tmp_path_factory.mktemp(name) / f"{name}.ckpt"
            cache[name] = _collect(
                tf, lambda images: nets.build(name, images, record.num_classes, head="keep"),
                record.image_size, save=prefix)
        return cache[name]
    return get


# --- the published facts -------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_variables_match_the_published_listing(keep, name):
    listing = LISTINGS / f"{name}.json"
    if not listing.is_file():
        pytest.skip(f"no published variable listing of {name} in {LISTINGS} (its README: none "
                    "was found); the other tests check public facts instead")
    scope = get_net(name).scope + "/"
    published = {(n, tuple(s or ()), d) for n, s, d in json.loads(listing.read_text())["variables"]
                 if n.startswith(scope) and "ExponentialMovingAverage" not in n}
    assert {v[:3] for v in keep(name)["variables"]} == published


@pytest.mark.parametrize("name, expected", [("inception_v4", V4_END_POINTS),
                                            ("inception_resnet_v2", IRV2_END_POINTS)])
def test_end_points_are_research_slims(keep, name, expected):
    assert keep(name)["end_points"] == expected
    assert keep(name)["logits"] == [1, 1001]


@pytest.mark.parametrize("name, total", [("inception_v4", 42679816),
                                         ("inception_resnet_v2", 55843464)])
def test_parameter_totals_of_the_pytorch_ports(keep, name, total):
    """imgclsmob's totals: trainable tensors without AuxLogits, a gamma per batch-norm channel,
    the Logits layer for 1000 classes instead of 1001."""
    variables = keep(name)["variables"]
    size = {n: int(np.prod(s)) for n, s, _, _ in variables}
    scope = get_net(name).scope
    counted = [n for n, _, _, t in variables if t and not _in([f"{scope}/AuxLogits"], n)]
    gammas = sum(size[n] for n in size
                 if n.endswith("/moving_mean") and not _in([f"{scope}/AuxLogits"], n))
    assert not [n for n in size if n.endswith("/gamma")]
    assert sum(size[n] for n in counted) + gammas - 1536 - 1 == total


def test_inception_resnet_v2_backbone_is_keras(keep):
    """Keras' InceptionResNetV2 without its top: 55,873,736 - 1,537,000 parameters (moving
    statistics included) in 898 - 2 weights."""
    backbone = [v for v in keep("inception_resnet_v2")["variables"]
                if not _in(get_net("inception_resnet_v2").classifier_scopes, v[0])]
    assert len(backbone) == 896
    assert sum(int(np.prod(v[1])) for v in backbone) == 55873736 - 1537000


@pytest.mark.parametrize("name", INCEPTIONS)
def test_classifiers_and_variable_count(keep, name):
    record = get_net(name)
    variables = keep(name)["variables"]
    classifier = [v for v in variables if _in(record.classifier_scopes, v[0])]
    assert [(n, s) for n, s, _, _ in classifier if n.rpartition("/")[2] in
            ("weights", "biases")] == CLASSIFIERS[name]
    # the two aux convolutions have batch norm (beta, moving mean and variance), no bias
    assert len(classifier) == 2 * 4 + 2 * 2
    backbone = len(variables) - len(classifier)
    assert backbone == (V4_CONVS * 4 if name == "inception_v4" else 896)
    assert all(d == "float32" for _, _, d, _ in variables)
    assert {n for n, _, _, t in variables if not t} == {
        n for n, _, _, _ in variables if "/moving_" in n}


@pytest.mark.parametrize("name, conv_init", [("inception_v4", "TruncatedNormal"),
                                             ("inception_resnet_v2", "RandomUniform")])
def test_arg_scopes_are_research_slims(tf, nets, keep, name, conv_init):
    """inception_utils.inception_arg_scope (v4): He-initialised convolutions, L2 4e-5 on
    weights; inception_resnet_v2_arg_scope: tf_slim's default Glorot (uniform) initialiser,
    L2 4e-5 on weights and biases; both: batch norm decay 0.9997, epsilon 0.001, no gamma;
    fully connected layers Glorot-initialised, without batch norm."""
    from ckptkit.tfcompat import slim
    from ckptkit.train.heads import resolve

    facts = keep(name)
    scope = get_net(name).scope
    inits = facts["initializers"]
    assert conv_init in inits[f"{scope}/Conv2d_1a_3x3/weights"]
    assert "RandomUniform" in inits[f"{scope}/Logits/Logits/weights"]
    names = [v[0] for v in facts["variables"]]
    expected = {n for n in names if n.endswith("/weights")}
    if name == "inception_resnet_v2":
        expected |= {n for n in names if n.endswith("/biases")}
    assert facts["decayed"] == expected
    with slim.arg_scope(resolve(get_net(name).arg_scope)()):
        conv = slim.current_arg_scope()[slim.arg_scope_func_key(slim.conv2d)]
    assert {k: conv["normalizer_params"][k] for k in ("decay", "epsilon")} == {
        "decay": 0.9997, "epsilon": 0.001}
    assert not conv["normalizer_params"].get("scale")
    with tf.Graph().as_default(), tf.Session() as sess:
        assert sess.run(conv["weights_regularizer"](tf.ones([2]))) == pytest.approx(4e-5)


def test_inception_resnet_v2_residual_scales(keep):
    """10 block35 (scale 0.17), 20 block17 (0.10) and 9 block8 (0.20) with ReLU, then Block8
    unscaled without ReLU, then Conv2d_7b_1x1 with batch norm and ReLU
    (research/slim inception_resnet_v2.py)."""
    graph = keep("inception_resnet_v2")["graph"]
    ops = graph.get_operations()
    expected = {**{f"Repeat/block35_{i}": 0.17 for i in range(1, 11)},
                **{f"Repeat_1/block17_{i}": 0.10 for i in range(1, 21)},
                **{f"Repeat_2/block8_{i}": 0.20 for i in range(1, 10)}, "Block8": 1.0}
    scales, relus = {}, set()
    for op in ops:
        block, _, last = op.name.removeprefix("InceptionResnetV2/").rpartition("/")
        if block in expected and op.type == "Mul":
            const = [t for t in op.inputs if t.op.type == "Const"]
            scales[block] = float(const[0].op.get_attr("value").float_val[0])
        if block in expected and op.type == "Relu":
            relus.add(block)
    assert scales == pytest.approx(expected)
    assert relus == set(expected) - {"Block8"}
    names = {op.name for op in ops}
    assert {"InceptionResnetV2/Conv2d_7b_1x1/Relu",
            "InceptionResnetV2/Conv2d_7b_1x1/BatchNorm/FusedBatchNormV3"} <= names
    variables = {v[0]: v[1] for v in keep("inception_resnet_v2")["variables"]}
    assert variables["InceptionResnetV2/Conv2d_7b_1x1/weights"] == (1, 1, 2080, 1536)
    assert variables["InceptionResnetV2/Block8/Conv2d_1x1/biases"] == (2080,)


def test_overfeat_is_tf_slims(tf, keep):
    """tf_slim 1.1's overfeat under its arg scope: the same variables (names, shapes, dtypes,
    trainable), weight decay and initialisers; end points as overfeat_test.py names them."""
    from ckptkit.tfcompat import slim
    from tf_slim.nets import overfeat

    def build(images):
        with slim.arg_scope(overfeat.overfeat_arg_scope()):
            return overfeat.overfeat(images, 1000)
    theirs, ours = _collect(tf, build, 231), keep("overfeat")
    assert ours["variables"] == theirs["variables"]
    assert len(ours["variables"]) == 16
    assert ours["decayed"] == theirs["decayed"]
    assert ours["initializers"] == theirs["initializers"]
    assert sorted(ours["end_points"]) == sorted(OVERFEAT_END_POINTS)
    assert ours["logits"] == [1, 1000]
    assert ("overfeat/fc8/weights", (1, 1, 4096, 1000), "float32", True) in ours["variables"]


@pytest.mark.parametrize("name", NAMES)
def test_new_head_replaces_the_classifier(tf, nets, keep, name):
    """A 5-class new head (the variables `plan --num-classes 5` plans: built once, at the net's
    size): no variable of the original classifier, a 1x1-convolution Logits on the pooled
    features, the backbone's variables unchanged. Its logits are [batch, 5] on the smallest
    images the net takes in the fine-tuning run (Inception-v4, 75 px) and here (OverFeat)."""
    record = get_net(name)
    variables = [(v.name, v.shape, v.dtype, v.trainable) for v in nets.model_variables(
        name, 5, head="new", head_scope="Logits", hidden=())]
    backbone = [v for v in keep(name)["variables"] if not _in(record.classifier_scopes, v[0])]
    assert variables == backbone + [
        ("Logits/weights", (1, 1, FEATURES[name], 5), "float32", True),
        ("Logits/biases", (5,), "float32", True)]
    if name == "overfeat":
        facts = _collect(tf, lambda images: nets.build(name, images, 5), 231, batch=2)
        assert facts["logits"] == [2, 5]
        assert facts["end_points"]["PreLogits"] == [1, 1, 4096]


# --- planning and fine-tuning from a checkpoint --------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_plan_restores_a_checkpoint_of_the_net(ckptkit, keep, name):
    facts = keep(name)
    names = [v[0] for v in facts["variables"]]
    code, out, err = ckptkit("plan", facts["checkpoint"], "--net", name, "--keep-head",
                             "--strict", "--json")
    assert (code, err) == (0, "")
    plan = json.loads(out)
    assert sorted(plan["restore"]) == sorted(names)
    assert plan["missing"] == [] and plan["unused"] == []
    code, out, err = ckptkit("plan", facts["checkpoint"], "--net", name, "--num-classes", "5",
                             "--json")
    record = get_net(name)
    assert code == 0 and err.startswith(f"note: {name}'s classifier ("), err
    assert err.partition(" (")[2].partition(")")[0] == ", ".join(record.classifier_scopes)
    plan = json.loads(out)
    classifier = [n for n in names if _in(record.classifier_scopes, n)]
    assert sorted(plan["restore"]) == sorted(set(names) - set(classifier))
    assert plan["missing"] == ["Logits/weights", "Logits/biases"]
    assert sorted(plan["excluded_tensors"]) == sorted(classifier) and plan["unused"] == []


@pytest.fixture(scope="module")
def runs(tf, keep, tmp_path_factory):
    """`ckptkit finetune` of inception_v4 from its checkpoint on 75 px images of 5 digits, in
    features and finetune mode: {mode: (exit code, stdout, stderr, train dir)}, "data"."""
    from ckptkit.cli import cli

    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    digits_folder(data / "train", range(5), 4, size=32, rgb=True)
    digits_folder(data / "val", range(5), 2, offset=4, size=32, rgb=True)
    done = {}
    for mode in ("features", "finetune"):
        args = ["finetune", "--net", "inception_v4", "--checkpoint",
                keep("inception_v4")["checkpoint"], "--data", data, "--mode", mode,
                "--epochs", "1", "--batch-size", "4", "--image-size", "75", "--optimizer",
                "sgd", "--no-augment", "--cache-dir", root / "cache", "--train-dir",
                root / mode, "--json"]
        result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="ckptkit")
        done[mode] = result.exit_code, result.stdout, result.stderr, root / mode
    done["data"] = data
    return done


def _backbone(keep):
    record = get_net("inception_v4")
    return sorted(v[0] for v in keep("inception_v4")["variables"]
                  if not _in(record.classifier_scopes, v[0]))


def test_features_run_restores_and_keeps_the_whole_backbone(tf, keep, runs):
    code, out, err, run = runs["features"]
    assert code == 0, err[-3000:]
    backbone = _backbone(keep)
    plan = json.loads((run / "plan.json").read_text())
    assert sorted(plan["restore"]) == backbone and len(backbone) == V4_CONVS * 4
    assert plan["trainable"] == ["Logits/weights", "Logits/biases"]
    before = values(tf, keep("inception_v4")["checkpoint"])
    after = values(tf, json.loads(out)["checkpoint"])
    for name in backbone:               # moving statistics included
        assert np.array_equal(after[name], before[name]), name
    assert after["Logits/weights"].shape == (1, 1, 1536, 5)


def test_finetune_run_restores_and_trains_the_backbone(tf, keep, runs):
    code, out, err, run = runs["finetune"]
    assert code == 0, err[-3000:]
    backbone = _backbone(keep)
    plan = json.loads((run / "plan.json").read_text())
    assert sorted(plan["restore"]) == backbone
    assert set(plan["trainable"]) >= {n for n in backbone if "/moving_" not in n}
    before = values(tf, keep("inception_v4")["checkpoint"])
    after = values(tf, json.loads(out)["checkpoint"])
    assert not np.array_equal(after["InceptionV4/Conv2d_1a_3x3/weights"],
                              before["InceptionV4/Conv2d_1a_3x3/weights"])


def test_eval_predict_and_export_a_run(ckptkit, runs, tmp_path):
    *_, run = runs["finetune"]
    images = sorted((runs["data"] / "val" / "3").glob("*.png"))
    result, predicted, info = serve(ckptkit, run, images, tmp_path / "exported")
    assert result["count"] == 10 and result["labels"] == list("01234")
    assert np.shape(result["confusion"]) == (5, 5)
    assert [item["path"] for item in predicted] == [str(p) for p in images]
    assert info["net"] == "inception_v4" and info["labels"] == list("01234")
