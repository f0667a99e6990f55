"""open_checkpoint: resolve a path, pick the reader for its format."""
from ..paths import resolve


def open_checkpoint(path):
    """Open any checkpoint ckptkit reads; see paths.resolve for what PATH may be."""
    resolved = resolve(path)
    if resolved.kind == "tf-v2":
        from .tf_v2 import TFV2Reader as reader_class
    elif resolved.kind == "tf-v1":
        from .tf_v1 import TFV1Reader as reader_class
    elif resolved.kind in ("keras-h5", "keras-zip"):
        from .keras_h5 import KerasH5Reader as reader_class
    elif resolved.kind == "npz":
        from .npz import NpzReader as reader_class
    else:
        from .safetensors import SafetensorsReader as reader_class
    reader = reader_class(resolved.path)
    reader.note = resolved.note
    return reader
