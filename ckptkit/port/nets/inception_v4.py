"""Inception-v4 and Inception-ResNet-v2 (ckptkit/train/architectures/inception_v4.py and
inception_resnet_v2.py) in Keras 3.

Facts the shapes cannot give, as tables: a layer is a scope (stride 1, "same"), or
(scope, stride, "valid"); MaxPool_* and AvgPool_* scopes are 3x3 pools, the rest convs with
batch norm and ReLU; a block is branches (Branch_i) concatenated on depth, and a list inside
a branch splits it, each part on the same input, concatenated. The stems and the reduction
blocks are "valid"; the inception blocks "same". Inception-ResNet-v2's residual blocks add
their input to scale (0.17, 0.10, 0.20) times the biased 1x1 projection (no batch norm, no
activation) of their concatenated branches, then ReLU; the last, Block8, unscaled, no ReLU.
The classifier: global mean, flatten, fully connected (dropout is identity at inference).
Both arg_scopes: batch norm epsilon 0.001, no gamma.
"""
EPSILON = 0.001


def _valid(scope, stride=2):
    return scope, stride, "valid"


_REDUCTION_A = [[_valid("Conv2d_1a_3x3")],
                ["Conv2d_0a_1x1", "Conv2d_0b_3x3", _valid("Conv2d_1a_3x3")],
                [_valid("MaxPool_1a_3x3")]]

V4_STEM = [_valid("Conv2d_1a_3x3"), _valid("Conv2d_2a_3x3", 1), "Conv2d_2b_3x3"]
V4_BLOCKS = [
    ("Mixed_3a", [[_valid("MaxPool_0a_3x3")], [_valid("Conv2d_0a_3x3")]]),
    ("Mixed_4a", [["Conv2d_0a_1x1", _valid("Conv2d_1a_3x3", 1)],
                  ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1",
                   _valid("Conv2d_1a_3x3", 1)]]),
    ("Mixed_5a", [[_valid("Conv2d_1a_3x3")], [_valid("MaxPool_1a_3x3")]]),
    *[(f"Mixed_5{c}", [["Conv2d_0a_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_3x3"],
                       ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"],
                       ["AvgPool_0a_3x3", "Conv2d_0b_1x1"]]) for c in "bcde"],
    ("Mixed_6a", _REDUCTION_A),
    *[(f"Mixed_6{c}", [["Conv2d_0a_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"],
                       ["Conv2d_0a_1x1", "Conv2d_0b_7x1", "Conv2d_0c_1x7", "Conv2d_0d_7x1",
                        "Conv2d_0e_1x7"],
                       ["AvgPool_0a_3x3", "Conv2d_0b_1x1"]]) for c in "bcdefgh"],
    ("Mixed_7a", [["Conv2d_0a_1x1", _valid("Conv2d_1a_3x3")],
                  ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1", _valid("Conv2d_1a_3x3")],
                  [_valid("MaxPool_1a_3x3")]]),
    *[(f"Mixed_7{c}", [["Conv2d_0a_1x1"],
                       ["Conv2d_0a_1x1", ["Conv2d_0b_1x3", "Conv2d_0c_3x1"]],
                       ["Conv2d_0a_1x1", "Conv2d_0b_3x1", "Conv2d_0c_1x3",
                        ["Conv2d_0d_1x3", "Conv2d_0e_3x1"]],
                       ["AvgPool_0a_3x3", "Conv2d_0b_1x1"]]) for c in "bcd"],
]

IRV2_STEM = [_valid("Conv2d_1a_3x3"), _valid("Conv2d_2a_3x3", 1), "Conv2d_2b_3x3",
             _valid("MaxPool_3a_3x3"), _valid("Conv2d_3b_1x1", 1),
             _valid("Conv2d_4a_3x3", 1), _valid("MaxPool_5a_3x3")]
IRV2_MIXED_5B = [["Conv2d_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_5x5"],
                 ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"],
                 ["AvgPool_0a_3x3", "Conv2d_0b_1x1"]]
IRV2_MIXED_7A = [["Conv2d_0a_1x1", _valid("Conv2d_1a_3x3")],
                 ["Conv2d_0a_1x1", _valid("Conv2d_1a_3x3")],
                 ["Conv2d_0a_1x1", "Conv2d_0b_3x3", _valid("Conv2d_1a_3x3")],
                 [_valid("MaxPool_1a_3x3")]]
