"""Inception-ResNet-v2 (Szegedy et al. 2016, arXiv:1602.07261) as tensorflow/models
research/slim builds it, so its published checkpoint (inception_resnet_v2_2016_08_30)
restores: same scopes, depths, kernels, strides, paddings and batch-norm settings.

Tables as in inception_v4.py. A residual block (scopes Repeat/block35_i, Repeat_1/block17_i,
Repeat_2/block8_i: research/slim's slim.repeat names) concatenates its branches, projects
them back to the input depth with a biased 1x1 convolution without batch norm
(`Conv2d_1x1`), adds that to its input times the block's scale (0.17, 0.10, 0.20) and applies
ReLU; the last block, `Block8`, adds unscaled and without ReLU, and Conv2d_7b_1x1 (1536
channels) follows it.
"""
from ...tfcompat import slim, tf
from .inception_v4 import branches, layer

_STEM = [("Conv2d_1a_3x3", 32, 3, 2, "VALID"), ("Conv2d_2a_3x3", 32, 3, 1, "VALID"),
         ("Conv2d_2b_3x3", 64, 3), ("MaxPool_3a_3x3", None, 3, 2, "VALID"),
         ("Conv2d_3b_1x1", 80, 1, 1, "VALID"), ("Conv2d_4a_3x3", 192, 3, 1, "VALID"),
         ("MaxPool_5a_3x3", None, 3, 2, "VALID")]
_MIXED_5B = [[("Conv2d_1x1", 96, 1)],
             [("Conv2d_0a_1x1", 48, 1), ("Conv2d_0b_5x5", 64, 5)],
             [("Conv2d_0a_1x1", 64, 1), ("Conv2d_0b_3x3", 96, 3), ("Conv2d_0c_3x3", 96, 3)],
             [("AvgPool_0a_3x3", None, 3), ("Conv2d_0b_1x1", 64, 1)]]
_BLOCK35 = [[("Conv2d_1x1", 32, 1)],
            [("Conv2d_0a_1x1", 32, 1), ("Conv2d_0b_3x3", 32, 3)],
            [("Conv2d_0a_1x1", 32, 1), ("Conv2d_0b_3x3", 48, 3), ("Conv2d_0c_3x3", 64, 3)]]
_MIXED_6A = [[("Conv2d_1a_3x3", 384, 3, 2, "VALID")],
             [("Conv2d_0a_1x1", 256, 1), ("Conv2d_0b_3x3", 256, 3),
              ("Conv2d_1a_3x3", 384, 3, 2, "VALID")],
             [("MaxPool_1a_3x3", None, 3, 2, "VALID")]]
_BLOCK17 = [[("Conv2d_1x1", 192, 1)],
            [("Conv2d_0a_1x1", 128, 1), ("Conv2d_0b_1x7", 160, [1, 7]),
             ("Conv2d_0c_7x1", 192, [7, 1])]]
_MIXED_7A = [[("Conv2d_0a_1x1", 256, 1), ("Conv2d_1a_3x3", 384, 3, 2, "VALID")],
             [("Conv2d_0a_1x1", 256, 1), ("Conv2d_1a_3x3", 288, 3, 2, "VALID")],
             [("Conv2d_0a_1x1", 256, 1), ("Conv2d_0b_3x3", 288, 3),
              ("Conv2d_1a_3x3", 320, 3, 2, "VALID")],
             [("MaxPool_1a_3x3", None, 3, 2, "VALID")]]
_BLOCK8 = [[("Conv2d_1x1", 192, 1)],
           [("Conv2d_0a_1x1", 192, 1), ("Conv2d_0b_1x3", 224, [1, 3]),
            ("Conv2d_0c_3x1", 256, [3, 1])]]


def _residual(net, table, scale, relu, scope):
    """One residual block: net + scale * Conv2d_1x1(branches), then ReLU when `relu`."""
    with tf.variable_scope(scope):
        up = slim.conv2d(branches(net, table), net.shape[3], 1, normalizer_fn=None,
                         activation_fn=None, scope="Conv2d_1x1")
        net = net + scale * up
        return tf.nn.relu(net) if relu else net


def _repeat(net, table, count, scale, scope, name):
    with tf.variable_scope(scope):
        for i in range(1, count + 1):
            net = _residual(net, table, scale, True, f"{name}_{i}")
    return net


