"""A slim checkpoint as a Keras 3 model: the net's Keras builder (port/nets/, named by its
NetRecord) makes the layers from the checkpoint's shapes, the restore plan (plan.plan_for,
the same as `plan` and `finetune`) pairs every Keras weight with a checkpoint tensor, and the
weights are copied in, TF-free.

The saved `.keras` is a plain Keras 3 model (built-in layers only: it loads with
`keras.saving.load_model` anywhere, without ckptkit). Its metadata.json gains a "ckptkit"
object: the net, source checkpoint, classes (and their names, for a run), label offset,
preprocessing, image size, a run's model entry, and "weights": {Keras weight path:
checkpoint tensor}, so every weight says where it came from.

A fine-tuning run (`ckptkit finetune`) ports with its own head: the new head ckptkit put on
the net's features (layers.NewHead), at the run's image size, its class names in the
metadata.

The model's input is what the slim net takes (float32 NHWC after the net's preprocessing) and
its output the logits; `include_preprocessing` puts the value part of the preprocessing in
front (a uint8 image already at the net's size, scaled as the net expects: inception to
[-1, 1], vgg minus the ImageNet means, lenet (x - 128) / 128); cifarnet's per-image
standardisation has no built-in Keras layer, so it is refused there.
"""
import dataclasses
import json
import os
import tempfile
import zipfile

import keras

from ..errors import CkptError, PlanError
from ..fileio import atomic_file, new_output, output_lock
from ..plan import ModelVar, plan_for, renamed
from ..scopes import compile_pattern, role
from ..zoo.nets import VGG_MEANS, get_net, load_ref
from .layers import NewHead, Slim

METADATA = "metadata.json"


@dataclasses.dataclass
class Ported:
    """A Keras model made from a checkpoint, with what the certificate and the report need;
    `metadata` is what the saved model says of itself (its "new_head": a classifier of
    Keras' initialisation, which the certificate cannot compare)."""

    model: object                 # keras.Model: preprocessed images -> logits
    record: object                # the NetRecord (at the ported class count and image size)
    plan: object                  # the RestorePlan that filled it
    end_points: dict              # slim end point name -> Keras tensor of `model`'s graph
    metadata: dict
    checkpoint_classes: int       # of the checkpoint's own classifier (the oracle's)
    files: list                   # the checkpoint's files, which the output may not replace

    def end_point_model(self):
        """A model sharing `model`'s layers that outputs every end point, in build order."""
        return keras.Model(self.model.input, list(self.end_points.values()))


def port_keras(reader, net, options, *, num_classes=None, drop_background=False, run=None):
    """Ported model of `net` with the weights of the open checkpoint `reader`
    (paths.open_checkpoint) under `options` (plan.RestoreOptions). num_classes: a new
    classifier of that many classes (Keras' initialisation) in place of the checkpoint's;
    drop_background: a 1001-class classifier without its background class. Anything the net
    needs that the checkpoint lacks, or holds in another shape, is an error.

    run: a fine-tuning run's {"model": its run.json "model" entry (net, num_classes,
    image_size, head_scope, hidden, dropout, keep_head), "class_names": its labels}: the
    model at the run's image size with the run's head (a new one as train/heads.py builds
    it, or the net's own), every weight from the checkpoint."""
    record = get_net(net)
    if not record.keras:
        raise CkptError(f"{record.name} has no Keras builder yet; the nets that port: "
                        f"{', '.join(keras_nets())}")
    head = None
    if run:
        entry = run["model"]
        record = dataclasses.replace(record, image_size=entry["image_size"]
                                     or record.image_size)
        if not entry["keep_head"]:
            head = NewHead(entry["head_scope"], len(entry["hidden"]), entry["dropout"])
    variables = list(reader)
    shapes = {name: v.shape for name, v in renamed(
        [v for v in variables if role(v.name) == "model"], options.maps).items()}
    classes, source_classes = num_classes, _checkpoint_classes(record, shapes)
    if drop_background:
        if num_classes is not None or record.label_offset != 1:
            raise CkptError("--drop-background drops the background class of a 1001-class "
                            f"classifier; {record.name} has none" if num_classes is None
                            else "give either --num-classes or --drop-background")
        classes = source_classes - 1
    slim = Slim(shapes, classes=classes, head=head)
    inputs = keras.Input((record.image_size, record.image_size, record.channels),
                         name="images")
    logits = load_ref(record.keras)(slim, record, inputs)
    model = keras.Model(inputs, logits, name=record.name.rpartition(":")[2])
    model_vars = [ModelVar(v.name, v.shape, "float32", v.trainable) for v in slim.variables]
    new_head = num_classes is not None
    plan = plan_for(variables, model_vars, options, label_offset=record.label_offset,
                    classifier=record.classifier_scopes if new_head else ())
    if reader.note:
        plan.notes.append(reader.note)
    _check_complete(plan, record, new_head)
    weights = {v.name: v.weight for v in slim.variables}
    for item in plan.restore:
        weights[item.model].assign(item.sliced(reader.read(item.ckpt)))
    classes = int(model.output.shape[-1])
    record = dataclasses.replace(record, num_classes=classes,
                                 label_offset=record.label_offset
                                 if classes == record.num_classes and not head else 0)
    source = {item.model: item.ckpt for item in plan.restore}
    metadata = {
        "net": record.name, "checkpoint": os.path.abspath(reader.path),
        "num_classes": classes, "label_offset": record.label_offset,
        "class_names": run["class_names"] if run else None,
        "image_size": record.image_size, "channels": record.channels,
        "preprocessing": record.preprocessing, "input": "float32 NHWC, preprocessed",
        "output": "logits", "new_head": new_head, "run_model": run["model"] if run else None,
        "weights": {v.weight.path: source.get(v.name) for v in slim.variables},
    }
    return Ported(model, record, plan, slim.end_points, metadata, source_classes,
                  list(reader.files))


