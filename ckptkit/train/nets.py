"""Building the nets of the zoo (zoo/nets.py records) as TF1 graphs: `build` (a net with a new
or its own head), `model_variables` (what a build creates, for the restore plan),
`preprocess` (a decoded image as the net's input) and `Model` (the classifier a run trains).
The graph work of the net families lives in heads.py; TensorFlow loads through
ckptkit.tfcompat on first use.
"""
import dataclasses
import functools
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import metadata

from ..errors import CkptError
from ..fileio import write_atomic
from ..scopes import compile_pattern
from ..zoo.nets import NETS, VGG_MEANS, get_net


def build(net, images, num_classes, *, head="new", head_scope="Logits", hidden=(),
          dropout=0.5, is_training=True, frozen=()):
    """Build `net` on `images` ([batch, size, size, channels] float32) in the default graph.

    head="new": the backbone without its classifier (ResNets globally pooled, Inception
    without Logits and AuxLogits, VGG/AlexNet up to fc7, LeNet up to fc3, CifarNet up to fc4),
    then a new head in variable scope `head_scope`: global average pooling of spatial
    features, dropout at rate `dropout` while training, ReLU layers `hidden_i` of sizes
    `hidden`, a final linear layer (`head_scope/weights`, `head_scope/biases`) with
    `num_classes` outputs. Like the classifiers they replace, the layers are 1x1 convolutions
    on pooled feature maps (weights [1, 1, depth, n]) and fully connected on flat features
    (LeNet, CifarNet: [depth, n]), so they get the net's weight decay and initialiser.
    head="keep": the net's own classifier exactly as tf_slim builds it (with its own dropout);
    `num_classes` is the record's, or one less for a 1001-class net (the plan then drops the
    checkpoint's background class: label_offset).
    frozen: scope patterns (DESIGN.md scope semantics); batch normalization layers under one
    run in inference mode (moving statistics used, never updated), like Keras
    trainable=False; a pattern that matches no variable is an error.

    Everything is built under the net's own arg_scope (weight decay, initialisers).
    Returns (logits [batch, num_classes], end_points); end_points["Logits"] is the logits,
    and for head="keep" on inception_v3 end_points["AuxLogits"] is [batch, num_classes] too.
    """
    from . import heads

    record = get_net(net)
    if head not in ("new", "keep"):
        raise CkptError(f"unknown head {head!r}; use 'new' or 'keep'")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise CkptError(f"num_classes must be a positive integer, got {num_classes!r}")
    hidden = tuple(hidden or ())
    if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
        raise CkptError(f"hidden layer sizes must be positive integers, got {list(hidden)}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
            not 0 <= dropout < 1:
        raise CkptError(f"dropout is a rate in [0, 1), got {dropout!r}")
    if isinstance(frozen, str):
        frozen = (frozen,)
    patterns = [compile_pattern(p) for p in frozen]
    if head == "keep":
        without_background = record.num_classes - record.label_offset
        if num_classes not in (record.num_classes, without_background):
            also = f" (or {without_background} without its background class)" \
                if record.label_offset else ""
            raise CkptError(
                f"head='keep' reuses the {record.num_classes}-class classifier of "
                f"{record.name}{also}, but num_classes is {num_classes}; use head='new' for "
                f"{num_classes} classes")
        if hidden:
            raise CkptError("hidden layers belong to a new head; use head='new'")
    else:
        top = head_scope.strip("/") if isinstance(head_scope, str) else ""
        if not top or top == record.scope or top.startswith(record.scope + "/"):
            raise CkptError(f"head scope {head_scope!r} must be a scope of its own, outside "
                            f"{record.scope!r}; e.g. 'Logits'")
        head_scope = top
    try:
        return heads.build(record, images, num_classes, head=head, head_scope=head_scope,
                           hidden=hidden, dropout=dropout, is_training=is_training,
                           frozen=patterns)
    except ValueError as e:     # TF: images too small for a VALID kernel, variables exist...
        shape = getattr(getattr(images, "shape", None), "as_list", lambda: "?")()
        raise CkptError(f"cannot build {record.name} on images of shape {shape}: "
                        f"{_tf_error(e)} (its image size is {record.image_size})") from None


def _tf_error(error):
    """The gist of a TF graph-construction error, in one line."""
    text = str(error)
    small = re.search(r"subtracting (\d+) from (\d+) for '\{\{node ([^}]+)\}\}", text)
    if small:
        window, size, node = small.groups()
        return (f"too small: at {node.rpartition('/')[0]} a window of {window} meets a "
                f"feature map of {size}")
    return text.splitlines()[0] if text else type(error).__name__


def model_variables(net, num_classes, **build_kwargs):
    """The variables `build(net, ..., num_classes, **build_kwargs)` creates, as
    ckptkit.plan.ModelVar in graph creation order (built in a fresh graph on one image of the
    net's size).

    finetune, features mode and `plan --net` plan from this list before building the graph
    that trains, or instead of building the backbone at all, and building a resnet_v1_50 takes
    seconds: the list is remembered per process (a search lists the same model for every
    trial) and, for the zoo's nets, on disk (_stored). Dropout makes no variables, so models
    differing in it share one entry."""
    build_kwargs.pop("dropout", None)
    kwargs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                          for k, v in build_kwargs.items()))
    return list(_model_variables(get_net(net), num_classes, kwargs))


