"""NASNet-A Mobile and PNASNet-5 Mobile, the cell-based nets of tensorflow/models research/slim
(nets/nasnet) that tf_slim 1.1 does not ship, built from tables of their cells with the
variable names and shapes of the published checkpoints nasnet-a_mobile_04_10_2017 and
pnasnet-5_mobile_2017_12_13.

How the nets are built
- A cell reads the last two cell outputs, `net` and `prev`. It brings `prev` to its own width
  and size, takes a 1x1 convolution of `net`, then runs five blocks (`comb_iter_i`), each the
  sum of two operations on states so far (0: the 1x1 output, 1: `prev`, 2+: earlier blocks).
  Its output concatenates the states listed in `Cell.output`. A strided cell strides only the
  operations on states 0 and 1.
- Both nets: `conv0` (3x3, stride 2, VALID), two stride-2 stem cells at 1/4 and 1/2 of the
  width, then the cells; the width doubles at each reduction, after a third and two thirds of
  the cells. NASNet inserts a reduction cell there; PNASNet runs its one cell with stride 2.
- The checkpoints have no enclosing scope (`conv0/weights`, `cell_stem_0/...`, `cell_0/...`,
  `aux_7/...`, `final_layer/FC/...`): `scope` is empty unless a caller wants one.
- Batch norm: the checkpoints name it beside its convolution (`1x1` and `beginning_bn`), so it
  cannot run inside the convolution as its normalizer_fn. The arg_scope still names
  slim.batch_norm as the convolutions' normalizer and every batch norm here calls what it
  finds there (`_batch_norm`), so ckptkit's frozen batch norm reaches each one by scope.
- The auxiliary head (`aux_7`, `aux_5`) is built whenever num_classes is set, as the
  checkpoints hold it (research/slim builds it only for training; one variable list for both
  modes keeps restore plans identical). Its second convolution spans its whole input, so the
  kernel (4x4 at 224 pixels) follows the image size.
- No drop-path: both mobile configurations train with drop_path_keep_prob 1.0.
"""
import contextlib
from dataclasses import dataclass

from ...tfcompat import slim, tf


@dataclass(frozen=True)
class Cell:
    """A cell as data: block i runs ops[2i] on state inputs[2i] and ops[2i+1] on state
    inputs[2i+1]; ops are "sepK" (two stacked KxK separable convolutions), "max"/"avg"
    (3x3 pooling) and "none" (identity, or a 1x1 convolution where the width or size must
    change)."""

    ops: tuple
    inputs: tuple
    output: tuple       # the states concatenated into the cell's output


NASNET_NORMAL = Cell(("sep5", "sep3", "sep5", "sep3", "avg", "none", "avg", "avg", "sep3", "none"),
                     (0, 1, 1, 1, 0, 1, 1, 1, 0, 0), (1, 2, 3, 4, 5, 6))
NASNET_REDUCTION = Cell(
    ("sep5", "sep7", "max", "sep7", "avg", "sep5", "none", "avg", "sep3", "max"),
    (0, 1, 0, 1, 0, 1, 3, 2, 2, 0), (3, 4, 5, 6))
PNASNET = Cell(("sep5", "max", "sep7", "max", "sep5", "sep3", "sep3", "max", "sep3", "none"),
               (1, 1, 0, 0, 0, 0, 4, 0, 1, 0), (2, 3, 4, 5, 6))


