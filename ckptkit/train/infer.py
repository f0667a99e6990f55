"""A trained classifier from a train dir: the inference graph `predict` and `export` share.

inference_graph builds, in the default graph, an input placeholder, the per-image decoding and
eval preprocessing of nets.preprocess, the model (is_training=False) and its outputs, under
stable names ("input", "logits", "probabilities", "classes", inside `scope` when given) so a
frozen graph can be fed by name. Building it twice in one graph shares the variables.

Classifier restores a train dir's best checkpoint (else its latest) into its own graph and
session; it shares ImageClassifier (batching, reading files, top classes) with the
onnxruntime engine (onnx_engine.OnnxClassifier; onnx_engine.open_classifier picks one).
image_files turns `predict`'s arguments into the image files to classify. Importing this
module does not load TensorFlow, and neither do the checks of a train dir and of the
images, which run first.
"""
import contextlib
import os

import numpy as np

from ..errors import CkptError
from ..images import IMAGE_EXTENSIONS, images_in
from .data import undecodable
from .devices import session_config
from .rundir import RunDir

INPUTS = ("bytes", "arrays")
BATCH = 64


def inference_graph(model, *, inputs="bytes", scope="", labels=None):
    """Build `model` for inference in the default graph; returns {"input", "logits",
    "probabilities", "classes"} tensors, and "labels" (the class names of "classes", strings)
    when `labels` names the classes.

    inputs="bytes": "input" is tf.string [None], encoded JPEG/PNG/BMP/GIF file contents (the
      first frame of a GIF); inputs="arrays": uint8 [None, height, width, channels] images,
      any size and 1, 2 (gray + alpha), 3 or 4 channels. Either way each image is
      preprocessed like the eval data the model was trained on (nets.preprocess).
    scope: a name scope for these tensors ("arrays" -> "arrays/probabilities:0"); the
      model's variables keep their names and are reused when the graph already has them.
    """
    from ..tfcompat import tf
    from .nets import preprocess

    if inputs not in INPUTS:
        raise CkptError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    record = model.record
    size, channels = record.image_size, record.channels

    with (tf.name_scope(scope) if scope else contextlib.nullcontext()):
        if inputs == "bytes":
            placeholder = tf.placeholder(tf.string, [None], name="input")

            def decode(contents):
                image = tf.io.decode_image(contents, channels=0, expand_animations=False)
                return preprocess(record, tf.ensure_shape(image, [None, None, None]),
                                  is_training=False)

            images = tf.map_fn(decode, placeholder, dtype=tf.float32, back_prop=False,
                               name="preprocess")
        else:       # one batch of one size: no per-image loop (tf2onnx converts it)
            placeholder = tf.placeholder(tf.uint8, [None, None, None, None], name="input")
            images = preprocess(record, placeholder, is_training=False)
        images = tf.ensure_shape(images, [None, size, size, channels], name="images")
        # ops under "model/" (TF names are unique ignoring case: a head scope "Logits" would
        # push "logits" to "logits_1"); variables keep their own names
        with tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE,
                               auxiliary_name_scope=False), tf.name_scope("model"):
            logits, _ = model.build(images, is_training=False)
        logits = tf.identity(logits, name="logits")
        tensors = {"input": placeholder, "logits": logits,
                   "probabilities": tf.nn.softmax(logits, name="probabilities"),
                   "classes": tf.argmax(logits, axis=1, output_type=tf.int32, name="classes")}
        if labels is not None:
            tensors["labels"] = tf.gather(tf.constant(list(labels), tf.string),
                                          tensors["classes"], name="labels")
        return tensors


def checkpoint_of(run, checkpoint=None, best=True):
    """The TF checkpoint prefix to restore: `checkpoint` (a prefix, file or dir), else the
    best one of `run` when `best` and there is one, else its latest; CkptError if none."""
    from ..paths import resolve

    if checkpoint is not None:
        resolved = resolve(checkpoint)
        if resolved.kind not in ("tf-v2", "tf-v1"):
            raise CkptError(f"{checkpoint}: a {resolved.kind} file; a trained classifier is "
                            "restored from a TF checkpoint (model.ckpt-N)")
        return resolved.path
    prefix = (best and run.latest_checkpoint(best=True)) or run.latest_checkpoint()
    if prefix is None:
        why = run.dropped() or "has `ckptkit finetune` saved one yet?"
        raise CkptError(f"{run.path}: no checkpoint in this train dir ({why})")
    return prefix


