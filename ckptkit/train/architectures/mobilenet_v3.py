"""MobileNet v3 large and small (Howard et al. 2019, arXiv:1905.02244) with the layer names,
shapes and arg scope of research/slim's nets/mobilenet/mobilenet_v3.py (V3_LARGE, V3_SMALL),
whose published checkpoints then restore into them. Built from MobileNet v2's pieces
(mobilenet_v2.py): the same inverted-residual block, classifier and arg scope.

After the blocks: 1x1 convolution `Conv_1` (batch norm, hard swish), global average pooling,
1x1 convolution `Conv_2` (biases, no batch norm, hard swish), then the classifier, whose
features are therefore [batch, 1, 1, 1280] (large) or [batch, 1, 1, 1024] (small).
"""
from ...tfcompat import slim, tf
from .mobilenet_v2 import expanded_conv, make_divisible, mobilenet, mobilenet_v2_arg_scope


def hard_swish(x):
    """x * relu6(x + 3) / 6."""
    with tf.name_scope("hard_swish"):
        return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


def _hard_sigmoid(x):
    """The squeeze-and-excite gate, with research/slim's constant 0.16667 (not 1/6)."""
    return tf.nn.relu6(x + 3.0) * 0.16667


def squeeze_excite(net):
    """Scales each channel of `net` by a gate computed from its global average: 1x1
    convolution `Conv` to a quarter of the channels (rounded by make_divisible), ReLU, 1x1
    convolution `Conv_1` back, hard sigmoid; both with biases and no batch norm."""
    depth = net.shape.as_list()[-1]
    with tf.variable_scope("squeeze_excite"):
        gate = tf.reduce_mean(net, [1, 2], keepdims=True)
        gate = slim.conv2d(gate, make_divisible(depth / 4), [1, 1], activation_fn=tf.nn.relu,
                           normalizer_fn=None, scope="Conv")
        gate = slim.conv2d(gate, depth, [1, 1], activation_fn=_hard_sigmoid,
                           normalizer_fn=None, scope="Conv_1")
        return net * gate


_RE, _HS = tf.nn.relu, hard_swish

# the paper's tables 1 (large) and 2 (small), one row a block: kernel, expansion size,
# depth, squeeze-and-excite, activation, stride
_LARGE = [(3, 16, 16, False, _RE, 1), (3, 64, 24, False, _RE, 2), (3, 72, 24, False, _RE, 1),
          (5, 72, 40, True, _RE, 2), (5, 120, 40, True, _RE, 1), (5, 120, 40, True, _RE, 1),
          (3, 240, 80, False, _HS, 2), (3, 200, 80, False, _HS, 1),
          (3, 184, 80, False, _HS, 1), (3, 184, 80, False, _HS, 1),
          (3, 480, 112, True, _HS, 1), (3, 672, 112, True, _HS, 1),
          (5, 672, 160, True, _HS, 2), (5, 960, 160, True, _HS, 1),
          (5, 960, 160, True, _HS, 1)]
_SMALL = [(3, 16, 16, True, _RE, 2), (3, 72, 24, False, _RE, 2), (3, 88, 24, False, _RE, 1),
          (5, 96, 40, True, _HS, 2), (5, 240, 40, True, _HS, 1), (5, 240, 40, True, _HS, 1),
          (5, 120, 48, True, _HS, 1), (5, 144, 48, True, _HS, 1),
          (5, 288, 96, True, _HS, 2), (5, 576, 96, True, _HS, 1), (5, 576, 96, True, _HS, 1)]


def _global_pool(net, scope):
    return tf.reduce_mean(net, [1, 2], keepdims=True, name=scope)


def _layers(blocks, features, head):
    """Conv (16, stride 2, hard swish), the blocks, Conv_1, AvgPool, Conv_2."""
    return [("Conv", slim.conv2d, dict(num_outputs=16, kernel_size=[3, 3], stride=2,
                                       activation_fn=hard_swish))] + [
        ("expanded_conv", expanded_conv, dict(
            depth=depth, expanded=expanded, stride=stride, kernel=kernel, activation_fn=act,
            transform=squeeze_excite if se else None))
        for kernel, expanded, depth, se, act, stride in blocks] + [
        ("Conv", slim.conv2d, dict(num_outputs=features, kernel_size=[1, 1],
                                   activation_fn=hard_swish)),
        ("AvgPool", _global_pool, {}),
        ("Conv", slim.conv2d, dict(num_outputs=head, kernel_size=[1, 1], normalizer_fn=None,
                                   activation_fn=hard_swish))]


def mobilenet_v3_large(images, num_classes=1001, is_training=True, dropout_keep_prob=0.8,
                       scope="MobilenetV3"):
    return mobilenet(images, _layers(_LARGE, 960, 1280), num_classes, is_training=is_training,
                     dropout_keep_prob=dropout_keep_prob, activation_fn=tf.nn.relu,
                     scope=scope)


def mobilenet_v3_small(images, num_classes=1001, is_training=True, dropout_keep_prob=0.8,
                       scope="MobilenetV3"):
    return mobilenet(images, _layers(_SMALL, 576, 1024), num_classes, is_training=is_training,
                     dropout_keep_prob=dropout_keep_prob, activation_fn=tf.nn.relu,
                     scope=scope)


mobilenet_v3_large.default_image_size = mobilenet_v3_small.default_image_size = 224
# research/slim builds v3 under the same training scope as v2
mobilenet_v3_arg_scope = mobilenet_v2_arg_scope
