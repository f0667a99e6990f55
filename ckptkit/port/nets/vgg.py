"""VGG 16/19 and AlexNet v2 (tf_slim.nets.vgg / alexnet) and OverFeat (ckptkit's
train/architectures/overfeat.py) in Keras 3.

Facts the shapes cannot give: every conv is ReLU with biases and no batch norm, "SAME" unless
said; max pooling is "VALID". VGG: 2x2 stride 2 pooling after each block of 3x3 convs
(convs per block by depth). AlexNet v2: conv1 stride 4 "VALID", 3x3 stride 2 pooling.
OverFeat: conv1 stride 4 and conv2 "VALID", 2x2 stride 2 pooling. The fully connected layers
are convs: fc6 "VALID" (its kernel spans the features), fc7 1x1, fc8 1x1 without ReLU: the
logits, squeezed to [n, classes]. Dropout is the identity at inference.
"""
VGG_BLOCKS = {"vgg_16": (2, 2, 3, 3, 3), "vgg_19": (2, 2, 4, 4, 4)}

# (scope, stride, padding) of a conv, or (scope, pool size, pool stride) of a max pooling
ALEXNET = [("conv1", 4, "valid"), ("pool1", 3, 2), ("conv2", 1, "same"), ("pool2", 3, 2),
           ("conv3", 1, "same"), ("conv4", 1, "same"), ("conv5", 1, "same"),
           ("pool5", 3, 2)]
OVERFEAT = [("conv1", 4, "valid"), ("pool1", 2, 2), ("conv2", 1, "valid"), ("pool2", 2, 2),
            ("conv3", 1, "same"), ("conv4", 1, "same"), ("conv5", 1, "same"),
            ("pool5", 2, 2)]


def vgg(slim, record, inputs):
    layers = []
    for block, convs in enumerate(VGG_BLOCKS[record.name], 1):
        layers += [(f"conv{block}/conv{block}_{i}", 1, "same") for i in range(1, convs + 1)]
        layers.append((f"pool{block}", 2, 2))
    return _net(slim, record.scope, inputs, layers)


def alexnet(slim, record, inputs):
    return _net(slim, record.scope, inputs, ALEXNET)


def overfeat(slim, record, inputs):
    return _net(slim, record.scope, inputs, OVERFEAT)


def _net(slim, scope, net, layers):
    """The `layers` table, then the convolutional classifier; every layer but the classifier
    (the logits, compared anyway; a new head's differ) an end point."""
    for name, a, b in layers:
        layer_scope = f"{scope}/{name}"
        net = (slim.max_pool(net, a, b, scope=layer_scope) if name.startswith("pool")
               else slim.conv(net, layer_scope, stride=a, padding=b))
        slim.end_point(layer_scope, net)
    net = slim.end_point(f"{scope}/fc6", slim.conv(net, f"{scope}/fc6", padding="valid"))
    net = slim.end_point(f"{scope}/fc7", slim.conv(net, f"{scope}/fc7"))
    if slim.head:
        return slim.new_head(net)
    logits = slim.conv(net, f"{scope}/fc8", activation=None, classes=True)
    return slim.squeeze(logits, f"{scope}/fc8/squeezed")
