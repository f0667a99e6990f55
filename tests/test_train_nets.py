"""The nets factory (ckptkit.train.nets): every net with a new head and with its own, checked
against tf_slim's variable lists; frozen batch norm and learning-rate multipliers checked by
value after a training step; preprocessing by output shape and range.

Building a big net's graph costs 2-9 s, so by default the variable lists are compared for
the small nets, resnet_v1_50, resnet_v2_50 and inception_v3 (one per code path: tf_slim's
builder, ckptkit's ResNet v2 blocks, an Inception base); the others are checked without
building (resnet_v1 depths are tf_slim's own builders, ResNet v2 block tables equal tf_slim's,
every Inception base exists). CKPTKIT_TEST_ALL_NETS=1 builds every net (about 3 minutes).
"""
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from helpers.runs import decayed

from ckptkit.errors import CkptError
from ckptkit.scopes import compile_pattern
from ckptkit.zoo.nets import get_net

pytestmark = pytest.mark.tf

# measured on TensorFlow 2.21 / tf_slim 1.1: (variables with the original classifier for the
# record's class count, of those in the classifier scopes)
COUNTS = {
    "alexnet_v2": (16, 2), "cifarnet": (10, 2), "inception_v1": (230, 2),
    "inception_v2": (277, 2), "inception_v3": (388, 12), "lenet": (8, 2),
    "resnet_v1_50": (267, 2), "resnet_v1_101": (522, 2), "resnet_v1_152": (777, 2),
    "resnet_v2_50": (272, 2), "resnet_v2_101": (544, 2), "resnet_v2_152": (816, 2),
    "vgg_16": (32, 2), "vgg_19": (38, 2),
}
ALL = os.environ.get("CKPTKIT_TEST_ALL_NETS") == "1"
SMALL = ["alexnet_v2", "cifarnet", "lenet", "vgg_16", "vgg_19"]
BUILT = sorted(COUNTS) if ALL else SMALL + ["inception_v3", "resnet_v1_50", "resnet_v2_50"]
KEPT = BUILT if ALL else SMALL + ["inception_v3", "resnet_v2_50"]


@pytest.fixture(scope="module")
def nets():
    from ckptkit.train import nets
    return nets


@pytest.fixture(scope="module")
def built(tf, nets):
    """Cached graphs: built(kind, name) for kind "slim" (tf_slim's own net, its classifier),
    "new" (5 classes) or "keep" -> (variables as (name, shape, dtype, trainable), logits
    shape, names of the variables with a weight-decay loss)."""
    from ckptkit.tfcompat import slim
    from ckptkit.train.heads import resolve
    cache = {}

    def get(kind, name):
        if (kind, name) not in cache:
            record = get_net(name)
            graph = tf.Graph()
            with graph.as_default():
                size = record.image_size
                images = tf.placeholder(tf.float32, [1, size, size, record.channels])
                if kind == "slim":
                    with slim.arg_scope(resolve(record.arg_scope)()):
                        logits, _ = resolve(record.builder)(
                            images, num_classes=record.num_classes, is_training=True)
                else:
                    classes = 5 if kind == "new" else record.num_classes
                    logits, _ = nets.build(record, images, classes, head=kind)
                trainable = set(tf.trainable_variables())
                variables = [(v.op.name, tuple(v.shape.as_list()), v.dtype.base_dtype.name,
                              v in trainable) for v in tf.global_variables()]
                reached = decayed(tf.get_default_graph())
            cache[kind, name] = variables, logits.shape.as_list(), reached
        return cache[kind, name]
    return get


def _in(scopes, name):
    return any(compile_pattern(s).matches(name) for s in scopes)


