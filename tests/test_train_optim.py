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


def test_scale_gradients_multiplies_the_update(tf, nets, optim):
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(2)
        images = tf.constant(np.random.RandomState(1).rand(2, 28, 28, 1).astype(np.float32))
        logits, _ = nets.build("lenet", images, 5, dropout=0.0)
        loss = tf.losses.sparse_softmax_cross_entropy(tf.constant([1, 4]), logits)
        sgd = tf.train.GradientDescentOptimizer(0.05)
        plain = sgd.compute_gradients(loss)
        scaled = optim.scale_gradients(plain, {"Logits/weights": 10.0, "Logits/biases": 10.0})
        assert [v for _, v in scaled] == [v for _, v in plain]
        by_name = {v.op.name: i for i, (_, v) in enumerate(plain)}
        head, conv = by_name["Logits/weights"], by_name["LeNet/conv1/weights"]
        assert scaled[conv][0] is plain[conv][0]            # 1x: untouched
        steps = {"plain": sgd.apply_gradients(plain), "scaled": sgd.apply_gradients(scaled)}
        variables = tf.global_variables()
        watched = [variables.index(plain[head][1]), variables.index(plain[conv][1])]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            start = sess.run(variables)
            g_plain, g_scaled = sess.run([plain[head][0], scaled[head][0]])
            assert np.array_equal(g_scaled, g_plain * np.float32(10))
            delta = {}
            for kind, step in steps.items():      # the same start for both steps
                for var, value in zip(variables, start):
                    var.load(value, sess)
                sess.run(step)
                after = sess.run(variables)
                delta[kind] = [after[i] - start[i] for i in watched]
    # the gradients are exactly 10x (above); the updates too, but for the float32 rounding of
    # `weight - update` (a few units in the last place of the largest weight)
    ulp = np.spacing(np.abs(start[watched[0]]).max())
    assert np.abs(delta["plain"][0]).max() > 1e5 * ulp
    np.testing.assert_allclose(delta["scaled"][0], 10 * delta["plain"][0], rtol=0, atol=16 * ulp)
    np.testing.assert_array_equal(delta["scaled"][1], delta["plain"][1])


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
