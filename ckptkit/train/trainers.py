"""The trainers of a finetune stage: the graph that takes one optimizer step per batch, and
the validation pass. ImageTrainer trains on decoded images through tf.data (data-parallel
under a tf.distribute strategy); FeatureTrainer trains the new head alone on cached backbone
features (features mode). Both give the epoch loop (loop.py) one interface: train_epoch(sess,
epoch, skip), evaluate(sess), `step` (the global step) and `copied` (the plan's restore
entries of model variables not in the graph, which checkpoints copy from the checkpoint).

`loss` in the metrics is the cross-entropy (what val_loss also measures); the objective
minimised adds the net's weight-decay terms of the trained variables.
"""
import contextlib

import numpy as np

from ..tfcompat import tf
from . import data, optim
from .devices import uses_gpu


def frozen_batch_norms(names, trainable):
    """Anchored scope patterns of the batch-norm layers whose parameters are not trained."""
    trainable = set(trainable)
    frozen = []
    for name in names:
        if not name.endswith("/moving_mean"):
            continue
        scope = name[:-len("/moving_mean")]
        own = [f"{scope}/{p}" for p in ("beta", "gamma") if f"{scope}/{p}" in names] or \
            [f"{scope.rpartition('/')[0]}/weights"]
        if not trainable.intersection(own):
            frozen.append("/" + scope)
    return frozen


def _objective(s, logits, labels, num_classes, trained):
    """(loss to minimise, cross-entropy, correct count) of a batch."""
    targets = tf.one_hot(labels, num_classes)
    if s.label_smoothing:
        targets = targets * (1 - s.label_smoothing) + s.label_smoothing / num_classes
    xent = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits_v2(
        labels=tf.stop_gradient(targets), logits=logits), name="xent")
    owners = tuple(v.op.name + "/" for v in trained)
    terms = [r for r in tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)
             if r.op.name.startswith(owners)]
    if s.weight_decay and s.optimizer != "adamw":
        terms += [s.weight_decay * tf.nn.l2_loss(v) for v in trained if v.shape.ndims > 1]
    total = tf.add_n([xent] + terms, name="objective") if terms else xent
    return total, xent, _correct(logits, labels)


def _correct(logits, labels):
    hits = tf.equal(tf.argmax(logits, 1), tf.cast(labels, tf.int64))
    return tf.reduce_sum(tf.cast(hits, tf.int32))


def _optimizers(s, stage, steps_per_epoch, lr_mults):
    """({multiplier: optimizer at lr * multiplier}, learning rate, global step) of a stage."""
    step = tf.train.get_or_create_global_step()
    first = stage.start_epoch * steps_per_epoch
    total = (stage.end_epoch - stage.start_epoch) * steps_per_epoch
    lr = optim.learning_rate(
        step - first, base=s.lr * stage.lr_factor, schedule=s.schedule, total_steps=total,
        warmup_steps=round(s.warmup_epochs * steps_per_epoch),
        decay_steps=round(s.decay_epochs * steps_per_epoch), decay_rate=s.decay_rate)
    optimizers = {}
    for mult in {1.0, *lr_mults.values()}:
        opt = optim.optimizer(s.optimizer, lr * mult, momentum=s.momentum)
        if s.mixed_precision and uses_gpu(s.device):
            opt = tf.mixed_precision.enable_mixed_precision_graph_rewrite(opt)
        optimizers[mult] = opt
    return optimizers, lr, step


def _minimize(s, optimizers, loss, trained, lr_mults, step, update_ops):
    """The update of `trained` variables (after the batch-norm `update_ops`), each by the
    optimizer of its learning-rate multiplier; global_step counts once."""
    grads = optim.clip(optimizers[1.0].compute_gradients(loss, var_list=trained), s.clip_norm)
    updates = []
    with tf.control_dependencies(update_ops):
        for mult, pairs in optim.by_multiplier(grads, lr_mults):
            updates.append(optimizers[mult].apply_gradients(
                pairs, global_step=None if updates else step))
    return tf.group(*updates)


def _with_decay(s, update, trained, lr, lr_mults):
    """AdamW's decoupled decay after `update` (cross-replica: every copy decays alike)."""
    if s.optimizer != "adamw" or not s.weight_decay:
        return update
    with tf.control_dependencies([update]):
        return tf.group(update, optim.decoupled_decay(trained, lr, s.weight_decay, lr_mults))


def _trained_variables(plan):
    by_name = {optim.variable_name(v): v for v in tf.trainable_variables()}
    return [by_name[n] for n in plan.trainable if n in by_name]


