"""Export a train dir's classifier for serving.

    out_dir/saved_model/     SavedModel, tag "serve":
                             "serving_default": image_bytes (string [None], encoded
                               JPEG/PNG/BMP/GIF) -> probabilities, classes (indices),
                               labels (their class names, strings)
                             "predict_arrays": images (uint8 [None, h, w, C]) -> same
                             assets/labels.txt
    out_dir/frozen_graph.pb  GraphDef, variables folded into constants; feed "input:0" with
                             encoded images, fetch "probabilities:0", "classes:0", "logits:0",
                             "labels:0"
    out_dir/model.onnx       (--format onnx|all) ONNX, the same preprocessing inside: feed
                             "images" (uint8 [n, h, w, C], one size per batch, C 1-4), fetch
                             "probabilities", "classes", "labels", "logits"
    out_dir/labels.txt       class names, `index:name` lines
    out_dir/export.json      tensor names, net, image size, preprocessing, labels; its
                             "model" entry gives the size the model takes (run.json's 0
                             means the net's own)

A train dir's ONNX export is also linked (else copied) into TRAIN_DIR/onnx/ with its
export.json and labels, so that `predict` and `eval` find it and run on onnxruntime.

Everything is written into a temporary dir beside out_dir, renamed into place at the end: a
failure leaves nothing behind. Importing this module does not load TensorFlow, and neither
do the checks of the train dir and of out_dir, which run first.
"""
import json
import os

import numpy as np

from ..errors import CkptError
from ..fileio import link_or_copy, quiet_stderr, temp_folder
from ..zoo.pretrained import PREFIX
from .devices import session_config
from .infer import checkpoint_of, inference_graph, restore
from .rundir import LABELS, RUN_ONNX, RunDir
from .settings import EXPORT_FORMATS

SAVED_MODEL, FROZEN, ONNX, EXPORT_JSON = (
    "saved_model", "frozen_graph.pb", "model.onnx", "export.json")
TAG = "serve"
OUTPUTS = ("probabilities", "classes", "labels")
ONNX_INPUT, ONNX_OUTPUTS = "images", ("probabilities", "classes", "labels", "logits")
FORMATS = dict(zip(EXPORT_FORMATS, ((SAVED_MODEL, FROZEN), (ONNX,),
                                     (SAVED_MODEL, FROZEN, ONNX))))
OPSET = 17


def export(train_dir, out_dir, *, checkpoint=None, format="tf"):
    """Export the classifier of `train_dir` (its best checkpoint, else its latest, or
    `checkpoint`) into `out_dir`, which must not exist or be empty; `format` is a key of
    FORMATS. Returns the contents of export.json plus "out_dir" and "files" (the paths
    written)."""
    run = RunDir(train_dir)
    model = run.model()
    labels = run.labels()
    if len(labels) != model.num_classes:
        raise CkptError(f"{run.file(LABELS)}: {len(labels)} labels, but the model has "
                        f"{model.num_classes} classes")
    prefix = checkpoint_of(run, checkpoint)
    written = write_export(model, labels, prefix, out_dir, format=format,
                           restorer=lambda session: restore(session, prefix))
    if ONNX in FORMATS[format] and checkpoint is None:
        _share(written["out_dir"], run.file(RUN_ONNX))
    return written


def export_checkpoint(net, checkpoint, out_dir, *, num_classes=None, format="tf"):
    """Export `net` with every variable from `checkpoint` (any format ckptkit reads,
    pretrained:NAME too, its EMA shadows where the entry says so) without a train dir: its
    own classifier (num_classes None: the published one, labels "0".."N-1" after the label
    offset's "background"), or a new head of `num_classes` classes that the checkpoint
    holds (a run's checkpoint, say). Everything must restore (a strict plan)."""
    from ..plan import RestoreOptions
    from ..zoo.nets import get_net
    from ..zoo.pretrained import pretrained_ema
    from .nets import Model

    from ..paths import resolve

    record = get_net(net)
    resolve(checkpoint)                 # these checks before TF loads
    _check_format(out_dir, format)
    from .restore import apply_plan, plan_model

    model = Model(record.name, num_classes or record.num_classes,
                  keep_head=num_classes is None)
    offset = record.label_offset if model.keep_head else 0
    labels = ["background"] * offset + [str(i) for i in range(model.num_classes - offset)]
    plan = plan_model(checkpoint, model, RestoreOptions(
        strict=True, use_moving_averages=pretrained_ema(checkpoint)))
    return write_export(model, labels, checkpoint, out_dir, format=format,
                        restorer=lambda session: apply_plan(session, plan, checkpoint))


