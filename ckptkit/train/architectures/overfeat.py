"""OverFeat (Sermanet et al. 2014, arXiv:1312.6229; the "fast" model) as tensorflow/models
research/slim and tf_slim 1.1 build it: the same scopes, shapes, initialisers and arg scope.
tf_slim's own builder always makes its classifier fc8; this one stops at fc7 for
`num_classes=None`, which is what a new head needs. No pretrained checkpoint was published.

Its fully connected layers are convolutions (fc6 a 6x6 VALID one), so the net takes 231 px
images and no smaller; larger ones give spatial class maps.
"""
from ...tfcompat import slim, tf

# (scope, depth, kernel, stride, padding); depth None: a 2x2 max pooling, stride 2, VALID
_FEATURES = [("conv1", 64, 11, 4, "VALID"), ("pool1", None, 2, 2, "VALID"),
             ("conv2", 256, 5, 1, "VALID"), ("pool2", None, 2, 2, "VALID"),
             ("conv3", 512, 3, 1, "SAME"), ("conv4", 1024, 3, 1, "SAME"),
             ("conv5", 1024, 3, 1, "SAME"), ("pool5", None, 2, 2, "VALID")]


def overfeat(images, num_classes=1000, is_training=True, dropout_keep_prob=0.5,
             scope="overfeat"):
    """OverFeat with its classifier fc8 for `num_classes` (logits [batch, h, w, classes],
    1x1 at 231 px), or fc7's output (before its dropout) for num_classes=None.
    End points are named "<scope>/<layer>" like research/slim's."""
    end_points = {}
    with tf.variable_scope(scope, "overfeat", [images]) as sc:
        net = images
        for name, depth, kernel, stride, padding in _FEATURES:
            net = end_points[f"{sc.name}/{name}"] = (
                slim.max_pool2d(net, kernel, stride, padding=padding, scope=name)
                if depth is None else
                slim.conv2d(net, depth, kernel, stride, padding=padding, scope=name))
        with slim.arg_scope([slim.conv2d],
                            weights_initializer=tf.truncated_normal_initializer(stddev=0.005),
                            biases_initializer=tf.constant_initializer(0.1)):
            net = end_points[f"{sc.name}/fc6"] = slim.conv2d(net, 3072, 6, padding="VALID",
                                                             scope="fc6")
            net = slim.dropout(net, dropout_keep_prob, is_training=is_training,
                               scope="dropout6")
            net = end_points[f"{sc.name}/fc7"] = slim.conv2d(net, 4096, 1, scope="fc7")
            if not num_classes:
                return net, end_points
            net = slim.dropout(net, dropout_keep_prob, is_training=is_training,
                               scope="dropout7")
            logits = end_points[f"{sc.name}/fc8"] = slim.conv2d(
                net, num_classes, 1, activation_fn=None, normalizer_fn=None,
                biases_initializer=tf.zeros_initializer(), scope="fc8")
    return logits, end_points


overfeat.default_image_size = 231


def overfeat_arg_scope(weight_decay=0.0005):
    """ReLU, L2 on weights and zero biases for conv and fc layers; SAME convolutions, VALID
    max pooling (research/slim's overfeat_arg_scope)."""
    with slim.arg_scope([slim.conv2d, slim.fully_connected], activation_fn=tf.nn.relu,
                        weights_regularizer=slim.l2_regularizer(weight_decay),
                        biases_initializer=tf.zeros_initializer()), \
            slim.arg_scope([slim.conv2d], padding="SAME"), \
            slim.arg_scope([slim.max_pool2d], padding="VALID") as sc:
        return sc