@dataclass(frozen=True)
class Config:
    """A net of cells: `cells` normal cells of `cell`, `filters` wide before the first
    reduction; `reduction` is the cell inserted at each reduction (None: `cell` strided)."""

    filters: int
    cells: int
    cell: Cell
    reduction: Cell = None

    @property
    def reductions(self):
        return (self.cells // 3, self.cells * 2 // 3)

    @property
    def aux(self):
        """The cell whose output the auxiliary head reads: the last before the 2nd reduction."""
        return self.reductions[1] - 1


NASNET_MOBILE = Config(44, 12, NASNET_NORMAL, NASNET_REDUCTION)
PNASNET_MOBILE = Config(54, 9, PNASNET)


def nasnet_mobile(images, num_classes=1001, is_training=True, scope=""):
    """NASNet-A Mobile (4 @ 1056) on 224x224 images: (logits, end_points), or with
    num_classes=None the ReLU'd last cell [batch, 7, 7, 1056] that final_layer pools."""
    return _build(NASNET_MOBILE, images, num_classes, is_training, scope)


def pnasnet_mobile(images, num_classes=1001, is_training=True, scope=""):
    """PNASNet-5 Mobile on 224x224 images: (logits, end_points), or with num_classes=None
    the ReLU'd last cell [batch, 7, 7, 1080] that final_layer pools."""
    return _build(PNASNET_MOBILE, images, num_classes, is_training, scope)


nasnet_mobile.default_image_size = pnasnet_mobile.default_image_size = 224


def nasnet_mobile_arg_scope(weight_decay=4e-5, batch_norm_decay=0.9997, batch_norm_epsilon=1e-3):
    """research/slim's mobile arg scope: L2 decay and fan-out variance scaling for every
    layer, batch norm with scale. Batch norm is the convolutions' normalizer (module notes);
    the nets' own layers turn off activation and bias themselves, so a new head on their
    features keeps its biases."""
    with slim.arg_scope([slim.conv2d, slim.separable_conv2d, slim.fully_connected],
                        weights_regularizer=slim.l2_regularizer(weight_decay),
                        weights_initializer=slim.variance_scaling_initializer(mode="FAN_OUT")), \
            slim.arg_scope([slim.conv2d, slim.separable_conv2d], normalizer_fn=slim.batch_norm), \
            slim.arg_scope([slim.batch_norm], decay=batch_norm_decay, epsilon=batch_norm_epsilon,
                           scale=True, fused=True) as sc:
        return sc


pnasnet_mobile_arg_scope = nasnet_mobile_arg_scope      # research/slim: the same defaults


def _build(config, images, num_classes, is_training, scope):
    end_points = {}
    outer = tf.variable_scope(scope, values=[images]) if scope else contextlib.nullcontext()
    with outer, slim.arg_scope([slim.batch_norm, slim.dropout], is_training=is_training):
        net = _batch_norm(_conv(images, 32, 3, "conv0", stride=2, padding="VALID"), "conv0_bn")
        outputs = [None, net]
        for name, cell, width, stride, end_point in _layout(config):
            net = _cell(outputs[-1], outputs[-2], cell, width, stride, name)
            outputs.append(net)
            if end_point:
                end_points[end_point] = net
            if num_classes and name == f"cell_{config.aux}":
                end_points["AuxLogits"] = _aux_head(tf.nn.relu(net), num_classes,
                                                    f"aux_{config.aux}")
        with tf.variable_scope("final_layer"):
            net = tf.nn.relu(net)
            if not num_classes:
                return net, end_points
            net = end_points["global_pool"] = tf.reduce_mean(net, [1, 2])
            net = slim.dropout(net, 0.5, is_training=is_training, scope="dropout")
            logits = end_points["Logits"] = slim.fully_connected(
                net, num_classes, activation_fn=None, scope="FC")
            end_points["Predictions"] = tf.nn.softmax(logits, name="predictions")
    return logits, end_points


def _layout(config):
    """(scope, cell, width, stride, end point) of every cell after conv0, in order."""
    stem = config.reduction or config.cell
    yield "cell_stem_0", stem, config.filters // 4, 2, None
    yield "cell_stem_1", stem, config.filters // 2, 2, "Stem"
    width = config.filters
    for n in range(config.cells):
        stride = 1
        if n in config.reductions:
            width *= 2
            if config.reduction:
                i = config.reductions.index(n)
                yield f"reduction_cell_{i}", config.reduction, width, 2, f"Reduction_Cell_{i}"
            else:
                stride = 2
        yield f"cell_{n}", config.cell, width, stride, f"Cell_{n}"


def _cell(net, prev, cell, width, stride, scope):
    with tf.variable_scope(scope):
        prev = _fit(prev, net, width)
        states = [_conv_bn(tf.nn.relu(net), width, 1, "1x1", "beginning_bn"), prev]
        for i in range(5):
            with tf.variable_scope(f"comb_iter_{i}"):
                pair = []
                for side, op, source in zip(("left", "right"), cell.ops[2 * i:2 * i + 2],
                                            cell.inputs[2 * i:2 * i + 2]):
                    with tf.variable_scope(side):
                        pair.append(_operation(states[source], op, width,
                                               stride if source < 2 else 1))
                states.append(tf.add(*pair, name="combine"))
        return tf.concat([states[i] for i in cell.output], 3, name="cell_output")


def _fit(prev, net, width):
    """`prev` at the size and width of the cell's input `net` (itself in the first stem cell)."""
    if prev is None:
        return net
    if prev.shape.as_list()[2] != net.shape.as_list()[2]:
        return _factorized_reduction(tf.nn.relu(prev), width)
    if prev.shape.as_list()[3] != width:
        return _conv_bn(tf.nn.relu(prev), width, 1, "prev_1x1", "prev_bn")
    return prev


def _operation(net, op, width, stride):
    if op.startswith("sep"):
        k = int(op[3:])
        for i in (1, 2):
            net = _conv_bn(tf.nn.relu(net), width, k, f"separable_{k}x{k}_{i}",
                           f"bn_sep_{k}x{k}_{i}", stride=stride if i == 1 else 1, separable=True)
        return net
    same = net.shape.as_list()[3] == width
    if op == "none":
        if same and stride == 1:
            return net
        return _conv_bn(tf.nn.relu(net), width, 1, "1x1", "bn_1", stride=stride)
    pool = slim.max_pool2d if op == "max" else slim.avg_pool2d
    net = pool(net, 3, stride=stride, padding="SAME")
    return net if same else _conv_bn(net, width, 1, "1x1", "bn_1")


def _factorized_reduction(net, width):
    """Half the size without dropping pixels: 1x1 convolutions of the even and of the odd
    pixel grid, concatenated (the odd grid takes the extra channel of an odd width)."""
    even = slim.avg_pool2d(net, 1, stride=2, padding="VALID")
    shifted = tf.pad(net, [[0, 0], [0, 1], [0, 1], [0, 0]])[:, 1:, 1:, :]
    odd = slim.avg_pool2d(shifted, 1, stride=2, padding="VALID")
    net = tf.concat([_conv(even, width // 2, 1, "path1_conv"),
                     _conv(odd, width - width // 2, 1, "path2_conv")], 3)
    return _batch_norm(net, "final_path_bn")


def _aux_head(net, num_classes, scope):
    with tf.variable_scope(scope), tf.variable_scope("aux_logits"):
        net = slim.avg_pool2d(net, 5, stride=3, padding="VALID")
        net = tf.nn.relu(_conv_bn(net, 128, 1, "proj", "aux_bn0"))
        net = tf.nn.relu(_conv_bn(net, 768, net.shape.as_list()[1:3], "Conv", "aux_bn1",
                                  padding="VALID"))
        return slim.fully_connected(slim.flatten(net), num_classes, activation_fn=None,
                                    scope="FC")


def _conv(net, depth, kernel, scope, stride=1, padding="SAME", separable=False):
    """A convolution without bias, activation or normalizer (its batch norm is a sibling)."""
    kwargs = dict(stride=stride, padding=padding, activation_fn=None, normalizer_fn=None,
                  biases_initializer=None, scope=scope)
    if separable:
        return slim.separable_conv2d(net, depth, kernel, depth_multiplier=1, **kwargs)
    return slim.conv2d(net, depth, kernel, **kwargs)


def _conv_bn(net, depth, kernel, scope, bn_scope, **kwargs):
    return _batch_norm(_conv(net, depth, kernel, scope, **kwargs), bn_scope)


def _batch_norm(net, scope):
    """Batch norm `scope`: the normalizer the arg_scope gives convolutions (slim.batch_norm,
    or what ckptkit put in its place), slim.batch_norm without one."""
    given = slim.current_arg_scope().get(slim.arg_scope_func_key(slim.conv2d), {})
    return (given.get("normalizer_fn") or slim.batch_norm)(net, scope=scope)
