"""The training layer: TF1 graphs and sessions. The only package besides ckptkit.tfcompat
that loads TensorFlow, always through ckptkit.tfcompat; importing this package itself (or
ckptkit.train.nets, the nets registry) does not."""