# --- heads -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILT)
def test_new_head_replaces_the_classifier(nets, built, name):
    record = get_net(name)
    slim_vars, slim_logits, slim_decayed = built("slim", name)
    new_vars, logits, decayed = built("new", name)
    assert logits == [1, 5]
    assert slim_logits[0] == 1 and slim_logits[-1] == record.num_classes
    kept = [v for v in slim_vars if not _in(record.classifier_scopes, v[0])]
    head = new_vars[len(kept):]
    assert new_vars[:len(kept)] == kept
    # a 1x1 convolution on pooled feature maps, fully connected on flat features (like the
    # classifier it replaces); weight decay as the net's arg_scope gives its layers
    depth = head[0][1][-2]
    conv = name not in ("lenet", "cifarnet")
    assert head == [("Logits/weights", (1, 1, depth, 5) if conv else (depth, 5), "float32",
                     True), ("Logits/biases", (5,), "float32", True)]
    assert not [v for v in new_vars if _in(record.classifier_scopes, v[0])]
    assert decayed - {"Logits/weights"} == {n for n in slim_decayed
                                            if not _in(record.classifier_scopes, n)}
    assert ("Logits/weights" in decayed) == (name != "lenet")   # LeNet: decay 0, no loss
    assert (len(slim_vars), len(slim_vars) - len(kept)) == COUNTS[name]
    assert len(new_vars) == len(slim_vars) - COUNTS[name][1] + 2


@pytest.mark.parametrize("name", KEPT)
def test_keep_head_is_tf_slims_net(nets, built, name):
    keep_vars, logits, decayed = built("keep", name)
    assert (keep_vars, decayed) == (built("slim", name)[0], built("slim", name)[2])
    assert logits == [1, get_net(name).num_classes]


def test_vgg_16_has_the_published_checkpoint_s_variables(built):
    """/work/shared/nets/vgg_16.json: vgg_16_2016_08_28's 34 tensors, i.e. the 32 weights and
    biases of the net, and `vgg_16/mean_rgb` and `global_step`, which no graph variable holds
    (a plan leaves them unused)."""
    import json

    from conftest import ROOT

    listing = ROOT.parent / "shared" / "nets" / "vgg_16.json"
    if not listing.is_file():
        pytest.skip(f"no published listing at {listing}")
    published = {(name, tuple(shape), dtype)
                 for name, shape, dtype in json.loads(listing.read_text())["variables"]}
    ours = {(name, tuple(shape), dtype) for name, shape, dtype, _ in built("keep", "vgg_16")[0]}
    assert published - ours == {("vgg_16/mean_rgb", (3,), "float32"), ("global_step", (), "int64")}
    assert ours <= published


def test_design_facts(built):
    """DESIGN.md: resnet_v1_50 has 267 variables with its 1000-class head, inception_v3 388
    with 1001 classes; a new head keeps 265 of resnet_v1_50's and adds 2."""
    assert len(built("slim", "resnet_v1_50")[0]) == 267
    new = built("new", "resnet_v1_50")[0]
    assert len(new) == 267 and len([v for v in new if v[0].startswith("resnet_v1_50/")]) == 265
    assert new[-2:] == [("Logits/weights", (1, 1, 2048, 5), "float32", True),
                        ("Logits/biases", (5,), "float32", True)]
    assert len(built("keep", "inception_v3")[0]) == 388
    bn = {v[0].rpartition("/")[2]: v[3] for v in new
          if v[0].startswith("resnet_v1_50/conv1/BatchNorm/")}
    assert bn == {"gamma": True, "beta": True, "moving_mean": False, "moving_variance": False}


@pytest.mark.parametrize("name", [n for n in sorted(COUNTS) if n.startswith("inception")])
def test_inception_bases_exist(nets, name):
    """The headless Inception nets are tf_slim's inception_vN_base."""
    from ckptkit.train.heads import resolve
    assert callable(resolve(get_net(name).builder + "_base"))


def test_model_variables_records(nets):
    variables = nets.model_variables("lenet", 3)
    assert [(v.name, v.shape, v.dtype, v.trainable) for v in variables] == [
        ("LeNet/conv1/weights", (5, 5, 1, 32), "float32", True),
        ("LeNet/conv1/biases", (32,), "float32", True),
        ("LeNet/conv2/weights", (5, 5, 32, 64), "float32", True),
        ("LeNet/conv2/biases", (64,), "float32", True),
        ("LeNet/fc3/weights", (3136, 1024), "float32", True),
        ("LeNet/fc3/biases", (1024,), "float32", True),
        ("Logits/weights", (1024, 3), "float32", True),
        ("Logits/biases", (3,), "float32", True)]
    from ckptkit.plan import ModelVar
    assert all(isinstance(v, ModelVar) for v in variables)


