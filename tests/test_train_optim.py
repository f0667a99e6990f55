"""Optimizers, schedules and gradient rules of the training loop, against hand computation."""
import math

import numpy as np
import pytest

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def optim(tf):
    from ckptkit.train import optim

    return optim


@pytest.fixture(scope="module")
def nets(tf):
    from ckptkit.train import nets

    return nets


def test_by_multiplier_groups_variables_one_x_first(tf, optim):
    with tf.Graph().as_default():
        a, b, c = (tf.get_variable(n, [1]) for n in ("net/a", "Logits/w", "Logits/b"))
        pairs = [("ga", a), ("gb", b), ("gc", c)]
        groups = optim.by_multiplier(pairs, {"Logits/w": 10.0, "Logits/b": 10.0})
        assert groups == [(1.0, [("ga", a)]), (10.0, [("gb", b), ("gc", c)])]
        assert optim.by_multiplier(pairs[1:], {"Logits/w": 0.5}) == [
            (1.0, [("gc", c)]), (0.5, [("gb", b)])]


def _schedule(tf, optim, steps, **kwargs):
    with tf.Graph().as_default():
        step = tf.placeholder(tf.int64, [])
        lr = optim.learning_rate(step, **kwargs)
        with tf.Session() as sess:
            return [float(sess.run(lr, {step: s})) for s in steps]


@pytest.mark.parametrize("kwargs, expected", [
    (dict(schedule="constant"), lambda s: 0.1),
    (dict(schedule="step", decay_steps=10, decay_rate=0.5), lambda s: 0.1 * 0.5 ** (s // 10)),
    (dict(schedule="exponential", decay_steps=10, decay_rate=0.5),
     lambda s: 0.1 * 0.5 ** (s / 10)),
    (dict(schedule="cosine"), lambda s: 0.05 * (1 + math.cos(math.pi * min(s / 40, 1)))),
    (dict(schedule="cosine", warmup_steps=4),
     lambda s: min((s + 1) / 4, 1) * 0.05 * (1 + math.cos(math.pi * min(max(s - 4, 0) / 36,
                                                                           1)))),
])
def test_learning_rate_schedules(tf, optim, kwargs, expected):
    steps = [0, 1, 3, 4, 9, 10, 25, 39, 40, 60]
    got = _schedule(tf, optim, steps, base=0.1, total_steps=40, **kwargs)
    np.testing.assert_allclose(got, [expected(s) for s in steps], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kwargs, message", [
    (dict(schedule="linear"), r"unknown schedule 'linear'"),
    (dict(schedule="step"), r"the step schedule needs a decay interval"),
])
def test_learning_rate_refuses(tf, optim, kwargs, message):
    from ckptkit.errors import CkptError

    with tf.Graph().as_default(), pytest.raises(CkptError, match=message):
        optim.learning_rate(tf.constant(0), base=0.1, total_steps=10, **kwargs)


def test_adamw_decay_is_decoupled(tf, optim):
    with tf.Graph().as_default():
        w = tf.get_variable("w", initializer=np.full([2, 2], 2.0, np.float32))
        b = tf.get_variable("b", initializer=np.full([2], 2.0, np.float32))
        decay = optim.decoupled_decay([w, b], tf.constant(0.1), 0.01, {"w": 10.0})
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(decay)
            got_w, got_b = sess.run([w, b])
    np.testing.assert_allclose(got_w, 2.0 - 0.1 * 0.01 * 10 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(got_b, [2.0, 2.0])          # biases are not decayed


def test_clip_by_global_norm(tf, optim):
    with tf.Graph().as_default():
        v = tf.get_variable("v", [2])
        (g, _), = optim.clip([(tf.constant([3.0, 4.0]), v)], 1.0)
        with tf.Session() as sess:
            np.testing.assert_allclose(sess.run(g), [0.6, 0.8], rtol=1e-6)
    assert optim.clip([("g", "v")], 0) == [("g", "v")]


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_optimizers_build(tf, optim, name):
    with tf.Graph().as_default():
        assert optim.optimizer(name, 0.1) is not None


def test_unknown_optimizer(tf, optim):
    from ckptkit.errors import CkptError

    with pytest.raises(CkptError, match=r"unknown optimizer 'adagrad'; use one of sgd, "):
        optim.optimizer("adagrad", 0.1)
