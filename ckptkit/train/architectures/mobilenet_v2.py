"""MobileNet v2 (Sandler et al. 2018, arXiv:1801.04381) with the layer names, shapes and arg
scope of research/slim's nets/mobilenet, whose published checkpoints then restore into it; the
pieces MobileNet v3 shares live here too (mobilenet_v3.py imports them).

A net is a list of layers (scope base name, layer function, keyword arguments) run in order
under the net's scope: repeated names are numbered as tf_slim numbers unnamed layers (`Conv`,
`Conv_1`, ...; `expanded_conv`, `expanded_conv_1`, ...), and layer i is end point `layer_i`,
as research/slim names them. Then research/slim's classifier, scope `Logits`: global average
pooling, dropout, 1x1 convolution `Conv2d_1c_1x1`.

Depths follow research/slim's rounding, `make_divisible`: a layer of depth d in a net of width
multiplier m has make_divisible(d * m) channels; a block's expansion layer has
make_divisible(input depth * expansion) and is left out when it would not widen the input.
The last 1x1 convolution (1280) shrinks with no multiplier below 1: the paper (section 4)
keeps it for the published narrow nets (research/slim: finegrain_classification_mode).
"""
import collections
import functools

from ...tfcompat import slim, tf

# the inverted-residual stages as the paper's table 2 gives them: expansion t, depth c,
# repeats n, stride s of the first block
_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1)]


def make_divisible(value, divisor=8):
    """research/slim's depth rounding: the nearest multiple of `divisor`, at least `divisor`,
    and not more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def expanded_conv(net, depth, expanded, stride=1, kernel=3, activation_fn=tf.nn.relu6,
                  transform=None, scope=None):
    """The inverted residual block: 1x1 convolution `expand` to `expanded` channels (only when
    that widens the input), `depthwise` kernel x kernel convolution, `transform` of its output
    (MobileNet v3's squeeze-and-excite), linear 1x1 projection `project` to `depth`; the input
    is added back when the stride is 1 and the depths match."""
    with tf.variable_scope(scope, "expanded_conv", [net]):
        out = net
        with slim.arg_scope([slim.conv2d, slim.separable_conv2d], activation_fn=activation_fn):
            if expanded > net.shape.as_list()[-1]:
                out = slim.conv2d(out, expanded, [1, 1], scope="expand")
            out = slim.separable_conv2d(out, None, [kernel, kernel], depth_multiplier=1,
                                        stride=stride, scope="depthwise")
        if transform:
            out = transform(out)
        out = slim.conv2d(out, depth, [1, 1], activation_fn=None, scope="project")
        return out + net if stride == 1 and depth == net.shape.as_list()[-1] else out


def mobilenet(images, layers, num_classes, *, is_training, dropout_keep_prob, activation_fn,
              scope):
    """Run `layers` (module notes) under `scope`, then the classifier; num_classes=None: the
    pooled features the classifier's dropout would see."""
    end_points = {}
    seen = collections.Counter()
    with tf.variable_scope(scope, values=[images]), \
            slim.arg_scope([slim.conv2d, slim.separable_conv2d], activation_fn=activation_fn,
                           padding="SAME"), \
            slim.arg_scope([slim.batch_norm], center=True, scale=True):
        net = images
        for i, (name, layer, kwargs) in enumerate(layers, 1):
            unique = f"{name}_{seen[name]}" if seen[name] else name
            seen[name] += 1
            net = end_points[f"layer_{i}"] = layer(net, scope=unique, **kwargs)
        with tf.variable_scope("Logits"):
            net = end_points["global_pool"] = tf.reduce_mean(net, [1, 2], keepdims=True,
                                                             name="global_pool")
            if not num_classes:
                return net, end_points
            net = slim.dropout(net, dropout_keep_prob, is_training=is_training, scope="Dropout")
            logits = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                                 normalizer_fn=None, biases_initializer=tf.zeros_initializer(),
                                 scope="Conv2d_1c_1x1")
            logits = end_points["Logits"] = tf.squeeze(logits, [1, 2], name="output")
    end_points["Predictions"] = slim.softmax(logits, scope="Predictions")
    return logits, end_points


def v2_layers(depth_multiplier):
    """MobileNet v2's layers for a width multiplier: Conv, 17 blocks, Conv_1."""
    def depth(d):
        return make_divisible(d * depth_multiplier)
    layers = [("Conv", slim.conv2d, dict(num_outputs=depth(32), kernel_size=[3, 3], stride=2))]
    previous = depth(32)
    for expansion, d, repeats, stride in _V2_STAGES:
        for i in range(repeats):
            layers.append(("expanded_conv", expanded_conv, dict(
                depth=depth(d), expanded=make_divisible(previous * expansion),
                stride=1 if i else stride)))
            previous = depth(d)
    last = make_divisible(1280 * max(depth_multiplier, 1.0))
    return layers + [("Conv", slim.conv2d, dict(num_outputs=last, kernel_size=[1, 1]))]


def mobilenet_v2(images, num_classes=1001, is_training=True, depth_multiplier=1.0,
                 dropout_keep_prob=0.8, scope="MobilenetV2"):
    """MobileNet v2 (ReLU6 after every layer but the projections); dropout keeps 80% as
    research/slim's training scope sets it."""
    return mobilenet(images, v2_layers(depth_multiplier), num_classes, is_training=is_training,
                     dropout_keep_prob=dropout_keep_prob, activation_fn=tf.nn.relu6,
                     scope=scope)


mobilenet_v2.default_image_size = 224
mobilenet_v2_140 = functools.partial(mobilenet_v2, depth_multiplier=1.4)
mobilenet_v2_130 = functools.partial(mobilenet_v2, depth_multiplier=1.3)
mobilenet_v2_075 = functools.partial(mobilenet_v2, depth_multiplier=0.75)
mobilenet_v2_050 = functools.partial(mobilenet_v2, depth_multiplier=0.5)
mobilenet_v2_035 = functools.partial(mobilenet_v2, depth_multiplier=0.35)


def mobilenet_v2_arg_scope(weight_decay=0.00004, stddev=0.09, batch_norm_decay=0.997,
                           batch_norm_epsilon=0.001):
    """research/slim's mobilenet training_scope (v2 and v3): truncated-normal weights, batch
    norm after every convolution, L2 weight decay on the convolutions but not on the depthwise
    filters."""
    with slim.arg_scope([slim.conv2d, slim.fully_connected, slim.separable_conv2d],
                        weights_initializer=tf.truncated_normal_initializer(stddev=stddev),
                        normalizer_fn=slim.batch_norm), \
            slim.arg_scope([slim.batch_norm], decay=batch_norm_decay,
                           epsilon=batch_norm_epsilon), \
            slim.arg_scope([slim.conv2d], weights_regularizer=slim.l2_regularizer(weight_decay)), \
            slim.arg_scope([slim.separable_conv2d], weights_regularizer=None) as sc:
        return sc
