"""The fine-tuning side of tools/bench: its image data, its hand-written baseline and its
restore timing. Run by tools/bench with the venv's Python; each subcommand is one process.

    python tools/bench_finetune.py data OUT_DIR [--size S --per-class N --val-per-class M]
        Write scikit-learn's digits as RGB PNGs (tests/helpers/images.py) in the layout `ckptkit
        finetune` reads: OUT_DIR/train/<digit>/*.png and OUT_DIR/val/<digit>/*.png, 10 classes.
        Skipped when OUT_DIR already holds exactly these images (a stamp file records them).

    python tools/bench_finetune.py baseline --net NET --data DIR --checkpoint CKPT \
            --image-size S --batch-size B --epochs E --out FILE [--first-step-out FILE]
        The baseline of the throughput figures: a minimal tf_slim training loop on DIR/train/.
        NET is resnet_v1_50 (the default; tf_slim's), mobilenet_v1 or inception_resnet_v2:
        tf_slim ships no MobileNet and no Inception-ResNet-v2, so those two come from
        ckptkit.train.architectures (the net function and its arg_scope, the definition
        ckptkit's zoo builds); nothing else of ckptkit runs here but the import shim
        (ckptkit.tfcompat, which makes tf_slim import on TF 2.21 and turns on graph mode). The
        loop: the net's features (num_classes=None) under its arg_scope, then a head written
        here, global average pool + a 1x1 convolution to the classes, squeezed (what tf_slim's
        resnet_v1 logits are); the net's variables restored from CKPT with a tf.train.Saver; a
        plain tf.data pipeline (read_file, decode_png, the net's eval-style preprocessing as
        ckptkit's: VGG resize, central crop and mean subtraction for resnet_v1_50, Inception
        central 87.5% crop, resize and scaling to [-1, 1] for the others; shuffle, batch,
        prefetch); cross-entropy plus the arg_scope's weight decay, MomentumOptimizer(0.01,
        0.9) on every trainable variable with the UPDATE_OPS as control dependencies. Like
        ckptkit, an epoch's time is the sum of its sess.run calls (the iterator's
        initialisation included, in the first); FILE gets one JSON line per epoch: epoch,
        images, seconds, images_per_sec.

    python tools/bench_finetune.py overheads --net NET --data DIR --checkpoint CKPT \
            --image-size S --batch-size B --epochs E --train-dir RUN \
            [--mode MODE] [--save-every SECONDS] --out FILE
        The overheads figure (issue 20): `ckptkit finetune --mode MODE` (default finetune)
        of NET restored from CKPT with --exclude Logits and --no-augment, run in this process
        through the library call the command makes (finetune.finetune, curves.png
        included), with a progress callback and an on_epoch hook that note the time since
        this process started (since_start). FILE gets one JSON object: first_step
        (seconds to the end of the first training step), finished, and per epoch: epoch,
        step, images_per_sec (metrics.jsonl's: its images / the seconds of its training
        steps), first_step and last_step (when they ended), ended (its on_epoch call:
        evaluation and checkpoints done) and saved (whether the rolling checkpoint of its
        step was on disk then).
        The baseline's --first-step-out FILE writes {"first_step": seconds} the same way.

    python tools/bench_finetune.py restore --checkpoint CKPT --runs N --out FILE
        The restore figure, in this one process: resnet_v1_50 with a new 5-class head
        (ckptkit.train.nets.build) in two graphs of their own, one Session each, the plan made
        by restore.plan_model, as `ckptkit finetune` makes it (--exclude Logits). One untimed call of each, then N
        rounds, each timing apply_plan(sess_a, plan, CKPT) and then tf.train.Saver({ckpt name:
        variable}).restore(sess_b, CKPT) for the same variables; both calls create their graph
        ops (apply_plan's placeholders and assigns, the Saver's restore ops) inside the timed
        call. Then, as context, N restores by a Saver built once (the session run alone). The
        restored values are compared between the two sessions. FILE gets one JSON object:
        variables, and the seconds of each call under apply_plan, saver, saver_built_once.
"""
import argparse
import json
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VGG_MEANS = (123.68, 116.78, 103.94)    # what ckptkit's vgg preprocessing subtracts
STAMP = ".bench-data.json"
NUM_CLASSES = 10


# --- data ---------------------------------------------------------------------------------

