"""MobileNet v1, v2 and v3 (ckptkit/train/architectures/mobilenet_v*.py) against published
facts: mobilenet_v2_1.0_224's real variable listing (/work/shared/nets), the parameter counts
of research/slim's checkpoint tables, the end-point shapes research/slim's own tests assert;
then the plan restores a keep-head checkpoint whole, and one net runs finetune, eval, predict
and export end to end.

Sources (tensorflow/models):
- V1_PY: research/slim/nets/mobilenet_v1.py (commit ebafe28): per-layer conv parameters,
  total 3,185,088 at width 1.0 and 1,800,144 at 0.75.
- V1_TEST: research/slim/nets/mobilenet_v1_test.py (commit 3617973): end-point shapes at
  224 (1.0) and 128 (0.75), 3,217,920 model variables of the 1.0 base (built with slim's
  default batch norm: beta and moving statistics, no gamma), 4x4 final map for 112 inputs.
- V1_MD: research/slim/nets/mobilenet_v1.md (commit 10cf1c0): Million Parameters 4.24,
  2.59, 1.34, 0.47 at widths 1.0, 0.75, 0.5, 0.25 (all four match a count like V1_TEST's,
  without gamma; with it they would be 4.25, 2.60, 1.34, 0.48).
- V2_MD: research/slim/nets/mobilenet/README.md (commit 0ba83cf): Parameters (M) of the v2
  checkpoints 6.06, 5.34, 3.47, 2.61, 1.95, 1.66 at 1.4, 1.3, 1.0, 0.75, 0.5, 0.35 (weights
  and biases, no batch-norm variables).
- V2_TEST: research/slim/nets/mobilenet/mobilenet_v2_test.py (commit f09d622): layer_18 is
  7x7 at 224 and 3x3 at 96.
- V3_TEST: research/slim/nets/mobilenet/mobilenet_v3_test.py (commit 03cdc5f): large:
  layer_17 [1, 7, 7, 960], layer_19 [1, 1, 1, 1280], logits [1, 1001]; small: layer_15
  [1, 1, 1, 1024].
- V3_PY, CONV_BLOCKS: research/slim/nets/mobilenet/mobilenet_v3.py (commit 03cdc5f) and
  conv_blocks.py: the layer lists the variable counts below are derived from; the
  squeeze-and-excite reduces to make_divisible(expanded / 4) channels with biases.

Building a graph costs 1-5 s here, so by default one net of each family gets the new head
and the plan (the code paths do not depend on the width); CKPTKIT_TEST_ALL_NETS=1 does it for
every net.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.runs import finetune_modes, serve, values

from ckptkit.scopes import compile_pattern
from ckptkit.zoo.nets import get_net

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parent.parent
LISTINGS = ROOT.parent / "shared" / "nets"
ALL = os.environ.get("CKPTKIT_TEST_ALL_NETS") == "1"

V1 = {"mobilenet_v1": 1.0, "mobilenet_v1_075": 0.75, "mobilenet_v1_050": 0.5,
      "mobilenet_v1_025": 0.25}
V2 = {"mobilenet_v2_140": 1.4, "mobilenet_v2_130": 1.3, "mobilenet_v2": 1.0,
      "mobilenet_v2_075": 0.75, "mobilenet_v2_050": 0.5, "mobilenet_v2_035": 0.35}
V3 = ["mobilenet_v3_large", "mobilenet_v3_small"]
NETS = [*V1, *V2, *V3]
# input sizes of the builds where the sources state end points for other sizes than the
# defaults (keep head: 224, new head: 32, the smallest the stride-32 nets take whole)
SIZES = {("mobilenet_v1_075", "keep"): 128, ("mobilenet_v1_025", "keep"): 112,
         ("mobilenet_v2", "new"): 96}
CHEAP = ["mobilenet_v1_025", "mobilenet_v2", "mobilenet_v3_small"]


@pytest.fixture(scope="module")
def built(tf, tmp_path_factory):
    """built(name, head) -> the build's variables [(name, shape, dtype)], logits shape,
    end-point shapes and graph; keep-head builds have 1001 classes, new-head builds 5."""
    from types import SimpleNamespace

    from ckptkit.train import nets
    cache = {}

    def get(name, head="keep"):
        if (name, head) not in cache:
            size = SIZES.get((name, head), 224 if head == "keep" else 32)
            graph = tf.Graph()
            with graph.as_default():
                tf.set_random_seed(0)
                images = tf.placeholder(tf.float32, [1, size, size, 3])
                logits, end_points = nets.build(name, images, 1001 if head == "keep" else 5,
                                                head=head)
                cache[name, head] = SimpleNamespace(
                    variables=[(v.op.name, v.shape.as_list(), v.dtype.base_dtype.name)
                               for v in tf.global_variables()],
                    logits=logits.shape.as_list(),
                    end_points={k: v.shape.as_list() for k, v in end_points.items()},
                    graph=graph)
        return cache[name, head]
    return get


@pytest.fixture(scope="module")
def checkpoint(tf, built, tmp_path_factory):
    """checkpoint(name) -> the prefix of a checkpoint of the keep-head build's initialised
    variables: what a published checkpoint holds, with random values."""
    folder, saved = tmp_path_factory.mktemp("mobilenet"), {}

    def get(name):
        if name not in saved:
            saved[name] = folder / f"{name}.ckpt"
            with built(name).graph.as_default(), tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                tf.train.Saver().save(sess, str(saved[name]), write_meta_graph=False)
        return saved[name]
    return get


def _size(variables, keep=lambda name: True):
    return sum(int(np.prod(shape)) for name, shape, _ in variables if keep(name))


def _classifier(name, depth):
    scope = get_net(name).scope
    return [(f"{scope}/Logits/Conv2d_1c_1x1/weights", [1, 1, depth, 1001], "float32"),
            (f"{scope}/Logits/Conv2d_1c_1x1/biases", [1001], "float32")]


def _in_classifier(name, variable):
    return any(compile_pattern(s).matches(variable)
               for s in get_net(name).classifier_scopes)


# --- v1 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, millions", [
    ("mobilenet_v1", 4.24), ("mobilenet_v1_075", 2.59), ("mobilenet_v1_050", 1.34),
    ("mobilenet_v1_025", 0.47)])
def test_v1_parameters_and_classifier(built, name, millions):
    variables = built(name).variables
    # V1_MD's count leaves gamma out (see V1_TEST); 27 conv layers of 5 variables (weights,
    # batch norm's 4), then the classifier's 2 (V1_PY)
    assert round(_size(variables, lambda n: not n.endswith("/gamma")) / 1e6, 2) == millions
    assert len(variables) == 137
    assert variables[-2:] == _classifier(name, int(1024 * V1[name]))
    assert {dtype for *_, dtype in variables} == {"float32"}


def test_v1_conv_parameters_and_base_size(built):
    """V1_PY's totals (conv and depthwise weights) and V1_TEST's base size."""
    def conv(variables):
        return _size(variables, lambda n: "/BatchNorm/" not in n and "/Logits/" not in n)
    full = built("mobilenet_v1").variables
    assert conv(full) == 3185088
    assert conv(built("mobilenet_v1_075").variables) == 1800144
    assert _size(full, lambda n: "/Logits/" not in n and not n.endswith("/gamma")) == 3217920


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v1_075"])
def test_v1_end_points(built, name):
    """V1_TEST: depths and map sizes at 224 (1.0) and 128 (0.75)."""
    size, m = SIZES.get((name, "keep"), 224), V1[name]
    expected = {"Conv2d_0": [size // 2, 32]}
    maps = [size // 2, size // 4, size // 4, size // 8, size // 8, size // 16, *[size // 16] * 5,
            size // 32, size // 32]
    depths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    for i, spatial in enumerate(maps, 1):
        expected[f"Conv2d_{i}_depthwise"] = [spatial, depths[i - 1]]
        expected[f"Conv2d_{i}_pointwise"] = [spatial, depths[i]]
    end_points = built(name).end_points
    for key, (spatial, depth) in expected.items():
        assert end_points[key] == [1, spatial, spatial, int(depth * m)], key
    assert built(name).logits == [1, 1001]


def test_v1_half_size_input_pools_its_smaller_map(built):
    """V1_TEST: a 112 input ends in a 4x4 map, still one row of logits."""
    build = built("mobilenet_v1_025")
    assert build.end_points["Conv2d_13_pointwise"] == [1, 4, 4, 256]
    assert build.end_points["AvgPool_1a"] == [1, 1, 1, 256]
    assert build.logits == [1, 1001]


# --- v2 --------------------------------------------------------------------------------------

def test_v2_is_the_published_listing(built):
    listing = LISTINGS / "mobilenet_v2.json"
    if not listing.is_file():
        pytest.skip(f"published variable listings not found at {LISTINGS}")
    published = json.loads(listing.read_text())
    # the listing's logits weights are null (the file was absent from its source); their
    # shape by the architecture is [1, 1, 1280, 1001] (/work/shared/nets/README.md)
    expected = sorted((name, shape or [1, 1, 1280, 1001], dtype or "float32")
                      for name, shape, dtype in published["variables"])
    assert published["count"] == len(expected) == 262
    assert sorted(map(tuple, built("mobilenet_v2").variables)) == expected


@pytest.mark.parametrize("name, millions, last", [
    ("mobilenet_v2_140", 6.06, 1792), ("mobilenet_v2_130", 5.34, 1664),
    ("mobilenet_v2", 3.47, 1280), ("mobilenet_v2_075", 2.61, 1280),
    ("mobilenet_v2_050", 1.95, 1280), ("mobilenet_v2_035", 1.66, 1280)])
def test_v2_widths(built, name, millions, last):
    """V2_MD's parameter counts; the last layer, 1280 x width rounded to 8, keeps 1280 below
    width 1 (the paper, section 4)."""
    variables = built(name).variables
    assert round(_size(variables, lambda n: "/BatchNorm/" not in n) / 1e6, 2) == millions
    assert len(variables) == 262          # 52 conv layers of 5 variables, the classifier's 2
    assert variables[-2:] == _classifier(name, last)


def test_v2_end_point_sizes(built):
    """V2_TEST: layer_18 (the last block) is 7x7 at 224 and 3x3 at 96 (the new-head build)."""
    assert built("mobilenet_v2").end_points["layer_18"] == [1, 7, 7, 320]
    assert built("mobilenet_v2", "new").end_points["layer_18"] == [1, 3, 3, 320]
    assert built("mobilenet_v2").logits == [1, 1001]


# --- v3 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, count, conv_1, features, end_points, squeeze", [
    ("mobilenet_v3_large", 266, 960, 1280,
     {"layer_17": [1, 7, 7, 960], "layer_19": [1, 1, 1, 1280]},
     ("expanded_conv_3", 72, 24)),
    ("mobilenet_v3_small", 210, 576, 1024, {"layer_15": [1, 1, 1, 1024]},
     ("expanded_conv", 16, 8)),
])
def test_v3(built, name, count, conv_1, features, end_points, squeeze):
    build = built(name)
    assert {key: build.end_points[key] for key in end_points} == end_points     # V3_TEST
    assert build.logits == [1, 1001]
    # V3_PY: Conv, the blocks' expand (not in the first block), depthwise and project, and
    # Conv_1 with batch norm, 5 variables each; 2 per squeeze-and-excite convolution (8
    # blocks of large, 9 of small); Conv_2 and the classifier 2 each
    assert len(build.variables) == count
    assert build.variables[-4:] == [
        ("MobilenetV3/Conv_2/weights", [1, 1, conv_1, features], "float32"),
        ("MobilenetV3/Conv_2/biases", [features], "float32")] + _classifier(name, features)
    block, expanded, inner = squeeze           # CONV_BLOCKS: make_divisible(expanded / 4)
    scope = f"MobilenetV3/{block}/squeeze_excite"
    assert [v for v in build.variables if v[0].startswith(scope + "/")] == [
        (f"{scope}/Conv/weights", [1, 1, expanded, inner], "float32"),
        (f"{scope}/Conv/biases", [inner], "float32"),
        (f"{scope}/Conv_1/weights", [1, 1, inner, expanded], "float32"),
        (f"{scope}/Conv_1/biases", [expanded], "float32")]


# --- new head, plan --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NETS if ALL else CHEAP)
def test_new_head_replaces_the_classifier(built, name):
    keep, new = built(name), built(name, "new")
    depth = keep.variables[-2][1][2]
    assert new.variables == [v for v in keep.variables if not _in_classifier(name, v[0])] + [
        ("Logits/weights", [1, 1, depth, 5], "float32"), ("Logits/biases", [5], "float32")]
    assert new.logits == [1, 5]
    assert new.end_points["PreLogits"] == [1, 1, 1, depth]


@pytest.mark.parametrize("name", ["mobilenet_v1_025", "mobilenet_v3_small"])
def test_every_batch_norm_can_be_frozen(tf, name):
    """Batch norm comes from the convolutions' normalizer (the arg scope), so a net frozen by
    its scope updates no statistics (nets.build fails on a batch norm it cannot reach); v3
    covers the blocks v2 shares."""
    from ckptkit.train import nets

    with tf.Graph().as_default():
        nets.build(name, tf.placeholder(tf.float32, [1, 32, 32, 3]), 5,
                   frozen=[get_net(name).scope])
        assert tf.get_collection(tf.GraphKeys.UPDATE_OPS) == []


@pytest.mark.parametrize("name", NETS if ALL else CHEAP)
def test_plan_restores_a_keep_head_checkpoint(ckptkit, built, checkpoint, name):
    names = [n for n, *_ in built(name).variables]
    code, out, err = ckptkit("plan", checkpoint(name), "--net", name, "--keep-head", "--strict",
                             "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert sorted(plan["restore"]) == sorted(names)
    assert (plan["missing"], plan["mismatched"], plan["unused"]) == ([], [], [])
    code, out, err = ckptkit("plan", checkpoint(name), "--net", name, "--num-classes", "5",
                             "--json")
    assert code == 0, err
    plan = json.loads(out)
    classifier = [n for n in names if _in_classifier(name, n)]
    assert len(classifier) == 2
    assert sorted(plan["restore"]) == sorted(set(names) - set(classifier))
    assert (plan["missing"], plan["mismatched"]) == (["Logits/weights", "Logits/biases"], [])


# --- end to end ------------------------------------------------------------------------------

E2E = "mobilenet_v1_025"      # the cheapest of the family; 32x32 is its whole 1x1 feature map


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Digits 1 and 7 as 32x32 RGB images: 8 training and 4 validation images each."""
    from helpers.images import digits_folder

    root = tmp_path_factory.mktemp("digits")
    digits_folder(root / "train", [1, 7], 8, size=32, rgb=True)
    digits_folder(root / "val", [1, 7], 4, offset=8, size=32, rgb=True)
    return root


