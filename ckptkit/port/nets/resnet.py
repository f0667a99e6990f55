"""ResNet v1 and v2 (tf_slim.nets.resnet_v1 / resnet_v2) in Keras 3.

Facts the shapes cannot give: units per block by depth; v1 puts a block's stride in its last
unit's 3x3 conv (torchvision puts it in the first), v2 likewise; v1 normalises after each conv
and adds before the ReLU, v2 normalises before (`preact`) and after the last block
(`postnorm`), and its root conv has biases and no batch norm. resnet_arg_scope: batch norm
epsilon 1e-5, max pooling "same".
"""
UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
EPSILON = 1e-5


def resnet(slim, record, inputs):
    slim.epsilon = EPSILON
    version, depth = record.name.split("_")[1], int(record.name.rsplit("_", 1)[1])
    v2 = version == "v2"
    scope = record.scope
    net = slim.conv_same(inputs, f"{scope}/conv1", stride=2,
                         activation=None if v2 else "relu")
    slim.end_point(f"{scope}/conv1", net)
    net = slim.max_pool(net, 3, 2, padding="same", scope=f"{scope}/pool1")
    for block, units in enumerate(UNITS[depth], 1):
        for unit in range(1, units + 1):
            stride = 2 if unit == units and block < 4 else 1
            unit_scope = f"{scope}/block{block}/unit_{unit}/bottleneck_{version}"
            net = (_bottleneck_v2 if v2 else _bottleneck_v1)(slim, net, unit_scope, stride)
            slim.end_point(unit_scope, net)
        slim.end_point(f"{scope}/block{block}", net)
    if v2:
        net = slim.batch_norm(net, f"{scope}/postnorm")
    net = slim.end_point("global_pool", slim.global_pool(net))
    if slim.head:
        return slim.new_head(net)
    logits = slim.conv(net, f"{scope}/logits", activation=None, classes=True)
    return slim.squeeze(logits)


def _shortcut(slim, net, scope, stride):
    """The projection when the checkpoint has one, else the input subsampled."""
    if slim.has(f"{scope}/shortcut/weights"):
        return slim.conv(net, f"{scope}/shortcut", stride=stride, activation=None)
    return net if stride == 1 else slim.max_pool(net, 1, stride)


def _bottleneck_v1(slim, net, scope, stride):
    shortcut = _shortcut(slim, net, scope, stride)
    residual = slim.conv(net, f"{scope}/conv1")
    residual = slim.conv_same(residual, f"{scope}/conv2", stride=stride)
    residual = slim.conv(residual, f"{scope}/conv3", activation=None)
    return slim.activation(slim.add([shortcut, residual]), "relu", scope)


def _bottleneck_v2(slim, net, scope, stride):
    preact = slim.batch_norm(net, f"{scope}/preact")
    shortcut = _shortcut(slim, preact if slim.has(f"{scope}/shortcut/weights") else net,
                         scope, stride)
    residual = slim.conv(preact, f"{scope}/conv1")
    residual = slim.conv_same(residual, f"{scope}/conv2", stride=stride)
    residual = slim.conv(residual, f"{scope}/conv3", activation=None)
    return slim.add([shortcut, residual])