class ImageTrainer:
    """Trains on decoded, preprocessed (and augmented) images through tf.data; with a
    tf.distribute strategy, data-parallel over its devices (each replica takes its share of
    every batch, gradients are summed across replicas)."""

    copied = ()

    def __init__(self, s, stage, model, dataset, plan, steps_per_epoch, strategy=None):
        record = model.record
        frozen = frozen_batch_norms(set(plan.model_shapes), plan.trainable)
        replicas = strategy.num_replicas_in_sync if strategy else 1
        with strategy.scope() if strategy else contextlib.nullcontext():
            self.train_in = data.Input(dataset.train, record, batch_size=s.batch_size,
                                       training=True, augment=s.augment, seed=s.seed,
                                       name="train", strategy=strategy)
            optimizers, self.lr, self.step = _optimizers(s, stage, steps_per_epoch,
                                                         plan.lr_mults)

            def replica_step(images, labels):
                before = set(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
                logits, _ = model.build(images, is_training=True, frozen=frozen)
                updates = [op for op in tf.get_collection(tf.GraphKeys.UPDATE_OPS)
                           if op not in before]
                trained = _trained_variables(plan)
                loss, xent, correct = _objective(s, logits, labels, model.num_classes,
                                                 trained)
                update = _minimize(s, optimizers, loss / replicas, trained, plan.lr_mults,
                                   self.step, updates)
                with tf.control_dependencies([update]):
                    return tf.identity(xent), correct, tf.size(labels)

            if strategy is None:
                outputs = replica_step(self.train_in.images, self.train_in.labels)
            else:
                per_replica = strategy.experimental_run(lambda batch: replica_step(*batch),
                                                        self.train_in.iterator)
                outputs = [strategy.reduce(op, value, axis=None) for op, value in zip(
                    (tf.distribute.ReduceOp.MEAN, tf.distribute.ReduceOp.SUM,
                     tf.distribute.ReduceOp.SUM), per_replica)]
            self.xent, self.correct, self.batch = outputs
            self.update = _with_decay(s, tf.group(*outputs), _trained_variables(plan),
                                      self.lr, plan.lr_mults)
        self.val_in = None
        if dataset.val is not None:
            self.val_in = data.Input(dataset.val, record, batch_size=s.batch_size,
                                     training=False, seed=s.seed, name="val", repeat=True)
            self.val_started = False
            with tf.variable_scope(tf.get_variable_scope(), reuse=True):
                val_logits, _ = model.build(self.val_in.images, is_training=False)
            self.val_ops = _eval_ops(val_logits, self.val_in.labels, model.num_classes)

    def train_epoch(self, sess, epoch, skip):
        """Yield (xent, correct, batch size, lr) per step of `epoch`, from batch `skip`."""
        self.train_in.start(sess, epoch, skip=skip)
        fetches = [self.update, self.xent, self.correct, self.batch, self.lr]
        for _ in range(self.train_in.steps - skip):
            yield tuple(sess.run(fetches)[1:])

    def evaluate(self, sess):
        if self.val_in is None:
            return None, None
        if not self.val_started:        # one iterator for every pass (data.Input repeat)
            self.val_in.start(sess, 0)
            self.val_started = True
        return _accumulate(sess, self.val_ops, self.val_in.steps)


def _eval_ops(logits, labels, num_classes):
    xent = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits))
    return [xent, _correct(logits, labels), tf.size(labels)]


def _accumulate(sess, ops, steps, feeds=()):
    """(mean loss, accuracy) over `steps` runs of the eval ops (or one run per feed)."""
    total = correct = seen = 0
    for feed in (feeds or [None] * steps):
        xent, hits, n = sess.run(ops, feed)
        total, correct, seen = total + float(xent), correct + int(hits), seen + int(n)
    return (total / seen, correct / seen) if seen else (None, None)


class FeatureTrainer:
    """Trains the head on cached backbone features (features mode) in a graph of the head
    alone; its checkpoints still hold the whole model, for eval, predict and export: nothing
    of the backbone is in the graph, and each checkpoint copies the backbone's tensors from
    the checkpoint (`copied`, loop.Checkpoints), the values the features were made with
    (finetune refuses a features run whose plan leaves a backbone variable fresh)."""

    def __init__(self, s, stage, model, plan, steps_per_epoch, arrays):
        self.s, self.arrays, self.batch_size = s, arrays, s.batch_size
        by_model = {r.model: r for r in plan.restore}
        self.copied = [by_model[m.name] for m in model.backbone_variables()]
        self.x = tf.placeholder(tf.float32, [None, *arrays["train_x"].shape[1:]], "features")
        self.y = tf.placeholder(tf.int64, [None], "labels")
        logits = model.head(self.x, is_training=True)
        trained = _trained_variables(plan)
        loss, self.xent, self.correct = _objective(s, logits, self.y, model.num_classes,
                                                   trained)
        optimizers, self.lr, self.step = _optimizers(s, stage, steps_per_epoch, plan.lr_mults)
        self.update = _with_decay(s, _minimize(s, optimizers, loss, trained, plan.lr_mults,
                                               self.step, []), trained, self.lr, plan.lr_mults)
        self.eval_ops = _eval_ops(model.head(self.x, is_training=False), self.y,
                                  model.num_classes)

    def train_epoch(self, sess, epoch, skip):
        x, y = self.arrays["train_x"], self.arrays["train_y"]
        order = np.random.default_rng([self.s.seed, epoch]).permutation(len(y))
        fetches = [self.update, self.xent, self.correct, self.lr]
        for start in range(skip * self.batch_size, len(y), self.batch_size):
            chosen = order[start:start + self.batch_size]
            _, xent, hits, lr = sess.run(fetches, {self.x: x[chosen], self.y: y[chosen]})
            yield xent, hits, len(chosen), lr

    def evaluate(self, sess):
        if "val_x" not in self.arrays:
            return None, None
        x, y = self.arrays["val_x"], self.arrays["val_y"]
        feeds = [{self.x: x[i:i + 1024], self.y: y[i:i + 1024]}
                 for i in range(0, len(y), 1024)]
        return _accumulate(sess, self.eval_ops, 0, feeds)

