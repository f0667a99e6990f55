"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861) with the layer names, shapes and arg
scope of research/slim's nets/mobilenet_v1.py, whose published checkpoints then restore into
it: a 3x3 convolution `Conv2d_0`, 13 depthwise-separable layers (`Conv2d_<i>_depthwise`, a 3x3
depthwise convolution, then `Conv2d_<i>_pointwise`, a 1x1 convolution), each with batch norm
and ReLU6, then the classifier, scope `Logits`: average pooling `AvgPool_1a`, dropout,
1x1 convolution `Conv2d_1c_1x1`.

A width multiplier m makes a layer of depth d max(int(d * m), 8) deep (research/slim's rule,
unlike v2's rounding). The average pool is 7x7, the feature map of a 224 input, or the whole
feature map when it is smaller, so any input size builds; larger inputs give a map of logits.
"""
import functools

from ...tfcompat import slim, tf

# (depth, stride) of the depthwise-separable layers Conv2d_1 .. Conv2d_13
_SEPARABLE = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5,
              (1024, 2), (1024, 1)]


def mobilenet_v1(images, num_classes=1001, is_training=True, depth_multiplier=1.0,
                 min_depth=8, dropout_keep_prob=0.999, scope="MobilenetV1"):
    """MobileNet v1; num_classes=None: the pooled features the classifier's dropout sees."""
    def depth(d):
        return max(int(d * depth_multiplier), min_depth)
    end_points = {}
    with tf.variable_scope(scope, "MobilenetV1", [images]), \
            slim.arg_scope([slim.conv2d, slim.separable_conv2d], padding="SAME"):
        net = end_points["Conv2d_0"] = slim.conv2d(images, depth(32), [3, 3], stride=2,
                                                   scope="Conv2d_0")
        for i, (d, stride) in enumerate(_SEPARABLE, 1):
            name = f"Conv2d_{i}_depthwise"
            net = end_points[name] = slim.separable_conv2d(
                net, None, [3, 3], depth_multiplier=1, stride=stride, scope=name)
            name = f"Conv2d_{i}_pointwise"
            net = end_points[name] = slim.conv2d(net, depth(d), [1, 1], scope=name)
        with tf.variable_scope("Logits"):
            size = [min(n or 7, 7) for n in net.shape.as_list()[1:3]]
            net = end_points["AvgPool_1a"] = slim.avg_pool2d(net, size, padding="VALID",
                                                             scope="AvgPool_1a")
            if not num_classes:
                return net, end_points
            net = slim.dropout(net, dropout_keep_prob, is_training=is_training,
                               scope="Dropout_1b")
            logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                                 normalizer_fn=None, scope="Conv2d_1c_1x1")
            if logits.shape.as_list()[1:3] == [1, 1]:
                logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
            end_points["Logits"] = logits
    end_points["Predictions"] = slim.softmax(logits, scope="Predictions")
    return logits, end_points


mobilenet_v1.default_image_size = 224
mobilenet_v1_075 = functools.partial(mobilenet_v1, depth_multiplier=0.75)
mobilenet_v1_050 = functools.partial(mobilenet_v1, depth_multiplier=0.5)
mobilenet_v1_025 = functools.partial(mobilenet_v1, depth_multiplier=0.25)


def mobilenet_v1_arg_scope(weight_decay=0.00004, stddev=0.09, batch_norm_decay=0.9997,
                           batch_norm_epsilon=0.001):
    """research/slim's mobilenet_v1_arg_scope: truncated-normal weights, batch norm (with
    gamma) and ReLU6 after every convolution, L2 weight decay on the convolutions but not on
    the depthwise filters."""
    with slim.arg_scope([slim.conv2d, slim.separable_conv2d],
                        weights_initializer=tf.truncated_normal_initializer(stddev=stddev),
                        activation_fn=tf.nn.relu6, normalizer_fn=slim.batch_norm), \
            slim.arg_scope([slim.batch_norm], center=True, scale=True, decay=batch_norm_decay,
                           epsilon=batch_norm_epsilon), \
            slim.arg_scope([slim.conv2d], weights_regularizer=slim.l2_regularizer(weight_decay)), \
            slim.arg_scope([slim.separable_conv2d], weights_regularizer=None) as sc:
        return sc
