"""The classifier of an ONNX export on onnxruntime: `predict` and `eval` without TensorFlow,
and which engine they run on (open_classifier, onnx_export).

An export dir (`ckptkit export --format onnx`, or a train dir's onnx/) holds model.onnx, whose
graph does the net's own preprocessing, and export.json (labels, sizes, the checkpoint it came
from). Images are decoded here with Pillow into what TF's decode_image gives (gray, gray +
alpha, RGB or RGBA uint8; a GIF's first frame as RGB); everything else runs inside the ONNX
graph. Nothing here imports TensorFlow: a test runs it where importing TF fails.
"""
import io
import json
import os

import numpy as np

from ..errors import CkptError
from .data import undecodable
from .infer import Classifier, ImageClassifier, cannot_classify, checkpoint_of, first_line
from .rundir import RUN_ONNX, RunDir
from .settings import ENGINES

EXPORT_JSON, MODEL = "export.json", "model.onnx"
DECODED = ("JPEG", "PNG", "GIF", "BMP", "WEBP")    # what TF's decode_image reads


def runtime():
    """The onnxruntime module, from the [onnx] extra."""
    try:
        import onnxruntime
    except ImportError:
        raise CkptError("the ONNX engine needs onnxruntime: pip install 'ckptkit[onnx]'") \
            from None
    return onnxruntime


def read_export(folder):
    """export.json of an ONNX export dir, checked to name an ONNX model that is there."""
    path = os.path.join(folder, EXPORT_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except FileNotFoundError:
        raise CkptError(f"{folder}: no {EXPORT_JSON}; not an export dir") from None
    except ValueError as e:
        raise CkptError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("onnx"), dict) \
            or not isinstance(info.get("labels"), list):
        raise CkptError(f"{path}: no ONNX model recorded (export with --format onnx)")
    if not os.path.isfile(os.path.join(folder, MODEL)):
        raise CkptError(f"{folder}: {MODEL} is missing")
    return info


class OnnxClassifier(ImageClassifier):
    """The classifier of an ONNX export dir on onnxruntime."""

    engine = "onnx"

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        info = read_export(self.folder)
        self.labels, self.checkpoint = [str(x) for x in info["labels"]], info["checkpoint"]
        ort = runtime()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(os.path.join(self.folder, MODEL), options,
                                                providers=ort.get_available_providers())
        except Exception as e:      # onnxruntime raises its own exception types
            raise CkptError(f"{os.path.join(self.folder, MODEL)}: onnxruntime cannot load "
                            f"it ({first_line(e)})") from None
        self.input = info["onnx"].get("input", "images")

    def close(self):
        self.session = None

    def _run(self, batch, output="probabilities"):
        if self.session is None:
            raise CkptError("this classifier is closed")
        try:
            return self.session.run([output], {self.input: batch})[0]
        except Exception as e:      # onnxruntime's own exception types
            raise cannot_classify(batch, e) from None

    def classify_contents(self, contents):
        decoded = [decode(c) for c in contents]
        arrays = [d for d in decoded if not isinstance(d, str)]
        probabilities = iter(self.probabilities(arrays))
        return [d if isinstance(d, str) else next(probabilities) for d in decoded]


def open_classifier(train_dir, *, engine="auto", best=True, log=lambda line: None):
    """The classifier `predict` uses: onnxruntime on the train dir's ONNX export when
    onnx_export picks it, else the TF Classifier."""
    run = RunDir(train_dir)
    run.model()         # "not a train dir" (or a bad run.json) says more than "no checkpoint"
    checkpoint = checkpoint_of(run, best=best)
    folder = onnx_export(run, engine, checkpoint, log)
    if folder is not None:
        return OnnxClassifier(folder)
    return Classifier(train_dir, checkpoint=checkpoint)


def onnx_export(run, engine, checkpoint, log=lambda line: None):
    """The ONNX export dir (the train dir's onnx/) to run `run` on, or None for TensorFlow:
    engine "onnx" needs it (else a CkptError says why); "auto" takes it when it is of
    `checkpoint` (the one the TF engine would restore) and onnxruntime is installed, and else
    says why through `log` (unless the run has no ONNX export at all)."""
    if engine not in ENGINES:
        raise CkptError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "tf":
        return None
    why = _onnx_unusable(run, checkpoint)
    if why is None:
        return run.file(RUN_ONNX)
    if engine == "onnx":
        raise CkptError(f"{run.path}: --engine onnx: {why}")
    if os.path.isdir(run.file(RUN_ONNX)):
        log(f"note: running on TensorFlow: {why}")
    return None


def _onnx_unusable(run, checkpoint):
    """Why the ONNX engine cannot classify for `run` (None: it can)."""
    folder = run.file(RUN_ONNX)
    if not os.path.isdir(folder):
        return (f"no ONNX export (make one with `ckptkit export --train-dir {run.path} -o DIR "
                "--format onnx`)")
    try:
        exported = read_export(folder)["checkpoint"]
        runtime()
    except CkptError as e:
        return str(e)
    if os.path.abspath(exported) != os.path.abspath(checkpoint):
        return (f"the ONNX export is of {exported}, not of {checkpoint} (export again with "
                "--format onnx)")
    return None


def decode(contents):
    """uint8 [h, w, C] of encoded image bytes, as TF's decode_image(channels=0) gives it;
    else why it cannot be decoded (a string)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(contents)) as image:
            if image.format not in DECODED:
                return f"cannot decode: {undecodable(contents)}"
            image.load()
            if image.format == "GIF":
                image = image.convert("RGB")
            elif image.mode in ("P", "PA"):
                image = image.convert("RGBA" if image.mode == "PA" or
                                      "transparency" in image.info else "RGB")
            elif image.mode == "1":
                image = image.convert("L")
            elif image.mode.startswith("I;16") or image.mode == "I":
                return (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)[:, :, None]
            elif image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGB")
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"cannot decode: {undecodable(contents, str(e))}"
    return array[:, :, None] if array.ndim == 2 else array
