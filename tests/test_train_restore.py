"""apply_plan: what the plan lists is exactly what a session restores, by value.

Real tf_slim graphs against checkpoints TF wrote: resnet_v1_50 (1000 classes) and
inception_v3 (1001 classes, Logits + AuxLogits).
"""
import numpy as np
import pytest

import ckptkit
from ckptkit.plan import ModelVar, plan_restore

pytestmark = pytest.mark.tf
SIZE = {"resnet_v1_50": 96, "inception_v3": 299}   # inception's AuxLogits need a big input


def _graph_vars(tf):
    trainable = {v.op.name for v in tf.trainable_variables()}
    return [ModelVar(v.op.name, tuple(v.shape.as_list()), v.dtype.base_dtype.name,
                     v.op.name in trainable) for v in tf.global_variables()]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tf):
    """ImageNet-shaped checkpoints of the original nets (random weights, saved by TF)."""
    from ckptkit.train.nets import build
    from ckptkit.zoo.nets import get_net

    out = {}
    for name in ("resnet_v1_50", "inception_v3"):
        record = get_net(name)
        with tf.Graph().as_default():
            images = tf.placeholder(tf.float32, [1, SIZE[name], SIZE[name], 3])
            build(record, images, record.num_classes, head="keep", is_training=False)
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                prefix = str(tmp_path_factory.mktemp(name) / "model.ckpt")
                tf.train.Saver().save(sess, prefix, write_meta_graph=False)
        out[name] = prefix
    return out


def _restored(tf, plan, prefix):
    """Run apply_plan in the current graph; return {model name: value after restore}."""
    from ckptkit.train.restore import apply_plan

    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        before = sess.run({v.op.name: v for v in tf.global_variables()})
        ops = len(tf.get_default_graph().get_operations())
        assert apply_plan(sess, plan, prefix) == len(plan.restore)
        assert len(tf.get_default_graph().get_operations()) == ops   # no ops added
        after = sess.run({v.op.name: v for v in tf.global_variables()})
    return before, after


@pytest.mark.parametrize("net, original_scopes, unused", [
    ("resnet_v1_50", ["resnet_v1_50/logits"], 2),
    ("inception_v3", ["InceptionV3/Logits", "InceptionV3/AuxLogits"], 2 + 10),
])
def test_new_head_restores_the_backbone_by_value(tf, pretrained, net, original_scopes, unused):
    """Everything but the original classifier(s) restores; the new head starts fresh."""
    from ckptkit.scopes import compile_pattern
    from ckptkit.train.nets import build

    with ckptkit.open_checkpoint(pretrained[net]) as reader:
        ckpt_vars = list(reader)
        with tf.Graph().as_default():
            build(net, tf.placeholder(tf.float32, [1, SIZE[net], SIZE[net], 3]), 5, head="new")
            model = _graph_vars(tf)
            plan = plan_restore(ckpt_vars, model)
            assert sorted(plan.missing) == ["Logits/biases", "Logits/weights"]
            patterns = [compile_pattern(p) for p in original_scopes]
            classifier = sorted(v.name for v in ckpt_vars
                                if any(p.matches(v.name) for p in patterns))
            assert sorted(n for n, _ in plan.unused) == classifier and len(classifier) == unused
            assert len(plan.restore) == len(model) - 2 == len(ckpt_vars) - unused
            before, after = _restored(tf, plan, pretrained[net])
        for item in plan.restore:
            np.testing.assert_array_equal(after[item.model], reader.read(item.ckpt))
        for name in plan.missing:   # freshly initialised, untouched by the restore
            np.testing.assert_array_equal(after[name], before[name])


def test_slim_graph_with_5_classes_excluding_logits_restores_265_of_267(tf, pretrained):
    """The seeds' workflow: slim's own resnet_v1_50 at 5 classes, CHECKPOINT_EXCLUDE_SCOPES."""
    from tf_slim.nets import resnet_v1

    from ckptkit.tfcompat import slim

    with ckptkit.open_checkpoint(pretrained["resnet_v1_50"]) as reader:
        ckpt_vars = list(reader)
        with tf.Graph().as_default():
            with slim.arg_scope(resnet_v1.resnet_arg_scope()):
                resnet_v1.resnet_v1_50(tf.placeholder(tf.float32, [1, 96, 96, 3]), 5)
            model = _graph_vars(tf)
            assert len(model) == 267
            plan = plan_restore(ckpt_vars, model, exclude=["resnet_v1_50/logits"])
            assert len(plan.restore) == 265 and not plan.missing and not plan.mismatched
            assert [n for n, _ in plan.excluded] == ["resnet_v1_50/logits/weights",
                                                     "resnet_v1_50/logits/biases"]
            # slim-style prefix matching picks the same set as tf_slim's own helper
            slim_set = {v.op.name for v in slim.get_variables_to_restore(
                exclude=["resnet_v1_50/logits"])}
            prefix_plan = plan_restore(ckpt_vars, model, exclude=["resnet_v1_50/logits"],
                                       match="prefix")
            assert {r.model for r in prefix_plan.restore} == slim_set
            before, after = _restored(tf, plan, pretrained["resnet_v1_50"])
        for item in plan.restore:
            np.testing.assert_array_equal(after[item.model], reader.read(item.ckpt))
        for name, _ in plan.excluded:
            np.testing.assert_array_equal(after[name], before[name])


