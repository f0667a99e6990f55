"""MobileNet v1, v2 and v3 (ckptkit/train/architectures/mobilenet_v1/2/3.py) in Keras 3.

Facts the shapes cannot give: every conv and depthwise conv is "same" padded; batch norm
epsilon 1e-3 (both arg scopes). v1: `Conv2d_0` strides 2, then the depthwise/pointwise pairs,
their strides in V1_STRIDES, ReLU6 after every conv; `AvgPool_1a` is min(map, 7) wide.
v2/v3: `Conv` strides 2, then inverted residual blocks (strides in STRIDES): `expand` (1x1,
where the checkpoint has one), `depthwise`, `squeeze_excite` (where the checkpoint has one),
a linear `project`, plus the block's input when the stride is 1 and the depths agree; then the
1x1 `Conv_1`. v2 uses ReLU6. v3 uses hard swish in `Conv`, `Conv_1` and `Conv_2`, in its
blocks ReLU up to RELU_BLOCKS then hard swish; its squeeze-excite gate is a global mean, `Conv`
(ReLU), `Conv_1` and relu6(x + 3) * 0.16667 (slim's constant, not 1/6); `Conv_1` is followed by
a global pool (its own end point) and `Conv_2` (biases, no batch norm). The slim end points
are `layer_<i>` in layer order.
"""
import keras

EPSILON = 1e-3
V1_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
STRIDES = {"v2": (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1),
           "large": (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1),
           "small": (2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1)}
RELU_BLOCKS = {"large": 6, "small": 3}
SE_GATE = 0.16667


def mobilenet_v1(slim, record, inputs):
    slim.epsilon = EPSILON
    scope = record.scope
    net = slim.conv(inputs, f"{scope}/Conv2d_0", stride=2, activation="relu6")
    slim.end_point("Conv2d_0", net)
    for i, stride in enumerate(V1_STRIDES, 1):
        for kind, layer_stride in (("depthwise", stride), ("pointwise", 1)):
            net = slim.conv(net, f"{scope}/Conv2d_{i}_{kind}", stride=layer_stride,
                            activation="relu6")
            slim.end_point(f"Conv2d_{i}_{kind}", net)
    size = [min(n, 7) for n in net.shape[1:3]]
    net = slim.avg_pool(net, size, 1, scope=f"{scope}/Logits/AvgPool_1a")
    slim.end_point("AvgPool_1a", net)
    return _logits(slim, net, scope)


def mobilenet_v2(slim, record, inputs):
    return _mobilenet(slim, record, inputs, "v2")


def mobilenet_v3(slim, record, inputs):
    return _mobilenet(slim, record, inputs, record.name.rpartition("_")[2])


def _mobilenet(slim, record, inputs, kind):
    """v2 (kind "v2") or v3 ("large", "small"): the layers `layer_<i>`, then the classifier."""
    slim.epsilon = EPSILON
    scope = record.scope
    v3 = kind != "v2"
    top = "hard_swish" if v3 else "relu6"
    layers = [_conv(slim, inputs, f"{scope}/Conv", top, stride=2)]
    for i, stride in enumerate(STRIDES[kind]):
        activation = ("relu" if i < RELU_BLOCKS[kind] else "hard_swish") if v3 else "relu6"
        name = f"{scope}/expanded_conv{f'_{i}' if i else ''}"
        layers.append(_block(slim, layers[-1], name, stride, activation))
    layers.append(_conv(slim, layers[-1], f"{scope}/Conv_1", top))
    if v3:
        layers.append(slim.global_pool(layers[-1], f"{scope}/AvgPool"))
        layers.append(_conv(slim, layers[-1], f"{scope}/Conv_2", top))
    for i, net in enumerate(layers, 1):
        slim.end_point(f"layer_{i}", net)
    net = slim.end_point("global_pool", slim.global_pool(net, f"{scope}/Logits/global_pool"))
    return _logits(slim, net, scope)


def _block(slim, net, scope, stride, activation):
    """The inverted residual block `expanded_conv` (module notes)."""
    out = net
    if slim.has(f"{scope}/expand/weights"):
        out = _conv(slim, out, f"{scope}/expand", activation)
    out = _conv(slim, out, f"{scope}/depthwise", activation, stride=stride)
    if slim.has(f"{scope}/squeeze_excite/Conv/weights"):
        out = _squeeze_excite(slim, out, f"{scope}/squeeze_excite")
    out = slim.conv(out, f"{scope}/project", activation=None)
    if stride == 1 and out.shape[-1] == net.shape[-1]:
        return slim.add([out, net])
    return out


def _squeeze_excite(slim, net, scope):
    gate = slim.global_pool(net, f"{scope}/mean")
    gate = slim.conv(gate, f"{scope}/Conv", activation="relu")
    gate = slim.conv(gate, f"{scope}/Conv_1", activation=None)
    gate = keras.layers.Rescaling(1.0, 3.0, name=slim.layer_name(f"{scope}/plus3"))(gate)
    gate = keras.layers.ReLU(6.0, name=slim.layer_name(f"{scope}/relu6"))(gate)
    gate = keras.layers.Rescaling(SE_GATE, name=slim.layer_name(f"{scope}/gate"))(gate)
    return keras.layers.Multiply(name=slim.layer_name(f"{scope}/mul"))([net, gate])


def _conv(slim, net, scope, activation, stride=1):
    """slim.conv with hard swish (x * relu6(x + 3) / 6, Keras' hard_silu) among the
    activations."""
    if activation != "hard_swish":
        return slim.conv(net, scope, stride=stride, activation=activation)
    net = slim.conv(net, scope, stride=stride, activation=None)
    return keras.layers.Activation("hard_silu", name=slim.layer_name(f"{scope}/act"))(net)


def _logits(slim, net, scope):
    """The classifier `Logits/Conv2d_1c_1x1` (dropout is the identity here), squeezed; not an
    end point: the certificate compares the logits itself, and not those of a new head."""
    if slim.head:
        return slim.new_head(net)
    logits = slim.conv(net, f"{scope}/Logits/Conv2d_1c_1x1", activation=None, classes=True)
    return slim.squeeze(logits, f"{scope}/Logits/squeeze")