def make_data(out, size, per_class, val_per_class):
    """Write the image folder (skipped when the stamp says it is there already)."""
    wanted = {"size": size, "per_class": per_class, "val_per_class": val_per_class,
              "classes": NUM_CLASSES, "rgb": True}
    stamp = os.path.join(out, STAMP)
    try:
        with open(stamp) as f:
            if json.load(f) == wanted:
                return 0
    except (OSError, ValueError):
        pass
    import shutil

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers.images import digits_folder

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    digits_folder(os.path.join(out, "train"), range(NUM_CLASSES), per_class, size=size,
                  rgb=True)
    digits_folder(os.path.join(out, "val"), range(NUM_CLASSES), val_per_class,
                  offset=per_class, size=size, rgb=True)
    with open(stamp, "w") as f:
        json.dump(wanted, f)
    print(f"wrote {out}: {NUM_CLASSES * per_class} training and {NUM_CLASSES * val_per_class} "
          f"validation PNGs of {size}x{size} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    return 0


def _image_folder(root):
    """(paths, labels, classes) of a folder of class folders."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    paths, labels = [], []
    for label, name in enumerate(classes):
        for image in sorted(os.listdir(os.path.join(root, name))):
            paths.append(os.path.join(root, name, image))
            labels.append(label)
    return paths, labels, classes


def since_start():
    """Seconds since this process started: /proc/self/stat's start time (clock ticks since
    boot, 10 ms resolution) against the boot-time clock, so a figure includes the
    interpreter's start-up and imports as a whole-process wall time does."""
    with open("/proc/self/stat") as f:
        started = int(f.read().rpartition(")")[2].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started / os.sysconf("SC_CLK_TCK")


def _write_json(path, value):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f)


# --- the baseline training loop -----------------------------------------------------------

# the baseline's nets: the module, its net function and arg_scope function (tf_slim's
# resnet_v1_50; ckptkit's definitions of the two nets tf_slim lacks), the net function's
# keyword arguments, the preprocessing
BASELINE_NETS = {
    "resnet_v1_50": ("tf_slim.nets.resnet_v1", "resnet_v1_50", "resnet_arg_scope",
                     {"global_pool": True}, "vgg"),
    "mobilenet_v1": ("ckptkit.train.architectures.mobilenet_v1", "mobilenet_v1",
                     "mobilenet_v1_arg_scope", {}, "inception"),
    "inception_resnet_v2": ("ckptkit.train.architectures.inception_resnet_v2",
                            "inception_resnet_v2", "inception_resnet_v2_arg_scope", {},
                            "inception"),
}


def baseline(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.filterwarnings("ignore")
    import importlib

    from ckptkit.tfcompat import slim, tf  # noqa: I001  (graph mode + tf_slim import shim)

    module, net_fn, arg_scope, kwargs, preprocessing = BASELINE_NETS[args.net]
    module = importlib.import_module(module)
    net_fn, arg_scope = getattr(module, net_fn), getattr(module, arg_scope)
    paths, labels, classes = _image_folder(os.path.join(args.data, "train"))
    size, batch = args.image_size, args.batch_size
    side = size * 256 // 224
    steps = math.ceil(len(paths) / batch)

    def load(path, label):
        image = tf.cast(tf.io.decode_png(tf.io.read_file(path), channels=3), tf.float32)
        if preprocessing == "inception":
            image = tf.image.resize(tf.image.central_crop(image, 0.875), [size, size])
            image = image / 127.5 - 1.0
        else:
            hw = tf.cast(tf.shape(image)[:2], tf.float32)
            scaled = tf.cast(tf.round(hw * (side / tf.reduce_min(hw))), tf.int32)
            image = tf.image.resize(image, tf.maximum(scaled, side))
            hw = tf.shape(image)[:2]
            top, left = (hw[0] - size) // 2, (hw[1] - size) // 2
            image = image[top:top + size, left:left + size] - tf.constant(VGG_MEANS)
        image.set_shape([size, size, 3])
        return image, label

    tf.set_random_seed(0)
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths), seed=0)
    dataset = dataset.map(load, num_parallel_calls=tf.data.experimental.AUTOTUNE)
    iterator = tf.data.make_initializable_iterator(
        dataset.batch(batch).prefetch(tf.data.experimental.AUTOTUNE))
    images, targets = iterator.get_next()
    with slim.arg_scope(arg_scope()):
        features, _ = net_fn(images, num_classes=None, is_training=True, **kwargs)
        backbone = tf.global_variables()
        pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
        logits = slim.conv2d(pooled, len(classes), [1, 1], activation_fn=None,
                             normalizer_fn=None, scope="logits")
    logits = tf.squeeze(logits, [1, 2])
    loss = tf.losses.sparse_softmax_cross_entropy(targets, logits)
    loss += tf.losses.get_regularization_loss()
    step = tf.train.get_or_create_global_step()
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        train_op = tf.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=step)
    saver = tf.train.Saver(backbone)

    rows, first_step_out = [], args.first_step_out
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        saver.restore(sess, args.checkpoint)
        for epoch in range(args.epochs):
            seconds = 0.0
            begun = time.perf_counter()
            sess.run(iterator.initializer)
            for _ in range(steps):
                sess.run([train_op, loss])
                seconds += time.perf_counter() - begun
                begun = time.perf_counter()
                if first_step_out:
                    _write_json(first_step_out, {"first_step": since_start()})
                    first_step_out = None
            rows.append({"epoch": epoch + 1, "images": len(paths), "seconds": seconds,
                         "images_per_sec": len(paths) / seconds})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return 0


# --- overheads ----------------------------------------------------------------------------

