"""Inception-v4 (Szegedy et al. 2016, arXiv:1602.07261) as tensorflow/models research/slim
builds it, so its published checkpoint (inception_v4_2016_09_09) restores: the same scopes,
depths, kernels, strides, paddings, initialiser and batch-norm settings.

The net is a table: a stem, then blocks of parallel branches (`Branch_0`, `Branch_1`, ...)
concatenated on depth. A layer entry is (scope, depth, kernel[, stride, padding]) with
stride 1 and SAME padding by default; depth is None for a pooling, whose scope says which
(MaxPool_* or AvgPool_*); a list of entries splits the branch: each is applied to the same
input and their outputs are concatenated. Inception-ResNet-v2 (inception_resnet_v2.py) is
written with the same tables and `layer`/`branches`.
"""
from ...tfcompat import slim, tf

_STEM = [("Conv2d_1a_3x3", 32, 3, 2, "VALID"), ("Conv2d_2a_3x3", 32, 3, 1, "VALID"),
         ("Conv2d_2b_3x3", 64, 3)]
_MIXED_3A = [[("MaxPool_0a_3x3", None, 3, 2, "VALID")],
             [("Conv2d_0a_3x3", 96, 3, 2, "VALID")]]
_MIXED_4A = [[("Conv2d_0a_1x1", 64, 1), ("Conv2d_1a_3x3", 96, 3, 1, "VALID")],
             [("Conv2d_0a_1x1", 64, 1), ("Conv2d_0b_1x7", 64, [1, 7]),
              ("Conv2d_0c_7x1", 64, [7, 1]), ("Conv2d_1a_3x3", 96, 3, 1, "VALID")]]
_MIXED_5A = [[("Conv2d_1a_3x3", 192, 3, 2, "VALID")],
             [("MaxPool_1a_3x3", None, 3, 2, "VALID")]]
_INCEPTION_A = [[("Conv2d_0a_1x1", 96, 1)],
                [("Conv2d_0a_1x1", 64, 1), ("Conv2d_0b_3x3", 96, 3)],
                [("Conv2d_0a_1x1", 64, 1), ("Conv2d_0b_3x3", 96, 3), ("Conv2d_0c_3x3", 96, 3)],
                [("AvgPool_0a_3x3", None, 3), ("Conv2d_0b_1x1", 96, 1)]]
_REDUCTION_A = [[("Conv2d_1a_3x3", 384, 3, 2, "VALID")],
                [("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_3x3", 224, 3),
                 ("Conv2d_1a_3x3", 256, 3, 2, "VALID")],
                [("MaxPool_1a_3x3", None, 3, 2, "VALID")]]
_INCEPTION_B = [[("Conv2d_0a_1x1", 384, 1)],
                [("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_1x7", 224, [1, 7]),
                 ("Conv2d_0c_7x1", 256, [7, 1])],
                [("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_7x1", 192, [7, 1]),
                 ("Conv2d_0c_1x7", 224, [1, 7]), ("Conv2d_0d_7x1", 224, [7, 1]),
                 ("Conv2d_0e_1x7", 256, [1, 7])],
                [("AvgPool_0a_3x3", None, 3), ("Conv2d_0b_1x1", 128, 1)]]
_REDUCTION_B = [[("Conv2d_0a_1x1", 192, 1), ("Conv2d_1a_3x3", 192, 3, 2, "VALID")],
                [("Conv2d_0a_1x1", 256, 1), ("Conv2d_0b_1x7", 256, [1, 7]),
                 ("Conv2d_0c_7x1", 320, [7, 1]), ("Conv2d_1a_3x3", 320, 3, 2, "VALID")],
                [("MaxPool_1a_3x3", None, 3, 2, "VALID")]]
_INCEPTION_C = [[("Conv2d_0a_1x1", 256, 1)],
                [("Conv2d_0a_1x1", 384, 1),
                 [("Conv2d_0b_1x3", 256, [1, 3]), ("Conv2d_0c_3x1", 256, [3, 1])]],
                [("Conv2d_0a_1x1", 384, 1), ("Conv2d_0b_3x1", 448, [3, 1]),
                 ("Conv2d_0c_1x3", 512, [1, 3]),
                 [("Conv2d_0d_1x3", 256, [1, 3]), ("Conv2d_0e_3x1", 256, [3, 1])]],
                [("AvgPool_0a_3x3", None, 3), ("Conv2d_0b_1x1", 256, 1)]]
