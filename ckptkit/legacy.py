"""A drop-in for tf.train.NewCheckpointReader, so legacy inspection scripts run without TF.

    from ckptkit import NewCheckpointReader   # was: from tensorflow.python import pywrap_tensorflow
    reader = NewCheckpointReader("model.ckpt")
    for name, shape in reader.get_variable_to_shape_map().items(): ...

or, with no change at all: `ckptkit legacy look_checkpoint.py` runs the script with a
stand-in `tensorflow` module whose only working parts are these readers.
"""
import sys
import types

from .errors import CkptError
from .paths import open_checkpoint

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


def load_checkpoint(ckpt_dir_or_file):
    """tf.train.load_checkpoint: the same reader."""
    return NewCheckpointReader(ckpt_dir_or_file)


def list_variables(ckpt_dir_or_file):
    """tf.train.list_variables: sorted (name, shape) pairs."""
    reader = NewCheckpointReader(ckpt_dir_or_file)
    return sorted(reader.get_variable_to_shape_map().items())


class _StandIn(types.ModuleType):
    """A module that offers the checkpoint-reading names and refuses everything else."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise CkptError(f"{self.__name__}.{attr} needs real TensorFlow: ckptkit's stand-in "
                        "offers only the checkpoint readers (NewCheckpointReader, "
                        "load_checkpoint, list_variables)")


def install_tensorflow_stand_in():
    """Make `import tensorflow` (and pywrap_tensorflow, tf.compat.v1) give ckptkit's readers,
    so an unchanged legacy inspection script runs without TensorFlow installed."""
    names = ["tensorflow", "tensorflow.python", "tensorflow.python.pywrap_tensorflow",
             "tensorflow.python.training", "tensorflow.python.training.py_checkpoint_reader",
             "tensorflow.compat", "tensorflow.compat.v1", "tensorflow.train",
             "tensorflow.compat.v1.train"]
    modules = {name: _StandIn(name) for name in names}
    for name, module in modules.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
        sys.modules[name] = module
    for name in ("tensorflow.python.pywrap_tensorflow", "tensorflow.train",
                 "tensorflow.compat.v1.train",
                 "tensorflow.python.training.py_checkpoint_reader"):
        modules[name].NewCheckpointReader = NewCheckpointReader
    for name in ("tensorflow.train", "tensorflow.compat.v1.train"):
        modules[name].load_checkpoint = load_checkpoint
        modules[name].list_variables = list_variables
    modules["tensorflow"].__version__ = "ckptkit-stand-in"


def run_script(script, args):
    """Run a legacy checkpoint-reading script as `python script args...` would, its
    `import tensorflow` answered by the stand-in; the script's exit code."""
    import runpy

    if "tensorflow" in sys.modules:
        raise CkptError("TensorFlow is already imported in this process")
    install_tensorflow_stand_in()
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
