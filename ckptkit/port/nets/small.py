"""LeNet and CifarNet (ckptkit's train/architectures/small_nets.py) in Keras 3.

Facts the shapes cannot give: convs are "SAME" with ReLU and biases, no batch norm; max
pooling 2x2 stride 2 "VALID"; the flattened features go through ReLU fully connected layers
to a classifier without activation. LeNet takes one channel. CifarNet's norm1 and norm2 are
tf.nn.lrn(depth_radius=4, bias=1, alpha=0.001/9, beta=0.75), not end points. Dropout is the
identity at inference.
"""
LRN = dict(depth_radius=4, bias=1.0, alpha=0.001 / 9, beta=0.75)


def lenet(slim, record, inputs):
    layers = ["conv1", "pool1", "conv2", "pool2", "Flatten", "fc3"]
    return _net(slim, record.scope, inputs, layers, "fc4")


def cifarnet(slim, record, inputs):
    layers = ["conv1", "pool1", "norm1", "conv2", "norm2", "pool2", "Flatten", "fc3", "fc4"]
    return _net(slim, record.scope, inputs, layers, "logits")


def _net(slim, scope, net, layers, classifier):
    """`layers`, each of the kind its name says and an end point of that name (but the
    norms); then the classifier (not an end point: the logits, compared anyway; a new
    head's differ)."""
    for name in layers:
        layer_scope = f"{scope}/{name}"
        if name.startswith("norm"):
            net = slim.lrn(net, layer_scope, **LRN)
            continue
        if name.startswith("conv"):
            net = slim.conv(net, layer_scope)
        elif name.startswith("pool"):
            net = slim.max_pool(net, 2, 2, scope=layer_scope)
        elif name == "Flatten":
            net = slim.flatten(net, layer_scope)
        else:
            net = slim.dense(net, layer_scope)
        slim.end_point(name, net)
    if slim.head:
        return slim.new_head(net)
    return slim.dense(net, f"{scope}/{classifier}", activation=None, classes=True)
