"""The ONNX side of tools/bench (figure 11): a resnet_v1_50 train dir with an ONNX export, and
200 photos to classify. Run by tools/bench with the venv's Python.

    python tools/bench_onnx.py setup OUT_DIR
        OUT_DIR/run: a train dir of resnet_v1_50 with a new 10-class head (classes c0..c9),
        its weights randomly initialised with a fixed seed and saved by TF (the weights do not
        change the time), exported with `ckptkit export --format onnx` (which puts the export
        in OUT_DIR/run/onnx/); OUT_DIR/photos: 200 JPEGs (quality 90), 20 per class folder,
        crops of 160 to 400 pixels a side of the real photos scikit-learn and matplotlib ship
        (china.jpg, flower.jpg, grace_hopper.jpg); OUT_DIR/one.jpg: one of them. Skipped
        when OUT_DIR/stamp exists.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CLASSES = [f"c{i}" for i in range(10)]


def photos():
    import matplotlib
    import sklearn.datasets
    from PIL import Image

    images = Path(sklearn.datasets.__file__).parent / "images"
    paths = [images / "china.jpg", images / "flower.jpg",
             Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def setup(out):
    from PIL import Image

    out = Path(out)
    if (out / "stamp").is_file():
        return
    rng = np.random.default_rng(0)
    sources = photos()
    for i in range(200):
        photo = sources[i % 3]
        h, w = (int(rng.integers(160, min(401, s))) for s in photo.shape[:2])
        top, left = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
        folder = out / "photos" / CLASSES[i % 10]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[top:top + h, left:left + w]).save(folder / f"{i:03d}.jpg",
                                                                 quality=90)
    (out / "one.jpg").write_bytes((out / "photos" / "c0" / "000.jpg").read_bytes())

    from ckptkit.tfcompat import tf
    from ckptkit.train.nets import Model
    from ckptkit.train.rundir import RunDir

    run = RunDir(out / "run")
    os.makedirs(run.path, exist_ok=True)
    model = Model("resnet_v1_50", num_classes=10)
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        model.build(tf.placeholder(tf.float32, [None, 224, 224, 3]), is_training=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, run.prefix, global_step=0)
    run.write_json("run.json", {"model": model.to_json()})
    run.write_labels(CLASSES)
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ckptkit"), "export",
                    "--train-dir", run.path, "-o",
                    str(out / "export"), "--format", "onnx"], check=True)
    (out / "stamp").write_text("ok\n")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup").add_argument("out")
    args = parser.parse_args()
    setup(args.out)


if __name__ == "__main__":
    main()