def write_export(model, labels, checkpoint, out_dir, *, format, restorer):
    """Export `model`, set by `restorer(session)` from `checkpoint`, its classes named by
    `labels`, into `out_dir` (see export)."""
    from .. import __version__

    out_dir = _check_format(out_dir, format)
    from ..tfcompat import tf

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    with temp_folder(parent, f".{os.path.basename(out_dir)}.tmp-") as tmp:
        RunDir(tmp).write_labels(labels)
        record = model.record
        info = {
            "net": model.net, "model": {**model.to_json(), "image_size": record.image_size},
            "image_size": record.image_size,
            "channels": record.channels, "preprocessing": record.preprocessing,
            "label_offset": record.label_offset if model.keep_head else 0,
            "num_classes": model.num_classes, "labels": labels,
            "checkpoint": checkpoint if checkpoint.startswith(PREFIX) else
            os.path.abspath(checkpoint),
            "versions": {"ckptkit": __version__, "tensorflow": tf.__version__},
        }
        files = FORMATS[format]
        if SAVED_MODEL in files:
            info["saved_model"] = {"dir": SAVED_MODEL, "tags": [TAG], "signatures":
                                   _saved_model(tf, model, labels, restorer,
                                                os.path.join(tmp, LABELS),
                                                os.path.join(tmp, SAVED_MODEL))}
        if FROZEN in files:
            info["frozen_graph"] = _frozen_graph(tf, model, labels, restorer,
                                                 os.path.join(tmp, FROZEN))
        if ONNX in files:
            with quiet_stderr():    # TF's C++ logs, once tf2onnx and onnxruntime loaded
                info["onnx"] = _onnx(tf, model, labels, restorer, os.path.join(tmp, ONNX))
            info["versions"].update(info["onnx"].pop("versions"))
        with open(os.path.join(tmp, EXPORT_JSON), "w", encoding="utf-8") as f:
            f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
        _check_empty(out_dir)   # nobody wrote there meanwhile
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.rename(tmp, out_dir)
    files = [os.path.join(out_dir, name) for name in (*files, LABELS, EXPORT_JSON)]
    return {**info, "out_dir": out_dir, "files": files}


def _share(out_dir, run_onnx):
    """Put the ONNX export of `out_dir` into the train dir's onnx/ (hard links where the file
    system allows, else copies): built beside it, the old one renamed aside, the new one
    renamed in, the old one removed (between the renames predict finds none: TF runs)."""
    parent = os.path.dirname(run_onnx)
    with temp_folder(parent, f".{RUN_ONNX}.tmp-") as tmp, \
            temp_folder(parent, f".{RUN_ONNX}.old-") as old:
        for name in (ONNX, LABELS, EXPORT_JSON):
            link_or_copy(os.path.join(out_dir, name), os.path.join(tmp, name))
        if os.path.isdir(run_onnx):
            os.rename(run_onnx, os.path.join(old, RUN_ONNX))
        os.rename(tmp, run_onnx)


def _onnx_modules():
    """(tf2onnx, onnx, onnxruntime): the converter, the format and the runtime that
    optimizes the model once, from the [onnx] extra."""
    try:
        with quiet_stderr():
            import onnx
            import onnxruntime
            import tf2onnx
    except ImportError as e:
        raise CkptError(f"ONNX export needs {e.name}: pip install 'ckptkit[onnx]'") from None
    return tf2onnx, onnx, onnxruntime


def _check_format(out_dir, format):
    """The absolute `out_dir`, checked to be empty or new, and `format` to be one whose
    modules are installed."""
    if format not in FORMATS:
        raise CkptError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    _check_empty(out_dir)
    if ONNX in FORMATS[format]:
        _onnx_modules()
    return out_dir


def _check_empty(out_dir):
    if os.path.isdir(out_dir):
        if os.listdir(out_dir):
            raise CkptError(f"{out_dir}: exists and is not empty; export into a new or empty "
                            "directory")
    elif os.path.lexists(out_dir):
        raise CkptError(f"{out_dir}: exists and is not a directory")


def _names(tensors, keys):
    return {key: tensors[key].name for key in keys}


def _saved_model(tf, model, labels, restorer, labels_path, path):
    """Write the SavedModel; returns its signatures as {name: {inputs, outputs}} of tensor
    names."""
    predict_signature = tf.saved_model.signature_def_utils.predict_signature_def
    graph = tf.Graph()
    with graph.as_default():
        by_bytes = inference_graph(model, inputs="bytes", labels=labels)
        by_arrays = inference_graph(model, inputs="arrays", scope="arrays", labels=labels)
        asset = tf.constant(labels_path, name="labels_path")
        tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS, asset)
        signatures = {
            "serving_default": ({"image_bytes": by_bytes["input"]},
                                {k: by_bytes[k] for k in OUTPUTS}),
            "predict_arrays": ({"images": by_arrays["input"]},
                               {k: by_arrays[k] for k in OUTPUTS}),
        }
        with tf.Session(graph=graph, config=session_config()) as sess:
            restorer(sess)
            builder = tf.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                sess, [TAG], clear_devices=True,
                assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS),
                signature_def_map={
                    name: predict_signature(inputs, outputs)
                    for name, (inputs, outputs) in signatures.items()})
            builder.save()
    return {name: {"inputs": _names(inputs, inputs), "outputs": _names(outputs, outputs)}
            for name, (inputs, outputs) in signatures.items()}


