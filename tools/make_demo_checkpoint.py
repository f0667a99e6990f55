"""Write a small real tf_slim checkpoint for the demo: a two-block ResNet v1 (slim's own
blocks, so names look like resnet_v1_50's) after a few Adam steps, saved as a V2 bundle (with
optimizer slots and global_step) and its model variables as a V1 file."""
import os
import sys

import numpy as np

from ckptkit.tfcompat import slim, tf
from tf_slim.nets import resnet_v1


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.random((32, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 32)
    tf.set_random_seed(0)
    blocks = [resnet_v1.resnet_v1_block("block1", base_depth=8, num_units=2, stride=2),
              resnet_v1.resnet_v1_block("block2", base_depth=16, num_units=2, stride=1)]
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
        logits, _ = resnet_v1.resnet_v1(tf.constant(images), blocks, num_classes=10,
                                        scope="resnet_v1_tiny")
        logits = tf.squeeze(logits, [1, 2])
    loss = tf.losses.sparse_softmax_cross_entropy(tf.constant(labels), logits)
    step = tf.train.get_or_create_global_step()
    train = tf.train.AdamOptimizer(1e-3).minimize(loss, global_step=step)
    model_vars = slim.get_model_variables()
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for _ in range(3):
            sess.run(train)
        tf.train.Saver().save(sess, os.path.join(out_dir, "resnet_tiny.ckpt"), global_step=step)
        tf.train.Saver(model_vars, write_version=tf.train.SaverDef.V1).save(
            sess, os.path.join(out_dir, "resnet_tiny_v1.ckpt"), write_meta_graph=False,
            write_state=False)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-data")
