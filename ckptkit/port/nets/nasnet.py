"""NASNet-A Mobile and PNASNet-5 Mobile (ckptkit's train/architectures/nasnet.py) in Keras 3.

Facts the shapes cannot give: the cell tables below (that module's, restated here because it
imports TensorFlow); conv0 is 3x3 stride 2 "valid", every other conv and pooling "same"; each
conv's batch norm is a sibling scope (`1x1` with `beginning_bn`, `separable_5x5_1` with
`bn_sep_5x5_1`...), epsilon 1e-3, and the ReLU comes before the conv, except after a pooling
and in conv0; a separable op is two separable convs, only the first strided. Which 1x1 convs
exist (to fit a width or stride) and whether `prev` is factorised-reduced (`path1_conv`) or
projected (`prev_1x1`) is read from the checkpoint, like the cell count; the reductions come
after a third and two thirds of the cells: NASNet inserts its reduction cell there, PNASNet
strides its one cell. A strided cell strides only the ops reading states 0 and 1. No scope
encloses the nets; dropout and the absent drop-path are identities at inference; the auxiliary
head (training only) is not built.
"""
import itertools

import keras

EPSILON = 1e-3

# A cell: block i (comb_iter_i) adds ops[2i] (left) on state inputs[2i] and ops[2i+1] (right)
# on state inputs[2i+1]; states: 0 the cell's 1x1 of `net`, 1 the fitted `prev`, 2+ the blocks.
# The output concatenates the states of the third tuple.
NASNET_NORMAL = (("sep5", "sep3", "sep5", "sep3", "avg", "none", "avg", "avg", "sep3", "none"),
                 (0, 1, 1, 1, 0, 1, 1, 1, 0, 0), (1, 2, 3, 4, 5, 6))
NASNET_REDUCTION = (("sep5", "sep7", "max", "sep7", "avg", "sep5", "none", "avg", "sep3", "max"),
                    (0, 1, 0, 1, 0, 1, 3, 2, 2, 0), (3, 4, 5, 6))
PNASNET = (("sep5", "max", "sep7", "max", "sep5", "sep3", "sep3", "max", "sep3", "none"),
           (1, 1, 0, 0, 0, 0, 4, 0, 1, 0), (2, 3, 4, 5, 6))


def nasnet(slim, record, inputs):
    return _net(slim, inputs, NASNET_NORMAL, NASNET_REDUCTION)


def pnasnet(slim, record, inputs):
    return _net(slim, inputs, PNASNET, None)


def _net(slim, inputs, cell, reduction):
    slim.epsilon = EPSILON
    net = _conv_bn(slim, inputs, "conv0", "conv0_bn", stride=2, padding="valid", relu=False)
    outputs = [None, net]
    for scope, kind, stride, end_point in _layout(slim, cell, reduction):
        net = _cell(slim, outputs[-1], outputs[-2], kind, stride, scope)
        outputs.append(net)
        if end_point:
            slim.end_point(end_point, net)
    net = slim.activation(net, "relu", "final_layer")
    if slim.head:
        return slim.new_head(net)
    net = slim.squeeze(slim.global_pool(net, "final_layer/global_pool"), "final_layer/flatten")
    slim.end_point("global_pool", net)
    return slim.dense(net, "final_layer/FC", activation=None, classes=True)


def _layout(slim, cell, reduction):
    """(scope, cell, stride, end point) of every cell after conv0, in order."""
    stem = reduction or cell
    yield "cell_stem_0", stem, 2, None
    yield "cell_stem_1", stem, 2, "Stem"
    cells = next(n for n in itertools.count() if not slim.has(f"cell_{n}/1x1/weights"))
    reductions = (cells // 3, cells * 2 // 3)
    for n in range(cells):
        stride = 1
        if n in reductions:
            if reduction:
                i = reductions.index(n)
                yield f"reduction_cell_{i}", reduction, 2, f"Reduction_Cell_{i}"
            else:
                stride = 2
        yield f"cell_{n}", cell, stride, f"Cell_{n}"


def _cell(slim, net, prev, cell, stride, scope):
    ops, inputs, output = cell
    states = [_conv_bn(slim, net, f"{scope}/1x1", f"{scope}/beginning_bn"),
              _fit(slim, prev, net, scope)]
    for i in range(5):
        pair = [_operation(slim, states[inputs[j]], ops[j], stride if inputs[j] < 2 else 1,
                           f"{scope}/comb_iter_{i}/{side}")
                for j, side in zip((2 * i, 2 * i + 1), ("left", "right"))]
        states.append(slim.add(pair))
    return slim.concat([states[i] for i in output], f"{scope}/cell_output")


def _fit(slim, prev, net, scope):
    """`prev` at the size and width of the cell (`net` itself in the first stem cell)."""
    if prev is None:
        return net
    if slim.has(f"{scope}/path1_conv/weights"):
        return _factorized_reduction(slim, slim.activation(prev, "relu", f"{scope}/prev"),
                                     scope)
    if slim.has(f"{scope}/prev_1x1/weights"):
        return _conv_bn(slim, prev, f"{scope}/prev_1x1", f"{scope}/prev_bn")
    return prev


def _factorized_reduction(slim, x, scope):
    """Half the size, keeping every pixel: 1x1 convs of the even pixel grid and of the odd one
    (shifted by one, zero-padded at the end), concatenated, then batch norm."""
    even = slim.avg_pool(x, 1, 2, scope=f"{scope}/path1_pool")
    odd = keras.layers.Cropping2D(((1, 0), (1, 0)))(x)
    odd = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(odd)
    odd = slim.avg_pool(odd, 1, 2, scope=f"{scope}/path2_pool")
    x = slim.concat([slim.conv(even, f"{scope}/path1_conv", activation=None),
                     slim.conv(odd, f"{scope}/path2_conv", activation=None)])
    return slim.batch_norm(x, f"{scope}/final_path_bn", activation=None)


def _operation(slim, x, op, stride, scope):
    """One op of a block; `scope/1x1`, where the checkpoint has it (a width or size to fit),
    is the "none" op's conv (after a ReLU) or follows the pooling."""
    if op.startswith("sep"):
        k = op[3:]
        for i in (1, 2):
            x = _conv_bn(slim, x, f"{scope}/separable_{k}x{k}_{i}", f"{scope}/bn_sep_{k}x{k}_{i}",
                         stride=stride if i == 1 else 1)
        return x
    if op == "max":
        x, stride = slim.max_pool(x, 3, stride, padding="same", scope=f"{scope}/max_pool"), 1
    elif op == "avg":
        x, stride = slim.avg_pool(x, 3, stride, padding="same", scope=f"{scope}/avg_pool"), 1
    if not slim.has(f"{scope}/1x1/weights"):
        return x
    return _conv_bn(slim, x, f"{scope}/1x1", f"{scope}/bn_1", stride=stride, relu=op == "none")


def _conv_bn(slim, x, scope, bn, *, stride=1, padding="same", relu=True):
    """ReLU (when `relu`), the conv or separable conv `scope`, then its batch norm `bn`."""
    if relu:
        x = slim.activation(x, "relu", scope)
    layer = slim.separable_conv if slim.has(f"{scope}/pointwise_weights") else slim.conv
    x = layer(x, scope, stride=stride, padding=padding, activation=None)
    return slim.batch_norm(x, bn, activation=None)