def _frozen(tf, model, labels, restorer, inputs, outputs):
    """(GraphDef with the variables folded into constants, its tensors) of the inference
    graph taking `inputs`."""
    graph = tf.Graph()
    with graph.as_default():
        tensors = inference_graph(model, inputs=inputs, labels=labels)
        with tf.Session(graph=graph, config=session_config()) as sess:
            restorer(sess)
            graph_def = tf.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(add_shapes=True),
                [tensors[k].op.name for k in outputs])
    for node in graph_def.node:
        node.device = ""
    return graph_def, tensors


def _frozen_graph(tf, model, labels, restorer, path):
    """Write the frozen GraphDef (bytes input); returns its tensor names."""
    outputs = ("probabilities", "classes", "logits", "labels")
    graph_def, tensors = _frozen(tf, model, labels, restorer, "bytes", outputs)
    with open(path, "wb") as f:
        f.write(graph_def.SerializeToString())
    return {"file": FROZEN, "input": tensors["input"].name,
            "input_format": "string [None]: encoded JPEG, PNG, BMP or GIF file contents",
            "outputs": _names(tensors, outputs)}


def _onnx(tf, model, labels, restorer, path):
    """Write the ONNX model of the arrays inference graph through tf2onnx; returns its
    facts. An op tf2onnx cannot convert is named in a CkptError.

    The weights do not go through the converter: its passes keep copies of every constant
    (about 35x the weights at their peak: 9 GB for resnet_v1_50, more than a 24 GB machine
    has for VGG 16). Large constants become graph inputs while it converts, then
    initializers of the same values; onnxruntime folds the layout changes (HWIO -> OIHW) it
    puts on them, once, here (_optimized)."""
    tf2onnx, onnx, ort = _onnx_modules()
    graph_def, tensors = _frozen(tf, model, labels, restorer, "arrays", ONNX_OUTPUTS)
    weights = _weights_as_inputs(tf, graph_def)
    names = {tensors["input"].name: ONNX_INPUT,
             **{tensors[k].name: k for k in ONNX_OUTPUTS}}
    proto, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=[tensors["input"].name, *(f"{w}:0" for w in weights)],
        output_names=[tensors[k].name for k in ONNX_OUTPUTS], opset=OPSET,
        tensors_to_rename=names)
    del graph_def
    unconverted = sorted({f"{node.op_type} ({node.name})" for node in proto.graph.node
                          if node.domain in ("", "ai.onnx")
                          and not onnx.defs.has(node.op_type)})
    if unconverted:
        raise CkptError(f"{model.net}: tf2onnx cannot convert op {', '.join(unconverted)}; "
                        "export --format tf instead")
    inputs = list(proto.graph.input)
    del proto.graph.input[:]
    for item in inputs:
        name = item.name[:-2] if item.name.endswith(":0") else item.name
        if name in weights:
            proto.graph.initializer.append(onnx.numpy_helper.from_array(weights.pop(name),
                                                                        item.name))
        else:
            proto.graph.input.append(item)
    onnx.save(proto, path + ".converted")
    del proto
    _optimized(ort, path + ".converted", path)
    os.remove(path + ".converted")
    return {"file": ONNX, "opset": OPSET, "input": ONNX_INPUT,
            "input_format": "uint8 [n, height, width, channels]: one batch of one size, "
                            "1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels",
            "outputs": list(ONNX_OUTPUTS),
            "versions": {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__}}


def _optimized(ort, source, path):
    """Write model `source` to `path` as onnxruntime's basic graph optimizations leave it:
    constants folded (the converter's layout changes on the weights), batch norms folded
    into convolutions, redundant nodes removed. They keep to standard ONNX ops and hold on
    every execution provider; a consumer loading the result does not redo them (0.5 s
    instead of 1.0 s for resnet_v1_50)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = path
    options.log_severity_level = 3
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _weights_as_inputs(tf, graph_def, smallest=1024):
    """Turn the float constants of `graph_def` with at least `smallest` elements (the
    weights) into placeholders of their name, dtype and shape; {name: value}."""
    weights = {}
    for node in graph_def.node:
        if node.op != "Const" or node.attr["dtype"].type != tf.float32.as_datatype_enum:
            continue
        shape = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
        if int(np.prod(shape)) < smallest:
            continue
        weights[node.name] = tf.make_ndarray(node.attr["value"].tensor)
        node.op = "Placeholder"
        del node.attr["value"]
        node.attr["shape"].shape.CopyFrom(tf.TensorShape(shape).as_proto())
    return weights
