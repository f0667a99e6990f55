"""Nets ckptkit writes itself with tf_slim layers (tf_slim 1.1 ships only some of research/slim's
nets), one module per family, with the variable names and shapes of the published checkpoints.

Every builder follows the contract a user's own net follows (`--net file.py:fn`):
`fn(images, num_classes, is_training=..., scope=...) -> (logits, end_points)`, and with
`num_classes=None` the features its classifier would see (the new head pools them).
"""