@functools.lru_cache(maxsize=16)
def _model_variables(record, num_classes, kwargs):
    from ..plan import ModelVar

    path = _stored(record, num_classes, kwargs)
    if path and os.path.isfile(path):
        try:
            with open(path) as f:
                return tuple(ModelVar(*entry) for entry in json.load(f))
        except (OSError, ValueError, TypeError):        # unreadable: built and written anew
            pass
    found = _built_variables(record, num_classes, kwargs)
    if path:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_atomic(path, json.dumps([dataclasses.astuple(v) for v in found]))
        except OSError:         # a cache that cannot be written is no error
            pass
    return found


def _built_variables(record, num_classes, kwargs):
    from ..plan import ModelVar
    from ..tfcompat import tf

    graph = tf.Graph()
    with graph.as_default():
        images = tf.placeholder(
            tf.float32, [1, record.image_size, record.image_size, record.channels], "images")
        build(record, images, num_classes, **dict(kwargs))
        trainable = {v.op.name for v in tf.trainable_variables()}
        return tuple(ModelVar(v.op.name, tuple(v.shape.as_list()), v.dtype.base_dtype.name,
                              v.op.name in trainable) for v in tf.global_variables())


def cache_root():
    """$CKPTKIT_CACHE, else ~/.cache/ckptkit: variables/ (the zoo's variable lists, _stored)
    and features/ (features.cache_dir) are under it."""
    return os.environ.get("CKPTKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ckptkit")


def _stored(record, num_classes, kwargs):
    """The file of a zoo net's variable list under cache_root(), named by a digest of
    everything the list depends on: the record, the class count, the build arguments, the
    versions of ckptkit, TensorFlow and tf_slim, and the source of ckptkit's net code (an
    edited head or architecture is another entry); None for a user's net, whose code
    ckptkit cannot vouch for."""
    from .. import __version__

    zoo = NETS.get(record.name)
    if zoo is None or dataclasses.replace(zoo, image_size=record.image_size) != record:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    versions = [__version__] + [_version(name) for name in
                                ("tensorflow", "tensorflow-cpu", "tf_slim")]
    digest = hashlib.sha256(repr((dataclasses.astuple(record), num_classes, kwargs,
                                  versions)).encode())
    for source in [os.path.join(here, "nets.py"), os.path.join(here, "heads.py"),
                   os.path.join(here, os.pardir, "tfcompat.py"),
                   *sorted(glob.glob(os.path.join(here, "architectures", "*.py")))]:
        with open(source, "rb") as f:
            digest.update(f.read())
    return os.path.join(cache_root(), "variables", digest.hexdigest() + ".json")


