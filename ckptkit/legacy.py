"""A drop-in for tf.train.NewCheckpointReader, so legacy inspection scripts run without TF.

    from ckptkit import NewCheckpointReader   # was: from tensorflow.python import pywrap_tensorflow
    reader = NewCheckpointReader("model.ckpt")
    for name, shape in reader.get_variable_to_shape_map().items(): ...
"""
from .formats import open_checkpoint

_TF_ENUM = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF"}


class DType:
    """Stands in for tf.DType: compares equal to another of the same name or to the name."""

    def __init__(self, name):
        self.name = name

    @property
    def as_numpy_dtype(self):
        from .variable import numpy_dtype

        return numpy_dtype(self.name).type

    def __eq__(self, other):
        return getattr(other, "name", other) == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"tf.{self.name}"


class NewCheckpointReader:
    def __init__(self, filepattern):
        self._reader = open_checkpoint(filepattern)

    def get_variable_to_shape_map(self):
        return {v.name: list(v.shape) for v in self._reader}

    def get_variable_to_dtype_map(self):
        return {v.name: DType(v.dtype) for v in self._reader}

    def has_tensor(self, name):
        return name in self._reader

    def get_tensor(self, name):
        """A fresh array, as TF returns; scalars as numpy scalars (bytes for strings)."""
        import numpy as np

        value = self._reader.read(name)
        return value[()] if value.ndim == 0 else np.array(value)

    def debug_string(self):
        lines = []
        for v in self._reader:
            dims = ",".join(str(d) for d in v.shape)
            enum = _TF_ENUM.get(v.dtype, "DT_" + v.dtype.upper())
            lines.append(f"{v.name} ({enum}) [{dims}]\n")
        return "".join(lines).encode("utf-8")
