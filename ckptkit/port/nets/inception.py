"""Inception v1, v2 and v3 (tf_slim.nets.inception_v1 / v2 / v3) in Keras 3.

Facts the shapes cannot give, in the tables below: each net is a sequence of layers (with
stride and padding) and Mixed blocks; a Mixed block is its branches, concatenated in order
Branch_0, Branch_1, ...; a tuple inside a branch is a split whose outputs are concatenated
(v3's Mixed_7b/7c). Inside Mixed blocks slim's names give the stride: `*_1a_*` layers have
stride 2 and the net's reduction padding (v2 "same", v3 "valid"), the others stride 1 and
"same". Pool sizes are in their names (MaxPool_5a_2x2); max and average pooling are TF's, so
"same" average pooling averages only the pixels inside the image. The stems: v1 and v2 all
"same", v3 "valid" but for Conv2d_2b_3x3. v2's Conv2d_1a_7x7 is a separable conv (its
depth multiplier is in the checkpoint's shape; without `pointwise_weights` it is a plain
conv, as with use_separable_conv=False) whose arg_scope gives it ReLU and biases, no batch
norm. Convs are ReLU after batch norm, epsilon 1e-3. The classifier: average pooling
"valid" of min(7 or 8, feature size) pixels (v1's is named MaxPool_0a_7x7), dropout
(identity here), a 1x1 conv with biases. AuxLogits (v3) is training-only, not built.
"""
S, V = "same", "valid"
EPSILON = 0.001

_V1 = (("Conv2d_0a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_3x3"),
       ("Conv2d_0a_1x1", "Conv2d_0b_3x3"), ("MaxPool_0a_3x3", "Conv2d_0b_1x1"))
V1 = (("Conv2d_1a_7x7", 2, S), ("MaxPool_2a_3x3", 2, S), ("Conv2d_2b_1x1", 1, S),
      ("Conv2d_2c_3x3", 1, S), ("MaxPool_3a_3x3", 2, S), ("Mixed_3b", _V1), ("Mixed_3c", _V1),
      ("MaxPool_4a_3x3", 2, S), *((f"Mixed_4{b}", _V1) for b in "bcdef"),
      ("MaxPool_5a_2x2", 2, S),
      ("Mixed_5b", _V1[:2] + (("Conv2d_0a_1x1", "Conv2d_0a_3x3"),) + _V1[3:]),
      ("Mixed_5c", _V1))

