"""Optimizers, learning-rate schedules and gradient rules for the training loop, as TF1 ops.

The per-variable learning-rate multipliers come from the restore plan (plan.lr_mults: one
rule, the innermost scope wins), so what `ckptkit plan --lr-mult` shows is what trains; each
multiplier gets its own optimizer (by_multiplier).
AdamW is Adam with decoupled weight decay (Loshchilov & Hutter): after each update every
decayed weight shrinks by lr * decay * weight; compat.v1 has no AdamW of its own.
"""
import math
import re

from ..errors import CkptError
from ..tfcompat import tf
from .settings import OPTIMIZERS, SCHEDULES


def variable_name(var):
    """A variable's checkpoint name; inside a tf.distribute replica other than the first,
    op.name carries a /replica_N suffix."""
    return re.sub(r"/replica_\d+$", "", var.op.name)


def learning_rate(step, *, base, schedule="constant", total_steps, warmup_steps=0,
                  decay_steps=0, decay_rate=0.1):
    """The learning rate at global `step` (a tensor): a linear warm-up from 0 over
    `warmup_steps`, then `schedule` (step: times decay_rate every decay_steps; exponential:
    smoothly the same; cosine: from base to 0 at total_steps)."""
    if schedule not in SCHEDULES:
        raise CkptError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    if schedule in ("step", "exponential") and decay_steps < 1:
        raise CkptError(f"the {schedule} schedule needs a decay interval of at least one step")
    with tf.name_scope("learning_rate"):
        t = tf.cast(step, tf.float32)
        after = tf.maximum(t - warmup_steps, 0.0)
        if schedule == "constant":
            lr = tf.constant(base, tf.float32)
        elif schedule == "step":
            lr = base * tf.pow(decay_rate, tf.floor(after / decay_steps))
        elif schedule == "exponential":
            lr = base * tf.pow(decay_rate, after / decay_steps)
        else:
            span = max(total_steps - warmup_steps, 1)
            lr = base * 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(after / span, 1.0)))
        if warmup_steps:
            lr = lr * tf.minimum((t + 1.0) / warmup_steps, 1.0)
        return tf.identity(lr, "value")


def optimizer(name, lr, *, momentum=0.9):
    """A tf.compat.v1 optimizer; adamw is Adam here, its decay comes from `decoupled_decay`.
    Several of one kind (one per lr multiplier) keep the standard slot names: each variable
    has one optimizer, and TF numbers the second one's beta1_power (beta1_power_1)."""
    if name == "sgd":
        return tf.train.GradientDescentOptimizer(lr)
    if name == "momentum":
        return tf.train.MomentumOptimizer(lr, momentum)
    if name == "rmsprop":
        return tf.train.RMSPropOptimizer(lr, decay=0.9, momentum=momentum, epsilon=1.0)
    if name in ("adam", "adamw"):
        return tf.train.AdamOptimizer(lr)
    raise CkptError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def by_multiplier(grads_and_vars, lr_mults):
    """[(multiplier, grads_and_vars)], 1x first: each group gets an optimizer of its own at
    lr * multiplier. Scaling the gradients instead would do nothing for Adam or RMSProp,
    whose updates do not depend on the gradient's scale."""
    groups = {}
    for grad, var in grads_and_vars:
        groups.setdefault(lr_mults.get(variable_name(var), 1.0), []).append((grad, var))
    return sorted(groups.items(), key=lambda item: (item[0] != 1.0, item[0]))


def clip(grads_and_vars, clip_norm):
    """Clip the gradients by their global norm (no-op for clip_norm None or 0)."""
    if not clip_norm:
        return grads_and_vars
    grads, variables = zip(*grads_and_vars)
    clipped, _ = tf.clip_by_global_norm(list(grads), clip_norm)
    return list(zip(clipped, variables))


def decoupled_decay(variables, lr, rate, lr_mults):
    """AdamW's weight decay, run after the update: w -= lr * mult * rate * w for weights
    (not biases nor batch-norm parameters, which are 1-D)."""
    ops = []
    for var in variables:
        if var.shape.ndims and var.shape.ndims > 1:
            step = lr * (rate * lr_mults.get(variable_name(var), 1.0))
            ops.append(tf.assign_sub(var, step * var, use_locking=False).op)
    return tf.group(*ops, name="decoupled_decay")
