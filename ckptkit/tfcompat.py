"""The only module that imports TensorFlow: `from ckptkit.tfcompat import tf, slim`.

Gives tf.compat.v1 in graph mode and a tf_slim that works on current TensorFlow. tf_slim 1.1
reaches `tensorflow.python.layers`, which on TF >= 2.16 forwards to
`tf_keras.legacy_tf_layers*`; tf_keras now keeps those modules under
`tf_keras.src.legacy_tf_layers*`. Registering the old names as aliases in sys.modules fixes it
without touching site-packages.
"""
import importlib
import os
import pkgutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow.compat.v1 as tf  # noqa: E402


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


_alias_legacy_layers()
tf.disable_eager_execution()

import tf_slim as slim  # noqa: E402

__all__ = ["tf", "slim"]