def with_preprocessing(ported):
    """`ported` taking uint8 images at the net's size: its preprocessing's scaling in front."""
    kind = ported.record.preprocessing
    if kind == "cifarnet":
        raise CkptError("cifarnet's preprocessing (per-image standardisation) has no built-in "
                        "Keras layer; port without --include-preprocessing")
    scale, offset = {"inception": (1 / 127.5, -1.0), "lenet": (1 / 128, -1.0),
                     "vgg": (1.0, [-m for m in VGG_MEANS])}[kind]
    size, channels = ported.record.image_size, ported.record.channels
    images = keras.Input((size, size, channels), dtype="uint8", name="uint8_images")
    scaled = keras.layers.Rescaling(scale, offset, name="preprocessing")(images)
    model = keras.Model(images, ported.model(scaled), name=ported.model.name)
    metadata = {**ported.metadata, "input": f"uint8 NHWC {size}x{size}, preprocessing inside"}
    return dataclasses.replace(ported, model=model, metadata=metadata)


def save(ported, out, *, overwrite=False):
    """Write `ported.model` to `out` (.keras) atomically, with the ckptkit metadata; never
    over a file of the checkpoint, nor over an existing file without `overwrite`."""
    out = os.fspath(out)
    new_output(out, ported.files, overwrite=overwrite)
    with output_lock(out), tempfile.TemporaryDirectory() as folder, \
            atomic_file(out) as f:
        saved = os.path.join(folder, "model.keras")
        ported.model.save(saved)
        with zipfile.ZipFile(saved) as source, zipfile.ZipFile(f, "w") as target:
            for info in source.infolist():
                data = source.read(info)
                if info.filename == METADATA:
                    data = json.dumps({**json.loads(data), "ckptkit": ported.metadata},
                                      indent=1).encode()
                target.writestr(info, data)
    return out


def keras_nets():
    """Names of the nets with a Keras builder."""
    from ..zoo.nets import NETS

    return sorted(name for name, record in NETS.items() if record.keras)


def _checkpoint_classes(record, shapes):
    """The class count of the checkpoint's classifier (its first classifier scope's biases
    or weights), else the record's."""
    scope = record.classifier_scopes[0].lstrip("/")
    for name in (f"{scope}/biases", f"{scope}/weights"):
        if name in shapes:
            return shapes[name][-1]
    return record.num_classes


def _check_complete(plan, record, new_head):
    """Every weight of a port comes from the checkpoint, except a new head's."""
    head = [compile_pattern(scope) for scope in record.classifier_scopes] if new_head else []
    missing = [name for name in plan.missing if not any(p.matches(name) for p in head)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more"
                                          if len(missing) > 5 else "")
        raise PlanError(f"the checkpoint lacks {len(missing)} weight(s) the ported "
                        f"{record.name} needs: {shown}")