def restore(session, prefix):
    """Restore every global variable of the session's graph from `prefix`; CkptError (one
    line) when the checkpoint does not fit the model."""
    from ..tfcompat import tf

    with session.graph.as_default():
        variables = {v.op.name: v for v in tf.global_variables()}
        saver = tf.train.Saver(var_list=variables, name="restore")
    try:
        saver.restore(session, prefix)
    except tf.errors.OpError as e:     # missing tensors, wrong shapes, truncated data
        raise CkptError(f"{prefix}: cannot restore the model from it ({first_line(e)})") \
            from None


def cannot_classify(batch, error):
    """The CkptError of an engine that failed on `batch`, in one line."""
    return CkptError(f"cannot classify images of shape {list(batch.shape[1:])}: "
                     f"{first_line(error)}")


def first_line(error):
    """The gist of a TF error's message in one line: what follows the graph context TF 2
    puts first ("Graph execution error:", where the failing node was defined)."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    node = [i for i, line in enumerate(lines) if line.startswith("Node: ")]
    lines = [line for line in lines[node[-1] + 1 if node else 0:]
             if not line.startswith(("Graph execution error", "[["))]
    return lines[0] if lines else type(error).__name__


class ImageClassifier:
    """What every engine's classifier shares: batching images of one size, reading image
    files, the top classes. An engine supplies labels, `_run(batch, output)` (a uint8 batch
    of one size -> its "probabilities" or "logits") and classify_contents."""

    engine = None

    @property
    def num_classes(self):
        return len(self.labels)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def probabilities(self, images_uint8, batch_size=BATCH, output="probabilities"):
        """Class probabilities (or `output="logits"`) [n, num_classes] of uint8 images: an
        array [n, h, w, C], or a list of [h, w, C] (or [h, w] grayscale) arrays of any sizes;
        C is 1, 2, 3 or 4."""
        if isinstance(images_uint8, np.ndarray) and images_uint8.ndim == 4:
            groups = [images_uint8]
        else:
            groups = [_image(a)[None] for a in images_uint8]
        for group in groups:
            if group.dtype != np.uint8:
                raise CkptError(f"images must be uint8, got {group.dtype}")
            if group.ndim != 4 or group.shape[-1] not in (1, 2, 3, 4):
                raise CkptError("images must be [n, height, width, channels] with 1-4 "
                                f"channels, got shape {list(group.shape)}")
        # consecutive images of one shape run together, batch_size at a time
        batches, pending = [], []
        for group in groups:
            if pending and pending[-1].shape[1:] != group.shape[1:]:
                batches.append(np.concatenate(pending))
                pending = []
            pending.append(group)
        if pending:
            batches.append(np.concatenate(pending))
        out = [np.zeros([0, self.num_classes], np.float32)]
        for batch in batches:
            for start in range(0, len(batch), batch_size):
                out.append(self._run(batch[start:start + batch_size], output))
        return np.concatenate(out)

    def classify_contents(self, contents):
        """Per encoded image (bytes): its probability row, or why it cannot be decoded."""
        raise NotImplementedError

    def predict_files(self, paths, top_k=5, batch_size=BATCH):
        """One entry per path, in order: {"path", "top": [{"label", "index", "probability"}]}
        with the top_k classes (clipped to num_classes), most probable first; a file that
        cannot be read or decoded gives {"path", "error"} instead, the error saying why
        (cannot read, empty file, not an image, truncated PNG, ...)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise CkptError(f"top_k must be a positive integer, got {top_k!r}")
        top_k = min(top_k, self.num_classes)
        paths = [os.fspath(p) for p in paths]
        results = [None] * len(paths)
        readable = []       # (index, contents)
        for i, path in enumerate(paths):
            try:
                with open(path, "rb") as f:
                    contents = f.read()
            except OSError as e:
                results[i] = {"path": path, "error": f"cannot read: {e.strerror or e}"}
                continue
            if not contents:
                results[i] = {"path": path, "error": "empty file"}
                continue
            readable.append((i, contents))
        for start in range(0, len(readable), batch_size):
            chunk = readable[start:start + batch_size]
            for (i, _), p in zip(chunk, self.classify_contents([c for _, c in chunk])):
                if isinstance(p, str):
                    results[i] = {"path": paths[i], "error": p}
                else:
                    results[i] = {"path": paths[i], "top": self.top(p, top_k)}
        return results

    def top(self, probabilities, top_k=5):
        """[{"label", "index", "probability"}] of the top_k classes of one probability row,
        most probable first (ties: lower index first)."""
        order = np.argsort(-np.asarray(probabilities), kind="stable")[:top_k]
        return [{"label": self.labels[i], "index": int(i),
                 "probability": float(probabilities[i])} for i in order]