# block name: (repeat scope, count, scale, branches)
IRV2_REPEATS = {
    "block35": ("Repeat", 10, 0.17, [["Conv2d_1x1"], ["Conv2d_0a_1x1", "Conv2d_0b_3x3"],
                                      ["Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"]]),
    "block17": ("Repeat_1", 20, 0.10, [["Conv2d_1x1"],
                                        ["Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"]]),
    "block8": ("Repeat_2", 9, 0.20, [["Conv2d_1x1"],
                                      ["Conv2d_0a_1x1", "Conv2d_0b_1x3", "Conv2d_0c_3x1"]]),
}


def inception_v4(slim, record, inputs):
    slim.epsilon = EPSILON
    scope = record.scope
    net = _stem(slim, inputs, scope, V4_STEM)
    for name, table in V4_BLOCKS:
        net = slim.end_point(name, _branches(slim, net, f"{scope}/{name}", table))
    return _logits(slim, net, scope, "PreLogitsFlatten")


def inception_resnet_v2(slim, record, inputs):
    slim.epsilon = EPSILON
    scope = record.scope
    net = _stem(slim, inputs, scope, IRV2_STEM)
    net = slim.end_point("Mixed_5b", _branches(slim, net, f"{scope}/Mixed_5b", IRV2_MIXED_5B))
    net = _repeat(slim, net, scope, "block35")
    net = slim.end_point("Mixed_6a", _branches(slim, net, f"{scope}/Mixed_6a", _REDUCTION_A))
    net = slim.end_point("PreAuxLogits", _repeat(slim, net, scope, "block17"))
    net = slim.end_point("Mixed_7a", _branches(slim, net, f"{scope}/Mixed_7a", IRV2_MIXED_7A))
    net = _repeat(slim, net, scope, "block8")
    net = _residual(slim, net, f"{scope}/Block8", IRV2_REPEATS["block8"][3], 1.0, relu=False)
    net = slim.end_point("Conv2d_7b_1x1", slim.conv(net, f"{scope}/Conv2d_7b_1x1"))
    return _logits(slim, net, scope, "Flatten")


def _stem(slim, net, scope, table):
    for spec in table:
        net = _layer(slim, net, scope, spec)
        slim.end_point(spec if isinstance(spec, str) else spec[0], net)
    return net


def _layer(slim, net, scope, spec):
    """One table entry (see the module notes) under `scope`."""
    if isinstance(spec, list):
        return slim.concat([_layer(slim, net, scope, s) for s in spec])
    name, stride, padding = (spec, 1, "same") if isinstance(spec, str) else spec
    if name.startswith("MaxPool"):
        return slim.max_pool(net, 3, stride, padding=padding, scope=f"{scope}/{name}")
    if name.startswith("AvgPool"):
        return slim.avg_pool(net, 3, stride, padding=padding, scope=f"{scope}/{name}")
    return slim.conv(net, f"{scope}/{name}", stride=stride, padding=padding)


def _branches(slim, net, scope, table):
    outputs = []
    for i, branch in enumerate(table):
        out = net
        for spec in branch:
            out = _layer(slim, out, f"{scope}/Branch_{i}", spec)
        outputs.append(out)
    return slim.concat(outputs, f"{scope}/concat")


def _repeat(slim, net, scope, name):
    repeat, count, scale, table = IRV2_REPEATS[name]
    for i in range(1, count + 1):
        net = _residual(slim, net, f"{scope}/{repeat}/{name}_{i}", table, scale)
    return net


def _residual(slim, net, scope, table, scale, relu=True):
    up = slim.conv(_branches(slim, net, scope, table), f"{scope}/Conv2d_1x1", activation=None)
    net = slim.add([net, up if scale == 1.0 else slim.scale(up, scale, f"{scope}/scale")])
    return slim.activation(net, "relu" if relu else None, scope)


def _logits(slim, net, scope, flatten):
    """The Logits scope: global mean, (dropout,) flatten (scope `flatten`), fully connected;
    slim's "Logits" end point is the output, which the certificate compares as "logits"."""
    if slim.head:
        return slim.new_head(net)
    net = slim.end_point("global_pool", slim.global_pool(net, f"{scope}/Logits/global_pool"))
    net = slim.squeeze(net, f"{scope}/Logits/{flatten}")
    net = slim.end_point("PreLogitsFlatten", net)
    return slim.dense(net, f"{scope}/Logits/Logits", activation=None, classes=True)
