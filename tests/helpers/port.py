"""Random-init checkpoints of the zoo's nets, written by TensorFlow, for the port tests: batch
norm's statistics, gamma and beta are drawn too (TF initialises them to 0 and 1, which would
hide a wrong epsilon or a swapped mean and variance)."""
import numpy as np

from ckptkit.train.nets import Model
from ckptkit.zoo.nets import get_net

STATS = {"moving_mean": (-0.2, 0.2), "moving_variance": (0.3, 1.5), "gamma": (0.5, 1.5),
         "beta": (-0.2, 0.2)}


def random_checkpoint(tf, net, prefix, seed=0, num_classes=None):
    """Save `net` (its own classifier, `num_classes` or the record's classes), randomly
    initialised, at `prefix`; returns the saved prefix."""
    record = get_net(net)
    model = Model(net, num_classes or record.num_classes, keep_head=True)
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        images = tf.placeholder(tf.float32, [None, record.image_size, record.image_size,
                                             record.channels])
        model.build(images, is_training=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for var in tf.global_variables():
                low_high = STATS.get(var.op.name.rpartition("/")[2])
                if low_high:
                    var.load(rng.uniform(*low_high, var.shape.as_list()).astype(np.float32),
                             sess)
            return tf.train.Saver().save(sess, str(prefix))
