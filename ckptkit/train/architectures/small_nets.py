"""LeNet and CifarNet, the two small nets of tensorflow/models research/slim that tf_slim 1.1
does not ship, with the same layer names, shapes, initialisers and arg scopes, so checkpoints
trained with research/slim restore into them.

Both take `num_classes=None` (or 0) for a headless net: they then return the features the
classifier would have seen (LeNet: fc3 before its dropout; CifarNet: fc4).
"""
from ...tfcompat import slim, tf


def lenet(images, num_classes=10, is_training=False, dropout_keep_prob=0.5, scope="LeNet"):
    """LeNet for 28x28 grayscale digits: conv1, pool1, conv2, pool2, fc3, dropout3, fc4."""
    end_points = {}
    with tf.variable_scope(scope, "LeNet", [images]):
        net = end_points["conv1"] = slim.conv2d(images, 32, [5, 5], scope="conv1")
        net = end_points["pool1"] = slim.max_pool2d(net, [2, 2], 2, scope="pool1")
        net = end_points["conv2"] = slim.conv2d(net, 64, [5, 5], scope="conv2")
        net = end_points["pool2"] = slim.max_pool2d(net, [2, 2], 2, scope="pool2")
        net = end_points["Flatten"] = slim.flatten(net)
        net = end_points["fc3"] = slim.fully_connected(net, 1024, scope="fc3")
        if not num_classes:
            return net, end_points
        net = end_points["dropout3"] = slim.dropout(
            net, dropout_keep_prob, is_training=is_training, scope="dropout3")
        logits = end_points["Logits"] = slim.fully_connected(
            net, num_classes, activation_fn=None, scope="fc4")
    end_points["Predictions"] = slim.softmax(logits, scope="Predictions")
    return logits, end_points


lenet.default_image_size = 28


def lenet_arg_scope(weight_decay=0.0):
    with slim.arg_scope([slim.conv2d, slim.fully_connected],
                        weights_regularizer=slim.l2_regularizer(weight_decay),
                        weights_initializer=tf.truncated_normal_initializer(stddev=0.1),
                        activation_fn=tf.nn.relu) as sc:
        return sc


def cifarnet(images, num_classes=10, is_training=False, dropout_keep_prob=0.5,
             scope="CifarNet"):
    """CifarNet for 32x32 colour images: conv1, pool1, norm1, conv2, norm2, pool2, fc3,
    dropout3, fc4, logits (norm* are local response normalisations, no variables)."""
    end_points = {}
    with tf.variable_scope(scope, "CifarNet", [images]):
        net = end_points["conv1"] = slim.conv2d(images, 64, [5, 5], scope="conv1")
        net = end_points["pool1"] = slim.max_pool2d(net, [2, 2], 2, scope="pool1")
        net = tf.nn.lrn(net, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, name="norm1")
        net = end_points["conv2"] = slim.conv2d(net, 64, [5, 5], scope="conv2")
        net = tf.nn.lrn(net, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, name="norm2")
        net = end_points["pool2"] = slim.max_pool2d(net, [2, 2], 2, scope="pool2")
        net = end_points["Flatten"] = slim.flatten(net)
        net = end_points["fc3"] = slim.fully_connected(net, 384, scope="fc3")
        net = slim.dropout(net, dropout_keep_prob, is_training=is_training, scope="dropout3")
        net = end_points["fc4"] = slim.fully_connected(net, 192, scope="fc4")
        if not num_classes:
            return net, end_points
        logits = end_points["Logits"] = slim.fully_connected(
            net, num_classes, activation_fn=None, weights_regularizer=None,
            weights_initializer=tf.truncated_normal_initializer(stddev=1 / 192.0),
            biases_initializer=tf.zeros_initializer(), scope="logits")
    end_points["Predictions"] = slim.softmax(logits, scope="Predictions")
    return logits, end_points


cifarnet.default_image_size = 32


def cifarnet_arg_scope(weight_decay=0.004):
    with slim.arg_scope([slim.conv2d],
                        weights_initializer=tf.truncated_normal_initializer(stddev=5e-2),
                        activation_fn=tf.nn.relu), \
            slim.arg_scope([slim.fully_connected],
                           biases_initializer=tf.constant_initializer(0.1),
                           weights_initializer=tf.truncated_normal_initializer(stddev=0.04),
                           weights_regularizer=slim.l2_regularizer(weight_decay),
                           activation_fn=tf.nn.relu) as sc:
        return sc
