"""Slim checkpoints into Keras 3 models, TF-free (keras.py: mapping and weights, layers.py:
tf_slim's layers in Keras, nets/: one Keras builder per family), with a parity certificate
against the tf_slim graph (certificate.py; TensorFlow only there, in a process of its own)."""