@pytest.fixture(scope="module")
def runs(checkpoint, data, tmp_path_factory):
    """One epoch of E2E from its keep-head checkpoint in features and in finetune mode."""
    return finetune_modes(E2E, checkpoint(E2E), data, tmp_path_factory.mktemp("runs"),
                          {"features": [], "finetune": []})


@pytest.mark.parametrize("mode", ["features", "finetune"])
def test_finetune_restores_the_whole_backbone(tf, built, checkpoint, runs, mode):
    code, out, err, run = runs[mode]
    assert code == 0, err
    backbone = [n for n, *_ in built(E2E).variables if not _in_classifier(E2E, n)]
    assert sorted(json.loads((run / "plan.json").read_text())["restore"]) == sorted(backbone)
    before, after = values(tf, checkpoint(E2E)), values(tf, json.loads(out)["checkpoint"])
    changed = [n for n in backbone if not np.array_equal(after[n], before[n])]
    # features mode trains the head on cached features: the backbone, batch-norm statistics
    # included, comes out bit-identical; finetune mode trains it
    assert not changed if mode == "features" else changed
    assert after["Logits/weights"].shape == (1, 1, 256, 2)


def test_eval_predict_and_export_the_finetuned_run(ckptkit, runs, data, tmp_path):
    *_, run = runs["finetune"]
    images = sorted((data / "val" / "7").glob("*.png"))
    result, predicted, info = serve(ckptkit, run, images, tmp_path / "exported")
    assert (result["count"], result["labels"]) == (8, ["1", "7"])
    assert [item["path"] for item in predicted] == [str(p) for p in images]
    assert (info["net"], info["labels"]) == (E2E, ["1", "7"])