def _version(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def preprocess(net, image, is_training):
    """A uint8 [h, w, C] image (C = 1, 3 or 4) as the float32 [size, size, channels] input
    `net` was trained on; for evaluation also a batch [n, h, w, C] of one size, with no
    per-image loop (what an ONNX export can hold).

    vgg: train: random resized crop + horizontal flip; eval: aspect-preserving resize (shorter
      side size * 256/224) + central crop; then the ImageNet RGB means are subtracted.
    inception: train: random resized crop + horizontal flip; eval: central 87.5% crop +
      resize; then scaled to [-1, 1].
    lenet: resize, then (x - 128) / 128.
    cifarnet: resize (train: 4-pixel pad, random crop, flip), then per-image standardisation.
    Grayscale becomes RGB for 3-channel nets, RGB becomes grayscale for LeNet, alpha is
    dropped. Random resized crop: area 8%-100%, aspect ratio 3/4-4/3.
    """
    from ..tfcompat import tf

    record = get_net(net)
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise CkptError(f"preprocess expects a uint8 image, got {image.dtype.name}")
    if image.shape.ndims is None:
        image = tf.ensure_shape(image, [None, None, None])
    if image.shape.ndims not in ((3,) if is_training else (3, 4)):
        raise CkptError(f"preprocess expects one [height, width, channels] image"
                        f"{'' if is_training else ' or a [n, height, width, channels] batch'}"
                        f", got shape {image.shape.as_list()}")
    size, kind = record.image_size, record.preprocessing
    with tf.name_scope("preprocess"):
        image = _channels(tf, tf.cast(image, tf.float32), record.channels)
        if kind in ("vgg", "inception"):
            if is_training:
                image = tf.image.random_flip_left_right(_random_resized_crop(tf, image, size))
            elif kind == "vgg":
                image = _central_crop(tf, _resize_shorter_side(tf, image, size * 256 // 224),
                                      size)
            else:
                image = tf.image.resize(tf.image.central_crop(image, 0.875), [size, size])
            if kind == "vgg":
                image = image - tf.constant(VGG_MEANS, tf.float32)
            else:
                image = image / 127.5 - 1.0
        else:
            image = tf.image.resize(image, [size, size])
            if kind == "lenet":
                image = (image - 128.0) / 128.0
            else:
                if is_training:
                    image = tf.image.resize_with_crop_or_pad(image, size + 8, size + 8)
                    image = tf.image.random_crop(image, [size, size, record.channels])
                    image = tf.image.random_flip_left_right(image)
                image = tf.image.per_image_standardization(image)
        image = tf.ensure_shape(image, image.shape[:-3].as_list() +
                                [size, size, record.channels])
    return image


def _channels(tf, image, channels):
    """float [..., h, w, C] -> [..., h, w, channels]; C: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
    Gray becomes RGB by copying, RGB gray by luma; alpha is dropped; gray stays exact."""
    def convert(colour):
        if channels == 1:
            return tf.image.rgb_to_grayscale(image[..., :3]) if colour else image[..., :1]
        return image[..., :3] if colour else tf.concat([image[..., :1]] * 3, axis=-1)

    have = image.shape[-1]
    if have is not None:
        return convert(have >= 3)
    converted = tf.cond(tf.shape(image)[-1] >= 3, lambda: convert(True), lambda: convert(False))
    return tf.ensure_shape(converted, image.shape[:-1].as_list() + [channels])


def _random_resized_crop(tf, image, size):
    begin, extent, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=100, use_image_if_no_bounding_boxes=True)
    return tf.image.resize(tf.slice(image, begin, extent), [size, size])


def _resize_shorter_side(tf, image, side):
    hw = tf.cast(tf.shape(image)[-3:-1], tf.float32)
    scaled = tf.cast(tf.round(hw * (side / tf.reduce_min(hw))), tf.int32)
    return tf.image.resize(image, tf.maximum(scaled, side))


def _central_crop(tf, image, size):
    hw = tf.shape(image)[-3:-1]
    top, left = (hw[0] - size) // 2, (hw[1] - size) // 2
    return image[..., top:top + size, left:left + size, :]


@dataclass(frozen=True)
class Model:
    """The classifier a run trains: a zoo net with a new head (in `head_scope`), or with its
    own classifier (keep_head: the record's classifier scopes, its class count)."""

    net: str
    num_classes: int
    image_size: int = 0         # 0: the net's own
    hidden: tuple = ()
    dropout: float = 0.5
    head_scope: str = "Logits"
    keep_head: bool = False

    @property
    def record(self):
        """The net's NetRecord, at this model's image size."""
        record = get_net(self.net)
        if self.image_size and self.image_size != record.image_size:
            record = dataclasses.replace(record, image_size=self.image_size)
        return record

    @property
    def head_scopes(self):
        """The scopes of the classifier: what a head-only stage trains."""
        return self.record.classifier_scopes if self.keep_head else (self.head_scope,)

    def build(self, images, *, is_training, frozen=()):
        """(logits, end_points) of this model on preprocessed `images` (see nets.build)."""
        return build(self.record, images, self.num_classes,
                     head="keep" if self.keep_head else "new", head_scope=self.head_scope,
                     hidden=self.hidden, dropout=self.dropout, is_training=is_training,
                     frozen=frozen)

    def variables(self):
        """The model's variables as plan.ModelVar, in creation order (model_variables)."""
        return model_variables(self.record, self.num_classes,
                               head="keep" if self.keep_head else "new",
                               head_scope=self.head_scope, hidden=self.hidden)

    def backbone_variables(self):
        """The model's variables outside its head scopes: what features mode never builds."""
        head = tuple(scope + "/" for scope in self.head_scopes)
        return [m for m in self.variables() if not m.name.startswith(head)]

    def head(self, features, *, is_training):
        """The new head alone on pooled features; its variables are shared with a build."""
        from .heads import head_only

        if self.keep_head:
            raise CkptError(f"the head of {self.net} alone cannot be built on features: its "
                            "own classifier is kept (--keep-head)")
        return head_only(self.record, features, self.num_classes, head_scope=self.head_scope,
                         hidden=self.hidden, dropout=self.dropout, is_training=is_training)

    def to_json(self):
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_json(cls, data):
        try:
            return cls(**{**data, "hidden": tuple(data.get("hidden", ()))})
        except TypeError as e:
            raise CkptError(f"run.json: bad model entry {data!r} ({e})") from None
