"""What the tests build their inputs with: bundle_writer (TF checkpoint bytes without TF),
tf_factories (checkpoints TensorFlow writes), hostile (damaged files, isolated runs), images
(real digit images as PNG folders)."""
