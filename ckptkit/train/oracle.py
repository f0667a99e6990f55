"""The tf_slim graph as the oracle of a port (port/certificate.py): the net built the way
`finetune` builds it, restored from the same checkpoint under the same restore plan, run on
the images after the net's eval preprocessing; its end points by name.

It runs in a process of its own, `python -m ckptkit.train.oracle REQUEST OUT`: TF1's graph
mode (tfcompat turns eager execution off for the whole process) and Keras 3 on TensorFlow
(eager) cannot share one. REQUEST is JSON {"net", "checkpoint", "options" (RestoreOptions as
JSON), "num_classes", "run_model", "images": [files] or null for port.certificate's built-in
set}: a port of a fine-tuning run gives "run_model" (its run.json "model" entry), and the
oracle is that Model; else the net with the checkpoint's own classifier of "num_classes"
classes. OUT gets an .npz of "inputs" (the preprocessed images both sides see), "names" and
"end_point_<i>" (the last one is "logits"). A CkptError is one line on stderr and exit status 2.
"""
import dataclasses
import json
import sys

import numpy as np

from ..errors import CkptError
from ..plan import RestoreOptions
from .devices import session_config


def preprocessed(net, images):
    """float32 [n, size, size, C] of `images` (uint8 [h, w, C] arrays, or encoded image bytes)
    after `net`'s eval preprocessing."""
    from ..tfcompat import tf
    from .nets import preprocess

    with tf.Graph().as_default() as graph:
        raw = tf.placeholder(tf.uint8, [None, None, None])
        encoded = tf.placeholder(tf.string, [])
        decoded = tf.io.decode_image(encoded, channels=0, expand_animations=False)
        out = preprocess(net, raw, is_training=False)
        with tf.Session(graph=graph, config=session_config()) as session:
            arrays = []
            for image in images:
                if isinstance(image, bytes):
                    try:
                        image = session.run(decoded, {encoded: image})
                    except tf.errors.OpError as e:
                        raise CkptError("cannot decode an image: "
                                        f"{e.message.splitlines()[0]}") from None
                arrays.append(session.run(out, {raw: image}))
    return np.stack(arrays)


def slim_end_points(model, checkpoint, options, inputs):
    """{end point name: array} of `model` (nets.Model, built for inference) restored from
    `checkpoint` under `options` (plan.RestoreOptions), on `inputs`; "logits" last: the
    model's output."""
    from ..tfcompat import tf
    from .restore import apply_plan, plan_model

    plan = plan_model(checkpoint, model, options)
    with tf.Graph().as_default() as graph:
        images = tf.placeholder(tf.float32, [None, *inputs.shape[1:]])
        logits, end_points = model.build(images, is_training=False)
        fetches = {name: tensor for name, tensor in end_points.items()
                   if isinstance(tensor, tf.Tensor)}
        fetches["logits"] = logits
        with tf.Session(graph=graph, config=session_config()) as session:
            session.run(tf.global_variables_initializer())
            apply_plan(session, plan, checkpoint)
            return session.run(fetches, {images: inputs})


def run(request, out):
    """Answer one REQUEST (see the module notes) into `out`."""
    from ..port.certificate import builtin_images

    model = _model(request)
    record = model.record
    files = request["images"]
    images = [open(f, "rb").read() for f in files] if files else \
        builtin_images(record.image_size, record.channels)
    inputs = preprocessed(record, images)
    outputs = slim_end_points(model, request["checkpoint"],
                              RestoreOptions(**request["options"]), inputs)
    names = list(outputs)
    np.savez(out, inputs=inputs, names=np.array(names),
             **{f"end_point_{i}": outputs[name] for i, name in enumerate(names)})


def _model(request):
    """The nets.Model the port mirrors: the run's, else the net keeping its classifier."""
    from ..zoo.nets import get_net
    from .nets import Model

    if request.get("run_model"):
        return Model.from_json(request["run_model"])
    record, classes = get_net(request["net"]), request["num_classes"]
    if classes != record.num_classes:     # a checkpoint of the net with its own classifier
        record = dataclasses.replace(record, num_classes=classes, label_offset=0)
    return Model(record, classes, keep_head=True)


if __name__ == "__main__":
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            run(json.load(f), sys.argv[2])
    except CkptError as e:
        print(f"ckptkit: error: {e}", file=sys.stderr)
        sys.exit(2)