# (end point, branches): 4 Inception-A, Reduction-A, 7 Inception-B, Reduction-B, 3 Inception-C
_BLOCKS = [("Mixed_3a", _MIXED_3A), ("Mixed_4a", _MIXED_4A), ("Mixed_5a", _MIXED_5A),
           *[(f"Mixed_5{c}", _INCEPTION_A) for c in "bcde"], ("Mixed_6a", _REDUCTION_A),
           *[(f"Mixed_6{c}", _INCEPTION_B) for c in "bcdefgh"], ("Mixed_7a", _REDUCTION_B),
           *[(f"Mixed_7{c}", _INCEPTION_C) for c in "bcd"]]


def layer(net, spec):
    """Apply one table entry (see the module notes) to `net`."""
    if isinstance(spec, list):
        return tf.concat([layer(net, s) for s in spec], 3)
    scope, depth, kernel, stride, padding = spec if len(spec) == 5 else (*spec, 1, "SAME")
    if depth is not None:
        return slim.conv2d(net, depth, kernel, stride=stride, padding=padding, scope=scope)
    pool = slim.max_pool2d if scope.startswith("MaxPool") else slim.avg_pool2d
    return pool(net, kernel, stride=stride, padding=padding, scope=scope)


def branches(net, table):
    """The branches of `table` on `net` (scopes Branch_i), concatenated on depth."""
    outputs = []
    for i, branch in enumerate(table):
        with tf.variable_scope(f"Branch_{i}"):
            out = net
            for spec in branch:
                out = layer(out, spec)
        outputs.append(out)
    return tf.concat(outputs, 3)


def inception_v4_base(images, scope="InceptionV4"):
    """The net up to Mixed_7d (8x8x1536 at 299 px), what its Logits pool; end points named by
    the stem layers and the Mixed blocks."""
    with tf.variable_scope(scope, "InceptionV4", [images]):
        return _base(images)


def _base(net):
    """inception_v4_base inside the current scope."""
    end_points = {}
    for spec in _STEM:
        net = end_points[spec[0]] = layer(net, spec)
    for name, table in _BLOCKS:
        with tf.variable_scope(name):
            net = end_points[name] = branches(net, table)
    return net, end_points


def inception_v4(images, num_classes=1001, is_training=True, dropout_keep_prob=0.8,
                 scope="InceptionV4"):
    """Inception-v4 with its classifier (Logits) and auxiliary classifier (AuxLogits, on
    Mixed_6h) for `num_classes`; with num_classes=None, the base's features (no AuxLogits).

    AuxLogits/Conv2d_2a takes the whole pooled map as its kernel (5x5 at 299 px), so its shape
    follows the image size, as in research/slim; it needs images of at least 107 px, the
    base alone 75 px."""
    with tf.variable_scope(scope, "InceptionV4", [images]), \
            slim.arg_scope([slim.batch_norm, slim.dropout], is_training=is_training):
        net, end_points = _base(images)
        if not num_classes:
            return net, end_points
        with tf.variable_scope("AuxLogits"):
            aux = slim.avg_pool2d(end_points["Mixed_6h"], 5, stride=3, padding="VALID",
                                  scope="AvgPool_1a_5x5")
            aux = slim.conv2d(aux, 128, 1, scope="Conv2d_1b_1x1")
            aux = slim.conv2d(aux, 768, aux.shape[1:3], padding="VALID", scope="Conv2d_2a")
            end_points["AuxLogits"] = slim.fully_connected(
                slim.flatten(aux), num_classes, activation_fn=None, scope="Aux_logits")
        with tf.variable_scope("Logits"):
            net = end_points["global_pool"] = tf.reduce_mean(net, [1, 2], keepdims=True,
                                                             name="global_pool")
            net = slim.dropout(net, dropout_keep_prob, scope="Dropout_1b")
            net = end_points["PreLogitsFlatten"] = slim.flatten(net, scope="PreLogitsFlatten")
            logits = end_points["Logits"] = slim.fully_connected(
                net, num_classes, activation_fn=None, scope="Logits")
            end_points["Predictions"] = tf.nn.softmax(logits, name="Predictions")
    return logits, end_points


inception_v4.default_image_size = 299


def inception_v4_arg_scope(weight_decay=0.00004, batch_norm_decay=0.9997,
                           batch_norm_epsilon=0.001):
    """research/slim's inception_arg_scope: L2 on conv and fc weights, He (variance scaling)
    initialised convolutions with batch norm (no gamma) and ReLU."""
    batch_norm = {"decay": batch_norm_decay, "epsilon": batch_norm_epsilon,
                  "updates_collections": tf.GraphKeys.UPDATE_OPS, "fused": None}
    with slim.arg_scope([slim.conv2d, slim.fully_connected],
                        weights_regularizer=slim.l2_regularizer(weight_decay)), \
            slim.arg_scope([slim.conv2d], weights_initializer=slim.variance_scaling_initializer(),
                           activation_fn=tf.nn.relu, normalizer_fn=slim.batch_norm,
                           normalizer_params=batch_norm) as sc:
        return sc
