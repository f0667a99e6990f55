"""NASNet-A Mobile and PNASNet-5 Mobile (ckptkit/train/architectures/nasnet.py) against
published facts, a new head kept out of their top-level scopes (they have no enclosing
one), then the plan restores a keep-head checkpoint whole, and PNASNet runs finetune
(features mode, and finetune mode with the lower cells frozen), eval, predict and export end
to end.

No listing of the published checkpoints' variables exists (/work/shared/nets has none), so
the builds are checked against what these sources state (tensorflow/models unless named):
- NASNET_TEST: research/slim/nets/nasnet/nasnet_test.py (commit 52e2952),
  testAllEndPointsShapesMobileModel: its 19 end points and their shapes at 224x224.
- PNASNET_TEST: research/slim/nets/nasnet/pnasnet_test.py (commit 03cdc5f),
  testAllEndPointsShapesMobileModel: its 14 end points and their shapes at 224x224;
  testBuildNonExistingLayerMobileModel: `cell_stem_0/1x1/weights` exists,
  `cell_stem_1/comb_iter_0/right/1x1/weights` does not.
- NASNET_MD: research/slim/nets/nasnet/README.md (commit 3aa635b): NASNet-A_Mobile_224 has
  5.3 million parameters (ours: 5,291,035 trainable outside the auxiliary head).
- KERAS: keras-team/keras-io templates/api/applications/index.md (commit 01b6d6c): Keras'
  NASNetMobile (the same net with 1000 classes and no auxiliary head) has 5,326,716
  parameters, batch-norm statistics included; ours without aux_7, with 1000 classes, has
  exactly as many.
- PNASNet-5 Mobile's 5.1 million parameters: Liu et al., Progressive Neural Architecture
  Search (arXiv:1712.00559), ImageNet mobile-setting results (ours: 5,065,568 trainable
  outside the auxiliary head).
- NASNET_PY, PNASNET_PY, UTILS_PY: research/slim/nets/nasnet/nasnet.py and pnasnet.py
  (commit 03cdc5f), nasnet_utils.py (commit 08eebbc; its later versions, as vendored copies
  show, give an odd width's extra channel to `path2_conv`, which PNASNET_TEST's missing 1x1
  requires): the layers the classifier shapes and variable counts below are counted from by
  hand. A cell holds its 1x1 (5 variables: the
  weights and a batch norm's 4), 12 per separable stack (two depthwise and two pointwise
  weights, two batch norms), 5 for `prev_1x1` or 6 for a factorized reduction of `prev`,
  and 5 per 1x1 that a strided `none` or a pool on conv0's 32 channels needs. NASNet: conv0
  5, stem cells 65 + 71, cells 71 + 70 * 3 per stage, reduction cells 70 each: 1124; PNASNet:
  conv0 5, cells 87, 88, 83, 82, 82, 87, 83, 82, 87, 83, 82: 931; both: aux head 12, final
  layer 2. Batch norm epsilon 1e-3, L2 decay on the weights of every convolution and fully
  connected layer (nasnet_mobile_arg_scope).

A build of these nets (about 1,000 variables, 12,000 ops) takes 15-30 s here, so each is
built once per head: the build `ckptkit plan` makes itself (nets.model_variables, remembered
per process), captured with its end points, so the plans below reuse it.
"""
import json
import re
from unittest import mock

import numpy as np
import pytest
from helpers.runs import decayed, finetune_modes, serve, values

from ckptkit.scopes import compile_pattern
from ckptkit.zoo.nets import get_net

pytestmark = pytest.mark.tf

NETS = ["nasnet_mobile", "pnasnet_mobile"]
E2E = "pnasnet_mobile"      # the cheaper of the two; 32x32 pixels end in a 1x1 feature map


def _cells(*runs):
    """{"Cell_i": [1, size, size, depth]} for consecutive runs of (count, size, depth)."""
    shapes = [(size, depth) for count, size, depth in runs for _ in range(count)]
    return {f"Cell_{i}": [1, size, size, depth] for i, (size, depth) in enumerate(shapes)}


END_POINTS = {      # NASNET_TEST, PNASNET_TEST (batch 1 here)
    "nasnet_mobile": {"Stem": [1, 28, 28, 88], **_cells((4, 28, 264), (4, 14, 528),
                                                        (4, 7, 1056)),
                      "Reduction_Cell_0": [1, 14, 14, 352], "Reduction_Cell_1": [1, 7, 7, 704],
                      "global_pool": [1, 1056], "AuxLogits": [1, 1001], "Logits": [1, 1001],
                      "Predictions": [1, 1001]},
    "pnasnet_mobile": {"Stem": [1, 28, 28, 135], **_cells((3, 28, 270), (3, 14, 540),
                                                          (3, 7, 1080)),
                       "global_pool": [1, 1080], "AuxLogits": [1, 1001],
                       "Predictions": [1, 1001], "Logits": [1, 1001]},
}
# (variables, trainable, millions of trainable parameters outside the auxiliary head, the
# auxiliary head's cell, the channels it reads, the final layer's): NASNET_PY, PNASNET_PY,
# NASNET_MD, the PNASNet paper
FACTS = {"nasnet_mobile": (1138, 750, 5.3, 7, 528, 1056),
         "pnasnet_mobile": (945, 623, 5.1, 5, 540, 1080)}