def overheads(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import contextlib
    import warnings

    warnings.filterwarnings("ignore")
    from ckptkit.plan import RestoreOptions
    from ckptkit.train.finetune import finetune
    from ckptkit.train.settings import Settings

    marks, epoch = {"first_step": None, "epochs": []}, {}

    @contextlib.contextmanager
    def progress(total, label):
        def advance(n, **fields):
            now = since_start()
            marks["first_step"] = marks["first_step"] or now
            epoch.setdefault("first_step", now)
            epoch["last_step"] = now
        yield advance

    def on_epoch(row):
        ended = since_start()
        saved = os.path.isfile(os.path.join(args.train_dir, f"model.ckpt-{row['step']}.index"))
        marks["epochs"].append({"epoch": row["epoch"], "step": row["step"],
                                "images_per_sec": row["images_per_sec"], **epoch,
                                "ended": ended, "saved": saved})
        epoch.clear()

    settings = Settings(
        net=args.net, checkpoint=args.checkpoint, data=args.data, train_dir=args.train_dir,
        image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        mode=args.mode, augment=False, save_every=args.save_every,
        restore=RestoreOptions(exclude=("Logits",)))
    finetune(settings, progress=progress, on_epoch=on_epoch)
    marks["finished"] = since_start()
    _write_json(args.out, marks)
    return 0


# --- restore ------------------------------------------------------------------------------

def restore(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np

    from ckptkit.plan import RestoreOptions
    from ckptkit.tfcompat import tf
    from ckptkit.train.nets import Model, build
    from ckptkit.train.restore import apply_plan, plan_model
    from ckptkit.zoo.nets import get_net

    net, classes = "resnet_v1_50", 5
    record = get_net(net)
    plan = plan_model(args.checkpoint, Model(net, classes),
                      RestoreOptions(exclude=("Logits",)))
    if any(item.offset for item in plan.restore):
        sys.exit("restore: the plan slices a tensor (label offset); a Saver cannot do that")

    def session():
        graph = tf.Graph()
        with graph.as_default():
            build(net, tf.placeholder(tf.float32, [1, record.image_size, record.image_size,
                                                   record.channels]), classes,
                  is_training=False)
            by_name = {v.op.name: v for v in tf.global_variables()}
            init = tf.global_variables_initializer()
        sess = tf.Session(graph=graph)
        sess.run(init)
        return sess, {item.ckpt: by_name[item.model] for item in plan.restore}

    plan_sess, plan_vars = session()
    saver_sess, var_list = session()
    times = {"apply_plan": [], "saver": [], "saver_built_once": []}
    apply_plan(plan_sess, plan, args.checkpoint)        # untimed: warm caches, first runs
    with saver_sess.graph.as_default():
        tf.train.Saver(var_list).restore(saver_sess, args.checkpoint)
    for _ in range(args.runs):
        start = time.perf_counter()
        count = apply_plan(plan_sess, plan, args.checkpoint)
        times["apply_plan"].append(time.perf_counter() - start)
        with saver_sess.graph.as_default():
            start = time.perf_counter()
            tf.train.Saver(var_list).restore(saver_sess, args.checkpoint)
            times["saver"].append(time.perf_counter() - start)
    with saver_sess.graph.as_default():
        saver = tf.train.Saver(var_list)
    saver.restore(saver_sess, args.checkpoint)          # untimed
    for _ in range(args.runs):
        start = time.perf_counter()
        saver.restore(saver_sess, args.checkpoint)
        times["saver_built_once"].append(time.perf_counter() - start)
    # both sessions must now hold the same values (random initialisers, unseeded, differ)
    names = sorted(var_list)
    a = plan_sess.run([plan_vars[n] for n in names])
    b = saver_sess.run([var_list[n] for n in names])
    differ = [n for n, x, y in zip(names, a, b) if not np.array_equal(x, y)]
    if differ or count != len(var_list):
        sys.exit(f"restore: apply_plan restored {count} variables, the Saver {len(var_list)}; "
                 f"values differ in {differ[:5]}")
    with open(args.out, "w") as f:
        json.dump({"variables": count, **times}, f)
    return 0


def main(argv):
    parser = argparse.ArgumentParser(prog="tools/bench_finetune.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--per-class", type=int, default=16)
    p.add_argument("--val-per-class", type=int, default=2)
    p = sub.add_parser("baseline")
    p.add_argument("--net", choices=sorted(BASELINE_NETS), default="resnet_v1_50")
    for name in ("--data", "--checkpoint", "--out"):
        p.add_argument(name, required=True)
    for name in ("--image-size", "--batch-size", "--epochs"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--first-step-out")
    p = sub.add_parser("overheads")
    p.add_argument("--net", default="resnet_v1_50")
    p.add_argument("--mode", default="finetune")
    p.add_argument("--save-every", type=float, default=600.0)
    for name in ("--data", "--checkpoint", "--train-dir", "--out"):
        p.add_argument(name, required=True)
    for name in ("--image-size", "--batch-size", "--epochs"):
        p.add_argument(name, type=int, required=True)
    p = sub.add_parser("restore")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "data":
        return make_data(args.out, args.size, args.per_class, args.val_per_class)
    return {"baseline": baseline, "overheads": overheads, "restore": restore}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