_V2 = (("Conv2d_0a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_3x3"),
       ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"), ("AvgPool_0a_3x3", "Conv2d_0b_1x1"))
_V2_REDUCE = (("Conv2d_0a_1x1", "Conv2d_1a_3x3"),
              ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_3x3"), ("MaxPool_1a_3x3",))
V2 = (*V1[:5], ("Mixed_3b", _V2), ("Mixed_3c", _V2), ("Mixed_4a", _V2_REDUCE),
      *((f"Mixed_4{b}", _V2) for b in "bcde"), ("Mixed_5a", _V2_REDUCE), ("Mixed_5b", _V2),
      ("Mixed_5c", _V2[:3] + (("MaxPool_0a_3x3", "Conv2d_0b_1x1"),)))

_V3_5 = (("Conv2d_0a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_5x5"),
         ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"), ("AvgPool_0a_3x3", "Conv2d_0b_1x1"))
_V3_6 = (("Conv2d_0a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1"),
         ("Conv2d_0a_1x1", "Conv2d_0b_7x1", "Conv2d_0c_1x7", "Conv2d_0d_7x1", "Conv2d_0e_1x7"),
         ("AvgPool_0a_3x3", "Conv2d_0b_1x1"))


def _v3_7(branch_1_split):
    return (("Conv2d_0a_1x1",), ("Conv2d_0a_1x1", ("Conv2d_0b_1x3", branch_1_split)),
            ("Conv2d_0a_1x1", "Conv2d_0b_3x3", ("Conv2d_0c_1x3", "Conv2d_0d_3x1")),
            ("AvgPool_0a_3x3", "Conv2d_0b_1x1"))


V3 = (("Conv2d_1a_3x3", 2, V), ("Conv2d_2a_3x3", 1, V), ("Conv2d_2b_3x3", 1, S),
      ("MaxPool_3a_3x3", 2, V), ("Conv2d_3b_1x1", 1, V), ("Conv2d_4a_3x3", 1, V),
      ("MaxPool_5a_3x3", 2, V), ("Mixed_5b", _V3_5),
      ("Mixed_5c", _V3_5[:1] + (("Conv2d_0b_1x1", "Conv_1_0c_5x5"),) + _V3_5[2:]),
      ("Mixed_5d", _V3_5),
      ("Mixed_6a", (("Conv2d_1a_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_1a_1x1"),
                    ("MaxPool_1a_3x3",))),
      *((f"Mixed_6{b}", _V3_6) for b in "bcde"),
      ("Mixed_7a", (("Conv2d_0a_1x1", "Conv2d_1a_3x3"),
                    ("Conv2d_0a_1x1", "Conv2d_0b_1x7", "Conv2d_0c_7x1", "Conv2d_1a_3x3"),
                    ("MaxPool_1a_3x3",))),
      ("Mixed_7b", _v3_7("Conv2d_0b_3x1")), ("Mixed_7c", _v3_7("Conv2d_0c_3x1")))


def inception_v1(slim, record, inputs):
    return _inception(slim, record, inputs, V1, reduce=S, pool=("MaxPool_0a_7x7", 7),
                      classifier="Conv2d_0c_1x1")


def inception_v2(slim, record, inputs):
    return _inception(slim, record, inputs, V2, reduce=S, pool=("AvgPool_1a_7x7", 7),
                      classifier="Conv2d_1c_1x1")


def inception_v3(slim, record, inputs):
    return _inception(slim, record, inputs, V3, reduce=V, pool=("AvgPool_1a_8x8", 8),
                      classifier="Conv2d_1c_1x1", prelogits=True)


def _inception(slim, record, inputs, layers, *, reduce, pool, classifier, prelogits=False):
    """`layers`, then the classifier: `pool` (scope, size) and the conv `classifier`; v3
    names the pooled features PreLogits."""
    slim.epsilon = EPSILON
    net = inputs
    for name, *spec in layers:
        scope = f"{record.scope}/{name}"
        if name.startswith("Mixed"):
            net = _mixed(slim, net, scope, spec[0], reduce)
        else:
            net = _layer(slim, net, scope, *spec)
        slim.end_point(name, net)
    if slim.head:
        return slim.new_head(net)
    net = slim.avg_pool(net, min(pool[1], net.shape[1]), 1,
                        scope=f"{record.scope}/Logits/{pool[0]}")
    if prelogits:
        slim.end_point("PreLogits", net)
    logits = slim.conv(net, f"{record.scope}/Logits/{classifier}", activation=None,
                       classes=True)
    return slim.squeeze(logits, f"{record.scope}/Logits/SpatialSqueeze")


def _mixed(slim, net, scope, branches, reduce):
    outputs = []
    for i, branch in enumerate(branches):
        x, branch_scope = net, f"{scope}/Branch_{i}"
        for item in branch:
            if isinstance(item, tuple):
                x = slim.concat([_branch_layer(slim, x, f"{branch_scope}/{name}", reduce)
                                 for name in item], f"{branch_scope}/concat")
            else:
                x = _branch_layer(slim, x, f"{branch_scope}/{item}", reduce)
        outputs.append(x)
    return slim.concat(outputs, scope)


def _branch_layer(slim, x, scope, reduce):
    """A layer in a Mixed block: `*_1a_*` ones reduce (see the module notes)."""
    if "_1a_" in scope.rpartition("/")[2]:
        return _layer(slim, x, scope, 2, reduce)
    return _layer(slim, x, scope, 1, S)


def _layer(slim, x, scope, stride, padding):
    """A pool (its size from its name), a separable conv or a conv, by `scope`."""
    name = scope.rpartition("/")[2]
    if name.startswith(("MaxPool", "AvgPool")):
        pool = slim.max_pool if name.startswith("Max") else slim.avg_pool
        return pool(x, int(name[-1]), stride, padding=padding, scope=scope)
    if slim.has(f"{scope}/pointwise_weights"):
        return slim.separable_conv(x, scope, stride=stride, padding=padding)
    return slim.conv(x, scope, stride=stride, padding=padding)