def test_without_exclude_the_mismatch_is_named_before_any_session(tf, pretrained):
    """Pain point 1: no 'Assign requires shapes' deep in a Session; a plan error instead."""
    from tf_slim.nets import resnet_v1

    from ckptkit.tfcompat import slim

    with ckptkit.open_checkpoint(pretrained["resnet_v1_50"]) as reader:
        with tf.Graph().as_default():
            with slim.arg_scope(resnet_v1.resnet_arg_scope()):
                resnet_v1.resnet_v1_50(tf.placeholder(tf.float32, [1, 96, 96, 3]), 5)
            plan = plan_restore(list(reader), _graph_vars(tf))
    with pytest.raises(ckptkit.PlanError, match=r"resnet_v1_50/logits/weights: .*1000.*5"
                       r".*--exclude resnet_v1_50/logits"):
        plan.check()


def test_inception_1001_classes_keep_head_slices_background_class(tf, pretrained, tmp_path):
    """A 1001-class checkpoint into the kept classifier at 1000 classes: label_offset drops
    class 0 of Logits and AuxLogits."""
    from ckptkit.train.nets import build
    from ckptkit.zoo.nets import get_net

    record = get_net("inception_v3")
    with ckptkit.open_checkpoint(pretrained["inception_v3"]) as reader:
        with tf.Graph().as_default():
            build(record, tf.placeholder(tf.float32, [1, 299, 299, 3]), 1000, head="keep",
                  is_training=False)
            plan = plan_restore(list(reader), _graph_vars(tf), label_offset=record.label_offset)
            offsets = {r.model: r.offset for r in plan.restore if r.offset}
            assert sorted(offsets) == ["InceptionV3/AuxLogits/Conv2d_2b_1x1/biases",
                                       "InceptionV3/AuxLogits/Conv2d_2b_1x1/weights",
                                       "InceptionV3/Logits/Conv2d_1c_1x1/biases",
                                       "InceptionV3/Logits/Conv2d_1c_1x1/weights"]
            _, after = _restored(tf, plan, pretrained["inception_v3"])
        for name in offsets:
            np.testing.assert_array_equal(after[name], reader.read(name)[..., 1:])


def test_train_logits_updates_only_the_head(tf, pretrained):
    """--train Logits: the optimizer's var list is the head; a step changes nothing else.

    The loss is the logits' mean square: a random ResNet's logits are so large that softmax
    is one-hot, and a cross-entropy's gradient is then exactly zero whenever the predictions
    happen to be the labels (the backbone comes from a checkpoint of random weights)."""
    from ckptkit.train.nets import build

    with ckptkit.open_checkpoint(pretrained["resnet_v1_50"]) as reader:
        ckpt_vars = list(reader)
    with tf.Graph().as_default():
        images = tf.constant(np.random.default_rng(0).random((2, 96, 96, 3), np.float32))
        logits, _ = build("resnet_v1_50", images, 5, head="new", frozen=["resnet_v1_50"])
        plan = plan_restore(ckpt_vars, _graph_vars(tf), train=["Logits"])
        assert plan.trainable == ["Logits/weights", "Logits/biases"]
        by_name = {v.op.name: v for v in tf.global_variables()}
        loss = tf.reduce_mean(tf.square(logits))
        step = tf.train.GradientDescentOptimizer(0.5).minimize(
            loss, var_list=[by_name[n] for n in plan.trainable])
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            step = tf.group(step)
        from ckptkit.train.restore import apply_plan

        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            apply_plan(sess, plan, pretrained["resnet_v1_50"])
            before = sess.run(by_name)
            sess.run(step)
            after = sess.run(by_name)
    changed = sorted(n for n in by_name if not np.array_equal(before[n], after[n]))
    assert changed == ["Logits/biases", "Logits/weights"]


def test_apply_plan_refuses_a_plan_for_another_graph(tf, pretrained):
    from ckptkit.plan import Restore, RestorePlan
    from ckptkit.train.restore import apply_plan

    plan = RestorePlan([Restore("resnet_v1_50/conv1/weights", "nope/weights", (7, 7, 3, 64))],
                       [], [], [], [], [], [], {}, {})
    with tf.Graph().as_default(), tf.Session() as sess:
        with pytest.raises(ckptkit.PlanError, match="'nope/weights', which this graph does not"):
            apply_plan(sess, plan, pretrained["resnet_v1_50"])