def _classifier(name):
    """{variable: shape} of the auxiliary head and final_layer at 224x224 (NASNET_PY's
    _build_aux_head: 5x5/3 average pool, 1x1 `proj` to 128, a convolution over the whole
    4x4 map to 768, FC)."""
    *_, aux, width, depth = FACTS[name]
    head = f"aux_{aux}/aux_logits"
    shapes = {f"{head}/proj/weights": (1, 1, width, 128),
              f"{head}/Conv/weights": (4, 4, 128, 768), f"{head}/FC/weights": (768, 1001),
              f"{head}/FC/biases": (1001,),
              "final_layer/FC/weights": (depth, 1001), "final_layer/FC/biases": (1001,)}
    for bn, channels in (("aux_bn0", 128), ("aux_bn1", 768)):
        for part in ("beta", "gamma", "moving_mean", "moving_variance"):
            shapes[f"{head}/{bn}/{part}"] = (channels,)
    return shapes


def _in(scopes, name):
    return any(compile_pattern(s).matches(name) for s in scopes)


@pytest.fixture(scope="module")
def nets(tf):
    from ckptkit.train import nets
    return nets


@pytest.fixture(scope="module")
def built(nets):
    """built(name, head) -> (variables as (name, shape, dtype, trainable), logits, end points)
    of the 224x224 build with the net's own classifier ("keep") or a 5-class new head
    ("new"): nets.model_variables as `plan` calls it, with the graph it built."""
    nets._model_variables.cache_clear()         # so that the first call here builds
    cache, real = {}, nets.build

    def get(name, head):
        if (name, head) not in cache:
            graphs = []

            def build(*args, **kwargs):
                graphs.append(real(*args, **kwargs))
                return graphs[-1]
            # built here, not read from the list an earlier test stored on disk
            with mock.patch.object(nets, "build", build), \
                    mock.patch.object(nets, "_stored", lambda *args: None):
                variables = nets.model_variables(name, 1001 if head == "keep" else 5,
                                                 head=head, head_scope="Logits", hidden=())
            (logits, end_points), = graphs
            cache[name, head] = ([(v.name, v.shape, v.dtype, v.trainable) for v in variables],
                                 logits, end_points)
        return cache[name, head]
    return get


@pytest.fixture(scope="module")
def checkpoint(tf, built, tmp_path_factory):
    """checkpoint(name) -> prefix of a checkpoint of the keep-head build's variables as
    initialised (random weights, batch-norm statistics 0 and 1)."""
    found = {}

    def get(name):
        if name not in found:
            logits = built(name, "keep")[1]
            folder = tmp_path_factory.mktemp(name)
            with logits.graph.as_default(), tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                found[name] = tf.train.Saver().save(sess, str(folder / "model.ckpt"),
                                                    write_meta_graph=False)
        return found[name]
    return get


# --- the nets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NETS)
def test_keep_head_has_the_published_shapes_and_counts(built, name):
    variables, logits, end_points = built(name, "keep")
    count, trainable, millions, aux, *_ = FACTS[name]
    assert logits.shape.as_list() == [1, 1001]
    assert {k: v.shape.as_list() for k, v in end_points.items()} == END_POINTS[name]
    assert (len(variables), sum(v[3] for v in variables)) == (count, trainable)
    assert all(dtype == "float32" for _, _, dtype, _ in variables)
    record = get_net(name)
    classifier = {n: shape for n, shape, *_ in variables if _in(record.classifier_scopes, n)}
    assert classifier == _classifier(name)
    params = sum(int(np.prod(shape)) for n, shape, _, train in variables
                 if train and not n.startswith(f"aux_{aux}/"))
    assert round(params / 1e6, 1) == millions
    graph = logits.graph
    weights = {n for n, *_ in variables if n.rpartition("/")[2].endswith("weights")}
    assert decayed(graph) == weights
    epsilons = [op.get_attr("epsilon") for op in graph.get_operations()
                if op.type.startswith("FusedBatchNorm")]
    assert epsilons and all(e == pytest.approx(1e-3) for e in epsilons)


def test_nasnet_mobile_has_exactly_the_parameters_of_keras_port(built):
    """KERAS: everything outside aux_7, with a 1000-class final layer."""
    variables = built("nasnet_mobile", "keep")[0]
    total = sum(int(np.prod(shape)) for n, shape, *_ in variables if not n.startswith("aux_7/"))
    assert total - (1056 + 1) == 5_326_716


def test_pnasnet_builds_no_needless_1x1(built):
    """PNASNET_TEST: the stem's odd widths (13, 27) leave no 1x1 convolution to mend."""
    names = {n for n, *_ in built("pnasnet_mobile", "keep")[0]}
    assert "cell_stem_0/1x1/weights" in names
    assert "cell_stem_1/comb_iter_0/right/1x1/weights" not in names


