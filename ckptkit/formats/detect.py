"""open_reader: the reader of a resolved format (paths.open_checkpoint resolves what a user
typed first); open_writer: the writer for a target path by its extension."""
import os

from ..errors import CkptError

WRITE_FORMATS = ("tf-v2", "npz", "safetensors", "keras-h5")


def open_reader(kind, path):
    """The Reader of `path`, a checkpoint of format `kind` (paths.Resolved.kind)."""
    if kind == "tf-v2":
        from .tf_v2 import TFV2Reader as reader_class
    elif kind == "tf-v1":
        from .tf_v1 import TFV1Reader as reader_class
    elif kind in ("keras-h5", "keras-zip"):
        from .keras_h5 import KerasH5Reader as reader_class
    elif kind == "npz":
        from .npz import NpzReader as reader_class
    else:
        from .safetensors import SafetensorsReader as reader_class
    return reader_class(path)


def writer_format(path):
    """The format a target path asks for: .npz, .safetensors, .h5/.hdf5 (Keras weights),
    anything else a V2 prefix."""
    lower = os.fspath(path).lower()
    if lower.endswith(".npz"):
        return "npz"
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith((".h5", ".hdf5")):
        return "keras-h5"
    return "tf-v2"


def open_writer(path, shards=1):
    """A Writer for `path` (see writer_format); `shards` is for V2 bundles only."""
    kind = writer_format(path)
    if kind != "tf-v2" and shards != 1:
        raise CkptError(f"--shards applies to V2 checkpoints only, not {kind} ({path})")
    if kind == "npz":
        from .npz import NpzWriter
        return NpzWriter(path)
    if kind == "safetensors":
        from .safetensors import SafetensorsWriter
        return SafetensorsWriter(path)
    if kind == "keras-h5":
        from .keras_h5 import KerasH5Writer
        return KerasH5Writer(path)
    from .tf_v2_write import TFV2Writer
    return TFV2Writer(os.fspath(path), shards=shards)
