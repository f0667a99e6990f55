"""A ckptkit Model saved by TensorFlow, randomly initialised with a fixed seed: the checkpoint
the train-dir and port tests start from."""
import numpy as np


def save_random(tf, model, prefix, seed=0, step=None, ranges=None):
    """Build `model` for inference in a fresh graph, initialise it (seeded), draw the
    variables whose last name component is a key of `ranges` uniformly from its (low, high),
    and save at `prefix` (with `step`, as Saver's global_step); returns the saved prefix."""
    record, ranges = model.record, ranges or {}
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        images = tf.placeholder(tf.float32, [None, record.image_size, record.image_size,
                                             record.channels])
        model.build(images, is_training=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for var in tf.global_variables():
                low_high = ranges.get(var.op.name.rpartition("/")[2])
                if low_high:
                    var.load(rng.uniform(*low_high, var.shape.as_list()).astype(np.float32),
                             sess)
            return tf.train.Saver().save(sess, str(prefix), global_step=step)