class Classifier(ImageClassifier):
    """The classifier of a train dir, restored into its own graph and session.

    checkpoint: an explicit checkpoint (prefix, file or dir) instead of the train dir's own;
    best: prefer the best checkpoint (best/) over the latest. Use as a context manager, or
    call close().
    """

    engine = "tf"

    def __init__(self, train_dir, *, checkpoint=None, best=True):
        run = RunDir(train_dir)
        self.model, self.labels = run.model(), run.labels()
        if len(self.labels) != self.model.num_classes:
            raise CkptError(f"{run.file('labels.txt')}: {len(self.labels)} labels, but the "
                            f"model has {self.model.num_classes} classes")
        self.checkpoint = checkpoint_of(run, checkpoint, best)
        from ..tfcompat import tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            self._bytes = inference_graph(self.model, inputs="bytes")
        self._arrays = None     # built on first use
        self.session = tf.Session(graph=self.graph, config=session_config())
        try:
            restore(self.session, self.checkpoint)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None

    def _session(self):
        if self.session is None:
            raise CkptError("this classifier is closed")
        return self.session

    def _run(self, batch, output="probabilities"):
        from ..tfcompat import tf

        session = self._session()
        if self._arrays is None:
            with self.graph.as_default():
                self._arrays = inference_graph(self.model, inputs="arrays", scope="arrays")
        try:
            return session.run(self._arrays[output], {self._arrays["input"]: batch})
        except tf.errors.OpError as e:
            raise cannot_classify(batch, e) from None

    def probabilities_of_bytes(self, contents):
        """Class probabilities [n, num_classes] of encoded images (bytes); a TF error for the
        whole batch if any one of them does not decode."""
        session = self._session()
        if not contents:
            return np.zeros([0, self.num_classes], np.float32)
        return session.run(self._bytes["probabilities"],
                           {self._bytes["input"]: np.array(list(contents), dtype=object)})

    def classify_contents(self, contents):
        from ..tfcompat import tf

        try:
            return list(self.probabilities_of_bytes(contents))
        except tf.errors.OpError:
            rows = []       # one bad file fails the batch: find it, file by file
            for one in contents:
                try:
                    rows.append(self.probabilities_of_bytes([one])[0])
                except tf.errors.OpError as e:
                    rows.append(f"cannot decode: {undecodable(one, first_line(e))}")
            return rows


def _image(array):
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def image_files(args):
    """Files as given, missing ones too (each gets its own error line from predict_files);
    folders expanded to their images (recursively, sorted; hidden files and folders such as
    .ipynb_checkpoints/ left out). An error when no argument exists: nothing to classify."""
    if not any(os.path.exists(arg) for arg in args):
        plural = "s" if len(args) > 1 else ""
        raise CkptError(f"{', '.join(map(os.fspath, args))}: no such file{plural}")
    paths = []
    for arg in args:
        if os.path.isdir(arg):
            found = images_in(arg)
            if not found:
                raise CkptError(f"{arg}: no images ({' '.join(IMAGE_EXTENSIONS)})")
            paths += found
        else:
            paths.append(arg)
    return paths