STORED = """
import json, sys
if sys.argv[1] == "without-tf":
    sys.modules["tensorflow"] = None        # importing it fails: nothing can be built
from ckptkit.train.nets import model_variables
print(json.dumps({name: [[v.name, list(v.shape), v.dtype, v.trainable]
                         for v in model_variables(name, 5)] for name in sys.argv[2:]}))
"""


def test_variable_lists_are_built_once_and_read_back_without_tensorflow(built, tmp_path):
    """A first process builds each net's list and stores it under $CKPTKIT_CACHE/variables;
    a second one, which cannot import TensorFlow, reads the same lists back. Both equal the
    graph nets.build makes (what finetune trains and `plan --net` plans)."""
    env = {**os.environ, "CKPTKIT_CACHE": str(tmp_path)}
    lists = []
    for how in ("build", "without-tf"):
        done = subprocess.run([sys.executable, "-c", STORED, how, *BUILT], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        lists.append(json.loads(done.stdout.splitlines()[-1]))
    stored, read = lists
    assert read == stored
    for name in BUILT:
        assert [tuple(v[:1]) + (tuple(v[1]),) + tuple(v[2:]) for v in stored[name]] == \
            built("new", name)[0], name
    assert len(list((tmp_path / "variables").glob("*.json"))) == len(BUILT)


def test_hidden_layers_and_head_scope(nets):
    base = [(v.name, v.shape) for v in nets.model_variables("lenet", 5)][:-2]
    names = [(v.name, v.shape) for v in nets.model_variables("lenet", 5, hidden=(256, 128),
                                                             head_scope="Head")]
    assert names == base + [
        ("Head/hidden_1/weights", (1024, 256)), ("Head/hidden_1/biases", (256,)),
        ("Head/hidden_2/weights", (256, 128)), ("Head/hidden_2/biases", (128,)),
        ("Head/weights", (128, 5)), ("Head/biases", (5,))]


@pytest.mark.parametrize("kwargs, message", [
    ({"head": "keep"}, (r"^head='keep' reuses the 10-class classifier of lenet, but "
                        r"num_classes is 5; use head='new' for 5 classes$")),
    ({"head": "old"}, r"^unknown head 'old'; use 'new' or 'keep'$"),
    ({"hidden": (0,)}, r"^hidden layer sizes must be positive integers, got \[0\]$"),
    ({"dropout": 1.0}, r"^dropout is a rate in \[0, 1\), got 1.0$"),
    ({"head_scope": "LeNet/new"}, r"^head scope 'LeNet/new' must be a scope of its own"),
    ({"frozen": ["LeNet/conv9"]}, (r"^frozen scope 'LeNet/conv9' matches no variable of "
                                   r"lenet; closest: LeNet/conv1, LeNet/conv2")),
])
def test_build_refuses_bad_arguments(tf, nets, kwargs, message):
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 28, 28, 1])
        with pytest.raises(CkptError, match=message):
            nets.build("lenet", images, 5, **kwargs)


def test_images_too_small_is_one_line(tf, nets):
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 64, 64, 3])
        with pytest.raises(CkptError) as e:
            nets.build("vgg_16", images, 5)
    assert str(e.value) == ("cannot build vgg_16 on images of shape [1, 64, 64, 3]: too small: "
                            "at vgg_16/fc6 a window of 7 meets a feature map of 2 (its image "
                            "size is 224)")


@pytest.mark.parametrize("name", ["resnet_v2_50", "resnet_v2_101", "resnet_v2_152"])
def test_resnet_v2_blocks_are_tf_slims(nets, name):
    """ckptkit builds ResNet v2 from blocks (to reach the `preact` batch norms); they are the
    blocks tf_slim's resnet_v2_N passes to resnet_v2 (captured without building)."""
    from ckptkit.train.heads import resnet_v2_blocks, resolve
    module = sys.modules[resolve("tf_slim.nets.resnet_v2:resnet_v2").__module__]
    seen = []
    with mock.patch.object(module, "resnet_v2",
                           lambda inputs, blocks, *args, **kwargs: seen.append(blocks)):
        getattr(module, name)(None)
    ours = resnet_v2_blocks(get_net(name))
    assert [(b.scope, b.unit_fn, b.args) for b in ours] == \
        [(b.scope, b.unit_fn, b.args) for b in seen[0]]