@pytest.mark.parametrize("name", NETS)
def test_new_head_replaces_final_layer_and_aux_head(built, name):
    keep = built(name, "keep")[0]
    new, logits, end_points = built(name, "new")
    record = get_net(name)
    depth = FACTS[name][-1]
    assert logits.shape.as_list() == [1, 5]
    assert end_points["PreLogits"].shape.as_list() == [1, 7, 7, depth]
    assert "AuxLogits" not in end_points
    assert not [v for v in new if _in(record.classifier_scopes, v[0])]
    assert new[-2:] == [("Logits/weights", (1, 1, depth, 5), "float32", True),
                        ("Logits/biases", (5,), "float32", True)]
    assert sorted(new[:-2]) == sorted(v for v in keep if not _in(record.classifier_scopes, v[0]))


@pytest.mark.parametrize("scope, taken", [("cell_0", "cell_0/path1_conv/weights"),
                                          ("conv0/head", "conv0/weights")])
def test_a_new_head_cannot_share_a_top_level_scope_of_the_net(tf, nets, scope, taken):
    """Their variables are top-level: a head in cell_0 would add cell_0/weights beside the
    cell's own (and --train cell_0 would train both), one in conv0 failed inside TF."""
    from ckptkit.errors import CkptError

    top = scope.split("/")[0]
    message = (f"head scope '{scope}' must be a scope of its own: '{top}' is {E2E}'s "
               f"({taken}); e.g. 'Logits'")
    with tf.Graph().as_default(), pytest.raises(CkptError, match=f"^{re.escape(message)}$"):
        nets.build(E2E, tf.placeholder(tf.float32, [1, 32, 32, 3]), 5, head_scope=scope)


# --- plans and fine-tuning --------------------------------------------------------------------

@pytest.mark.parametrize("name", NETS)
def test_plan_restores_the_checkpoint_whole(ckptkit, built, checkpoint, name):
    names = sorted(v[0] for v in built(name, "keep")[0])
    classifier = sorted(_classifier(name))
    code, out, err = ckptkit("plan", checkpoint(name), "--net", name, "--keep-head", "--strict",
                             "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert sorted(plan["restore"]) == names
    assert plan["missing"] == plan["mismatched"] == plan["unused"] == plan["excluded"] == []
    code, out, err = ckptkit("plan", checkpoint(name), "--net", name, "--num-classes", "5",
                             "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert sorted(plan["restore"]) == sorted(set(names) - set(classifier))
    assert plan["missing"] == ["Logits/weights", "Logits/biases"]
    assert (sorted(plan["excluded_tensors"]), plan["unused"]) == (classifier, [])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Digits 1 and 7 as 32x32 RGB images: 8 training and 4 validation images each."""
    from helpers.images import digits_folder

    root = tmp_path_factory.mktemp("digits")
    digits_folder(root / "train", [1, 7], 8, size=32, rgb=True)
    digits_folder(root / "val", [1, 7], 4, offset=8, size=32, rgb=True)
    return root


TRAIN_FROM = "cell_7"       # finetune mode trains cell_7, cell_8 and the head


@pytest.fixture(scope="module")
def runs(checkpoint, data, tmp_path_factory):
    """One epoch of E2E from its keep-head checkpoint in features mode and in finetune mode
    from TRAIN_FROM."""
    return finetune_modes(E2E, checkpoint(E2E), data, tmp_path_factory.mktemp("runs"),
                          {"features": [], "finetune": ["--train-from", TRAIN_FROM]})


@pytest.mark.parametrize("mode", ["features", "finetune"])
def test_finetune_restores_the_backbone_and_keeps_what_it_froze(tf, built, checkpoint, runs,
                                                                 mode):
    code, out, err, run = runs[mode]
    assert code == 0, err
    record = get_net(E2E)
    backbone = [n for n, *_ in built(E2E, "keep")[0] if not _in(record.classifier_scopes, n)]
    assert sorted(json.loads((run / "plan.json").read_text())["restore"]) == sorted(backbone)
    before, after = values(tf, checkpoint(E2E)), values(tf, json.loads(out)["checkpoint"])
    changed = {n for n in backbone if not np.array_equal(after[n], before[n])}
    trained = ("cell_7/", "cell_8/")
    # features mode: the whole backbone, batch-norm statistics included, comes out
    # bit-identical; finetune mode: everything before TRAIN_FROM too, batch norms included,
    # while the trained cells' weights and statistics move
    assert all(n.startswith(trained) for n in changed)
    if mode == "finetune":
        assert {"cell_8/beginning_bn/moving_mean", "cell_7/1x1/weights"} <= changed
    else:
        assert not changed
    assert after["Logits/weights"].shape == (1, 1, 1080, 2)


def test_eval_predict_and_export_the_finetuned_run(ckptkit, runs, data, tmp_path):
    *_, run = runs["finetune"]
    images = sorted((data / "val" / "7").glob("*.png"))
    result, predicted, info = serve(ckptkit, run, images, tmp_path / "exported")
    assert (result["count"], result["labels"]) == (8, ["1", "7"])
    assert [item["path"] for item in predicted] == [str(p) for p in images]
    assert (info["net"], info["labels"]) == (E2E, ["1", "7"])
