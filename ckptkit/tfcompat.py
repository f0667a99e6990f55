"""The only module that imports TensorFlow: `from ckptkit.tfcompat import tf, slim`.

Gives tf.compat.v1 in graph mode and a tf_slim that works on current TensorFlow. tf_slim 1.1's
batch norm reaches `tensorflow.python.layers.normalization`, which on TF >= 2.16 forwards to
`tf_keras.legacy_tf_layers*`; tf_keras now keeps those modules under
`tf_keras.src.legacy_tf_layers*`. Registering the old names as aliases in sys.modules fixes it
without touching site-packages; so does naming `framework.ops.Tensor` again for tf_slim's
layer utilities (batch norm of 2-D inputs).

TF 2.21 prints C++ log lines (oneDNN, CUDA probing) before its logging can be configured;
they are kept off the terminal while TF loads, and shown if loading fails.
"""
import importlib
import os
import pkgutil
import sys
import warnings

from .errors import CkptError
from .fileio import quiet_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _alias_framework_tensor():
    """tf_slim's layers/utils.py still names tensorflow.python.framework.ops.Tensor, which
    TF 2.21 moved to framework.tensor (slim.batch_norm on 2-D inputs fails without it)."""
    from tensorflow.python.framework import ops

    if not hasattr(ops, "Tensor"):
        from tensorflow.python.framework import tensor

        ops.Tensor = tensor.Tensor


def _alias_legacy_layers():
    try:
        import tf_keras.legacy_tf_layers  # noqa: F401  (an older tf_keras still has them)
        return
    except ImportError:
        pass
    src = importlib.import_module("tf_keras.src.legacy_tf_layers")
    sys.modules["tf_keras.legacy_tf_layers"] = src
    for info in pkgutil.iter_modules(src.__path__):
        module = importlib.import_module(f"tf_keras.src.legacy_tf_layers.{info.name}")
        sys.modules[f"tf_keras.legacy_tf_layers.{info.name}"] = module


try:
    with quiet_stderr():
        import tensorflow.compat.v1 as tf

        _alias_legacy_layers()
        _alias_framework_tensor()
        tf.disable_eager_execution()
        # TF1's identity hashing: tf_keras' legacy layers hash every variable for each new
        # one, which makes a big net's build quadratic in its variables (NASNet 15.8 -> 6.7 s)
        tf.disable_tensor_equality()
        tf.get_logger().setLevel("ERROR")   # TF1 deprecation notices are not our users'
        warnings.filterwarnings("ignore", message="`layer.apply` is deprecated")
        warnings.filterwarnings("ignore", message="`tf.layers.[a-z_0-9]+` is deprecated")
        import tf_slim as slim

        # probing CUDA logs an error line on machines without a GPU: probe here, quietly
        GPUS = len(tf.config.list_physical_devices("GPU"))
except ImportError as e:     # an install without the [tf] extra: say which, in one line
    raise CkptError(f"this needs TensorFlow and tf_slim, and {e.name or 'tensorflow'} is not "
                    "installed: pip install 'ckptkit[tf]' (or 'ckptkit[gpu]')") from None

__all__ = ["tf", "slim", "GPUS"]