# --- frozen batch norm -----------------------------------------------------------------------

def _train_step(tf, name, frozen, watch):
    """One SGD step (with UPDATE_OPS) on 2 images of 64x64; the `watch` variables before and
    after, and the update ops' names."""
    from ckptkit.train import nets
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(1)
        rng = np.random.RandomState(0)
        images = tf.constant(rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32))
        logits, _ = nets.build(name, images, 5, frozen=frozen, dropout=0.0)
        loss = tf.losses.sparse_softmax_cross_entropy(tf.constant([0, 3]), logits)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(updates):
            step = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        by_name = {v.op.name: v for v in tf.global_variables()}
        tensors = [by_name[w] for w in watch]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            before = sess.run(tensors)
            sess.run(step)
            after = sess.run(tensors)
    return dict(zip(watch, zip(before, after))), [op.name for op in updates]


@pytest.mark.parametrize("name, frozen, still, moving", [
    ("resnet_v1_50", ["resnet_v1_50/block1"],
     ["resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/BatchNorm/moving_mean",
      "resnet_v1_50/block1/unit_3/bottleneck_v1/conv3/BatchNorm/moving_variance"],
     ["resnet_v1_50/block2/unit_1/bottleneck_v1/conv1/BatchNorm/moving_mean",
      "resnet_v1_50/conv1/BatchNorm/moving_mean"]),
    ("resnet_v2_50", ["resnet_v2_50/block1", "/resnet_v2_50/postnorm"],
     ["resnet_v2_50/block1/unit_1/bottleneck_v2/preact/moving_mean",
      "resnet_v2_50/block1/unit_2/bottleneck_v2/conv2/BatchNorm/moving_mean",
      "resnet_v2_50/postnorm/moving_mean"],
     ["resnet_v2_50/block2/unit_1/bottleneck_v2/preact/moving_mean",
      "resnet_v2_50/block4/unit_3/bottleneck_v2/conv1/BatchNorm/moving_variance"]),
])
def test_frozen_batch_norm_keeps_its_statistics(tf, name, frozen, still, moving):
    gamma = still[0].rpartition("/")[0] + "/gamma"
    values, updates = _train_step(tf, name, frozen, still + moving + [gamma])
    for watched in still:
        before, after = values[watched]
        assert np.array_equal(before, after), watched
    for watched in moving + [gamma]:     # frozen statistics, but gamma/beta still train
        before, after = values[watched]
        assert not np.array_equal(before, after), watched
    assert updates and not [u for u in updates if any(
        compile_pattern(f).matches(u) for f in frozen)]


@pytest.mark.parametrize("kwargs", [{"is_training": False}, {"frozen": ["resnet_v2_50"]}],
                         ids=["inference", "all-frozen"])
def test_no_statistics_update_when_nothing_trains(tf, nets, kwargs):
    """Every batch norm of ResNet v2 (conv normalizers, `preact`, `postnorm`) follows."""
    with tf.Graph().as_default():
        nets.build("resnet_v2_50", tf.placeholder(tf.float32, [1, 64, 64, 3]), 5, **kwargs)
        assert tf.get_collection(tf.GraphKeys.UPDATE_OPS) == []


def test_frozen_checks_on_a_second_tower(tf, nets):
    """A build that reuses every variable (a second replica) is checked against the graph's."""
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 28, 28, 1])
        nets.build("lenet", images, 5, frozen=["LeNet/conv1"])
        with tf.variable_scope(tf.get_variable_scope(), reuse=True):
            nets.build("lenet", images, 5, frozen=["LeNet/conv1"])
            with pytest.raises(CkptError, match="^frozen scope 'conv3' matches no variable"):
                nets.build("lenet", images, 5, frozen=["conv3"])


def test_a_batch_norm_out_of_reach_is_an_error(tf, nets):
    """A net whose batch norm ckptkit cannot switch (here: ResNet v2 units left unwrapped)
    fails the build instead of updating frozen statistics."""
    from ckptkit.train import heads
    with tf.Graph().as_default(), mock.patch.object(heads._BatchNorm, "unit",
                                                    lambda self, unit_fn: unit_fn):
        images = tf.placeholder(tf.float32, [1, 64, 64, 3])
        with pytest.raises(CkptError, match="^cannot freeze batch norm 'resnet_v2_50/block4/"
                                            "unit_1/bottleneck_v2/preact' of resnet_v2_50: "):
            nets.build("resnet_v2_50", images, 5, frozen=["resnet_v2_50/block4"])



