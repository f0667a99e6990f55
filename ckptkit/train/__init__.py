"""The training layer: TF1 graphs and sessions. The only package besides ckptkit.tfcompat
that loads TensorFlow, always through ckptkit.tfcompat; importing this package itself, or
settings.py (a run's settings and their checks), nets.py or search/, does not."""