def inception_resnet_v2_base(images, scope="InceptionResnetV2"):
    """The net up to Conv2d_7b_1x1 (8x8x1536 at 299 px), what its Logits pool; end points as
    research/slim names them (PreAuxLogits: the 17x17x1088 output of the block17 repeats)."""
    with tf.variable_scope(scope, "InceptionResnetV2", [images]):
        return _base(images)


def _base(net):
    """inception_resnet_v2_base inside the current scope."""
    end_points = {}
    for spec in _STEM:
        net = end_points[spec[0]] = layer(net, spec)
    with tf.variable_scope("Mixed_5b"):
        net = end_points["Mixed_5b"] = branches(net, _MIXED_5B)
    net = _repeat(net, _BLOCK35, 10, 0.17, "Repeat", "block35")
    with tf.variable_scope("Mixed_6a"):
        net = end_points["Mixed_6a"] = branches(net, _MIXED_6A)
    net = end_points["PreAuxLogits"] = _repeat(net, _BLOCK17, 20, 0.10, "Repeat_1", "block17")
    with tf.variable_scope("Mixed_7a"):
        net = end_points["Mixed_7a"] = branches(net, _MIXED_7A)
    net = _repeat(net, _BLOCK8, 9, 0.20, "Repeat_2", "block8")
    net = _residual(net, _BLOCK8, 1.0, False, "Block8")
    net = end_points["Conv2d_7b_1x1"] = layer(net, ("Conv2d_7b_1x1", 1536, 1))
    return net, end_points


def inception_resnet_v2(images, num_classes=1001, is_training=True, dropout_keep_prob=0.8,
                        scope="InceptionResnetV2"):
    """Inception-ResNet-v2 with its classifier (Logits) and auxiliary classifier (AuxLogits, on
    PreAuxLogits) for `num_classes`; with num_classes=None, the base's features (no
    AuxLogits).

    AuxLogits/Conv2d_2a_5x5 takes the whole pooled map as its kernel (5x5 at 299 px), so its
    shape follows the image size, as in research/slim; it needs images of at least 107 px,
    the base alone 75 px."""
    with tf.variable_scope(scope, "InceptionResnetV2", [images]), \
            slim.arg_scope([slim.batch_norm, slim.dropout], is_training=is_training):
        net, end_points = _base(images)
        if not num_classes:
            return net, end_points
        with tf.variable_scope("AuxLogits"):
            aux = slim.avg_pool2d(end_points["PreAuxLogits"], 5, stride=3, padding="VALID",
                                  scope="Conv2d_1a_3x3")
            aux = slim.conv2d(aux, 128, 1, scope="Conv2d_1b_1x1")
            aux = slim.conv2d(aux, 768, aux.shape[1:3], padding="VALID", scope="Conv2d_2a_5x5")
            end_points["AuxLogits"] = slim.fully_connected(
                slim.flatten(aux), num_classes, activation_fn=None, scope="Logits")
        with tf.variable_scope("Logits"):
            net = end_points["global_pool"] = tf.reduce_mean(net, [1, 2], keepdims=True,
                                                             name="global_pool")
            net = slim.dropout(slim.flatten(net), dropout_keep_prob, scope="Dropout")
            end_points["PreLogitsFlatten"] = net
            logits = end_points["Logits"] = slim.fully_connected(
                net, num_classes, activation_fn=None, scope="Logits")
            end_points["Predictions"] = tf.nn.softmax(logits, name="Predictions")
    return logits, end_points


inception_resnet_v2.default_image_size = 299


def inception_resnet_v2_arg_scope(weight_decay=0.00004, batch_norm_decay=0.9997,
                                  batch_norm_epsilon=0.001):
    """research/slim's inception_resnet_v2_arg_scope: L2 on conv and fc weights and biases,
    convolutions (tf_slim's default Glorot initialiser) with batch norm (no gamma) and ReLU."""
    batch_norm = {"decay": batch_norm_decay, "epsilon": batch_norm_epsilon,
                  "updates_collections": tf.GraphKeys.UPDATE_OPS, "fused": None}
    with slim.arg_scope([slim.conv2d, slim.fully_connected],
                        weights_regularizer=slim.l2_regularizer(weight_decay),
                        biases_regularizer=slim.l2_regularizer(weight_decay)), \
            slim.arg_scope([slim.conv2d], activation_fn=tf.nn.relu,
                           normalizer_fn=slim.batch_norm, normalizer_params=batch_norm) as sc:
        return sc