# --- preprocessing ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prep(tf, nets):
    """prep(net, image, is_training) -> the numpy result (one graph per call)."""
    def run(net, image, is_training, shape=None):
        with tf.Graph().as_default():
            feed = tf.placeholder(tf.uint8, shape or image.shape)
            out = nets.preprocess(net, feed, is_training)
            static = out.shape.as_list()
            with tf.Session() as sess:
                first, second = (sess.run(out, {feed: image}) for _ in range(2))
        assert list(first.shape) == static
        return first, second
    return run


RNG = np.random.RandomState(3)
PHOTO = RNG.randint(0, 256, (90, 150, 3)).astype(np.uint8)
GRAY = RNG.randint(0, 256, (120, 70, 1)).astype(np.uint8)


@pytest.mark.parametrize("net, size, low, high", [
    ("vgg_16", 224, -123.68, 255 - 103.94), ("resnet_v1_50", 224, -123.68, 255 - 103.94),
    ("inception_v3", 299, -1, 1), ("resnet_v2_50", 299, -1, 1),
])
@pytest.mark.parametrize("is_training", [False, True])
def test_preprocess_shapes_and_ranges(prep, net, size, low, high, is_training):
    out, again = prep(net, PHOTO, is_training)
    assert out.shape == (size, size, 3) and out.dtype == np.float32
    assert low - 1e-3 <= out.min() and out.max() <= high + 1e-3
    assert out.max() - out.min() > (high - low) / 2
    assert np.array_equal(out, again) != is_training       # augmentation is random


def test_preprocess_values(prep):
    flat = np.full((60, 100, 3), 100, np.uint8)
    vgg, _ = prep("vgg_16", flat, False)
    np.testing.assert_allclose(vgg, np.broadcast_to(
        100 - np.array([123.68, 116.78, 103.94], np.float32), vgg.shape), atol=1e-3)
    for value, expected in ((0, -1.0), (255, 1.0)):
        inception, _ = prep("inception_v1", np.full((50, 50, 3), value, np.uint8), True)
        np.testing.assert_allclose(inception, expected, atol=1e-5)


@pytest.mark.parametrize("shape", [None, [None, None, None]])
def test_preprocess_grayscale_becomes_rgb(prep, shape):
    out, _ = prep("inception_v3", GRAY, False, shape)
    assert out.shape == (299, 299, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_preprocess_small_nets(prep):
    lenet, _ = prep("lenet", PHOTO, False)
    assert lenet.shape == (28, 28, 1) and -1 <= lenet.min() and lenet.max() < 1
    cifar, _ = prep("cifarnet", GRAY, True)
    assert cifar.shape == (32, 32, 3)
    assert abs(cifar.mean()) < 1e-4 and abs(cifar.std() - 1) < 1e-2


def test_preprocess_wants_uint8(tf, nets):
    with tf.Graph().as_default(), \
            pytest.raises(CkptError, match="^preprocess expects a uint8 image, got float32$"):
        nets.preprocess("vgg_16", tf.zeros([8, 8, 3]), False)


def test_keep_head_of_a_1001_class_net_takes_1000_or_1001(tf, nets):
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [1, 299, 299, 3])
        with pytest.raises(CkptError, match=r"^head='keep' reuses the 1001-class classifier "
                           r"of inception_v3 \(or 1000 without its background class\), but "
                           r"num_classes is 5; use head='new' for 5 classes$"):
            nets.build("inception_v3", images, 5, head="keep")


def test_slim_batch_norm_works_on_flat_features(tf):
    """tf_slim 1.1 names framework.ops.Tensor, gone in TF 2.21; tfcompat names it again, so
    legacy fully connected layers with normalizer_fn=slim.batch_norm build."""
    from ckptkit.tfcompat import slim

    with tf.Graph().as_default():
        x = tf.constant([[1.0, 2.0], [3.0, 6.0]])
        y = slim.fully_connected(x, 2, normalizer_fn=slim.batch_norm,
                                 normalizer_params={"is_training": True})
        assert y.shape.as_list() == [2, 2]
