"""tf_slim's layers in Keras 3, named and shaped by the checkpoint.

A family's Keras builder (port/nets/) writes the net the way its tf_slim code does, scope by
scope; a `Slim` turns each slim layer into Keras layers. What a layer holds is read from the
checkpoint's shapes, not written in the builder: a conv's filters and kernel size come from
`scope/weights`, biases from whether `scope/biases` exists, batch norm (and its gamma and
beta) from `scope/BatchNorm/...`. So depth multipliers need no code, and a builder says only
what the shapes cannot: strides, padding, activations, how layers connect.

Keras layer names are the slim scopes with "/" written "-" (Keras forbids "/", and PyTorch
"." in the weight paths its backend registers); `variables` pairs every Keras weight with the
slim variable name it mirrors, and `end_points` the tensors the certificate compares with
slim's end points of the same names. Kernels keep TF's layout
(HWIO; depthwise [h, w, in, multiplier]; fully connected layers that slim writes as 1x1 convs
stay 1x1 convs), so checkpoint bytes are copied, never transposed. TF "SAME" padding (the
extra pixel after, with stride 2) is Keras' "same" on every backend; slim's explicit
`conv2d_same` padding is a ZeroPadding2D before a "valid" conv, as in slim.

A fine-tuning run's new head (`NewHead`, ckptkit's train/heads.py) replaces the family's
classifier: a builder hands `new_head` the features the head sits on, where it would build
its own classifier.
"""
from dataclasses import dataclass

import keras

from ..errors import PlanError

ACTIVATIONS = {"relu": "relu", "relu6": "relu6", None: None}


@dataclass(frozen=True)
class NewHead:
    """The head `ckptkit finetune` puts on a net's features (train/heads.py): global average
    pooling of spatial features, dropout at rate `dropout`, `hidden` ReLU layers
    `scope/hidden_i`, the linear layer `scope`."""

    scope: str
    hidden: int
    dropout: float


@dataclass
class PortedVariable:
    """Slim variable `name` of `shape` lives in Keras weight `weight`."""

    name: str
    shape: tuple
    weight: object
    trainable: bool = True


class Slim:
    """Builds Keras layers for a slim net from the checkpoint's shapes (see module notes).

    shapes: {slim variable name: shape} of the checkpoint's model tensors.
    classes: the class count of the classifier layers (`conv(..., classes=True)`); None keeps
      the checkpoint's.
    epsilon: batch norm's epsilon in the family's arg_scope (slim's default 0.001).
    head: a run's NewHead in place of the family's classifier, or None.
    """

    def __init__(self, shapes, *, classes=None, epsilon=0.001, head=None):
        self.shapes = shapes
        self.classes = classes
        self.epsilon = epsilon
        self.head = head
        self.variables = []
        self.end_points = {}

    # checkpoint facts
    def has(self, name):
        return name in self.shapes

    def shape(self, name):
        try:
            return tuple(self.shapes[name])
        except KeyError:
            raise PlanError(f"the checkpoint has no {name}, which this net needs") from None

    def channels(self, scope):
        """The output channels of the conv or fully connected layer `scope`."""
        return self.shape(f"{scope}/weights")[-1]

    # layers
    def conv(self, x, scope, *, stride=1, padding="same", rate=1, activation="relu",
             classes=False):
        """slim.conv2d (or slim.separable_conv2d with num_outputs=None, when the checkpoint
        holds `scope/depthwise_weights`), with its batch norm and activation."""
        depthwise = self.has(f"{scope}/depthwise_weights")
        kernel_name = f"{scope}/{'depthwise_weights' if depthwise else 'weights'}"
        kernel = self.shape(kernel_name)
        filters = kernel[-1]
        if classes and self.classes is not None:
            filters = self.classes
            kernel = kernel[:-1] + (filters,)
        bias = self.has(f"{scope}/biases")
        options = dict(strides=stride, padding=padding, dilation_rate=rate, use_bias=bias,
                       name=_keras_name(scope))
        if depthwise:
            layer = keras.layers.DepthwiseConv2D(kernel[:2], depth_multiplier=kernel[3],
                                                 **options)
        else:
            layer = keras.layers.Conv2D(filters, kernel[:2], **options)
        x = layer(x)
        self._track(kernel_name, kernel, layer.kernel)
        if bias:
            self._track(f"{scope}/biases", (filters,), layer.bias)
        x = self.batch_norm(x, f"{scope}/BatchNorm", activation=None)
        return self.activation(x, activation, scope)

    def conv_same(self, x, scope, *, stride, rate=1, activation="relu"):
        """tf_slim's resnet_utils.conv2d_same: stride 1 is a "same" conv; a larger stride pads
        (k_eff - 1) // 2 before and the rest after, then convolves "valid"."""
        if stride == 1:
            return self.conv(x, scope, rate=rate, activation=activation)
        k = self.shape(f"{scope}/weights")[0]
        total = k + (k - 1) * (rate - 1) - 1
        x = keras.layers.ZeroPadding2D(((total // 2, total - total // 2),) * 2,
                                       name=_keras_name(f"{scope}/pad"))(x)
        return self.conv(x, scope, stride=stride, padding="valid", rate=rate,
                         activation=activation)

    def dense(self, x, scope, *, activation="relu", classes=False):
        """slim.fully_connected on a flat input."""
        kernel = self.shape(f"{scope}/weights")
        units = self.classes if classes and self.classes is not None else kernel[-1]
        kernel = kernel[:-1] + (units,)
        bias = self.has(f"{scope}/biases")
        layer = keras.layers.Dense(units, use_bias=bias, name=_keras_name(scope))
        x = layer(x)
        self._track(f"{scope}/weights", kernel, layer.kernel)
        if bias:
            self._track(f"{scope}/biases", (units,), layer.bias)
        x = self.batch_norm(x, f"{scope}/BatchNorm", activation=None)
        return self.activation(x, activation, scope)

    def batch_norm(self, x, scope, *, activation="relu"):
        """slim.batch_norm in inference mode, when the checkpoint holds `scope/moving_mean`
        (else `x` unchanged): gamma and beta only where the checkpoint has them."""
        if not self.has(f"{scope}/moving_mean"):
            return x
        center, scale = self.has(f"{scope}/beta"), self.has(f"{scope}/gamma")
        layer = keras.layers.BatchNormalization(epsilon=self.epsilon, center=center,
                                                scale=scale, name=_keras_name(scope))
        x = layer(x)
        if scale:
            self._track(f"{scope}/gamma", None, layer.gamma)
        if center:
            self._track(f"{scope}/beta", None, layer.beta)
        self._track(f"{scope}/moving_mean", None, layer.moving_mean, trainable=False)
        self._track(f"{scope}/moving_variance", None, layer.moving_variance, trainable=False)
        return self.activation(x, activation, scope)

    def activation(self, x, kind, scope):
        if kind is None:
            return x
        return keras.layers.Activation(ACTIVATIONS[kind], name=_keras_name(f"{scope}/act"))(x)

    def max_pool(self, x, size, stride, *, padding="valid", scope=None):
        return keras.layers.MaxPooling2D(size, stride, padding=padding,
                                         name=_keras_name(scope))(x)

    def avg_pool(self, x, size, stride, *, padding="valid", scope=None):
        """TF's average pooling: "same" leaves the padding out of the mean. Strided "same"
        pooling (odd `size`) is the stride-1 pooling, whose padding is symmetric, at the
        centres of TF's windows: Keras' torch backend pads an asymmetric "same" pooling by
        replicating the edge, which its mean would count."""
        pool = keras.layers.AveragePooling2D(size, 1 if padding == "same" else stride,
                                             padding=padding, name=_keras_name(scope))(x)
        if padding != "same" or stride == 1:
            return pool
        crop = [(size - 1) // 2 - _padding_before(n, size, stride) for n in x.shape[1:3]]
        pool = keras.layers.Cropping2D(((crop[0], 0), (crop[1], 0)))(pool)
        return keras.layers.AveragePooling2D(1, stride)(pool)

    def global_pool(self, x, scope=None):
        """tf.reduce_mean over height and width, keeping them (slim's global pooling)."""
        return keras.layers.GlobalAveragePooling2D(
            keepdims=True, name=_keras_name(scope))(x)

    def squeeze(self, x, scope=None):
        """The [n, 1, 1, c] logits as [n, c] (slim's spatial_squeeze)."""
        return keras.layers.Flatten(name=_keras_name(scope))(x)

    def add(self, xs):
        return keras.layers.Add()(xs)

    def concat(self, xs, scope=None):
        """tf.concat on the channel axis."""
        return keras.layers.Concatenate(axis=-1,
                                        name=_keras_name(scope))(xs)

    def separable_conv(self, x, scope, *, stride=1, padding="same", activation="relu"):
        """slim.separable_conv2d with num_outputs: the depthwise convolution (strided), then
        the 1x1 `scope/pointwise_weights`, with its batch norm and activation."""
        depthwise = self.shape(f"{scope}/depthwise_weights")
        pointwise = self.shape(f"{scope}/pointwise_weights")
        bias = self.has(f"{scope}/biases")
        layer = keras.layers.SeparableConv2D(
            pointwise[-1], depthwise[:2], strides=stride, padding=padding,
            depth_multiplier=depthwise[3], use_bias=bias, name=_keras_name(scope))
        x = layer(x)
        self._track(f"{scope}/depthwise_weights", depthwise, layer.depthwise_kernel)
        self._track(f"{scope}/pointwise_weights", pointwise, layer.pointwise_kernel)
        if bias:
            self._track(f"{scope}/biases", (pointwise[-1],), layer.bias)
        x = self.batch_norm(x, f"{scope}/BatchNorm", activation=None)
        return self.activation(x, activation, scope)

    def scale(self, x, factor, scope=None):
        """`factor` * x (a residual branch's scale)."""
        return keras.layers.Rescaling(factor, name=_keras_name(scope))(x)

    def flatten(self, x, scope=None):
        """slim.flatten: [n, h, w, c] as [n, h * w * c], in NHWC order."""
        return keras.layers.Flatten(name=_keras_name(scope))(x)

    def lrn(self, x, scope, *, depth_radius, bias, alpha, beta):
        """tf.nn.lrn: x / (bias + alpha * sum of x^2 over the 2 * depth_radius + 1 channels
        around, zeros past the edges)^beta. Keras has no such layer: the sum is an average
        pooling over channels made a third spatial axis, times its window."""
        name, window = _keras_name(scope), 2 * depth_radius + 1
        squares = keras.layers.Multiply(name=f"{name}_square")([x, x])
        squares = keras.layers.Reshape((*x.shape[1:], 1), name=f"{name}_split")(squares)
        squares = keras.layers.ZeroPadding3D(((0, 0), (0, 0), (depth_radius,) * 2),
                                             name=f"{name}_pad")(squares)
        sums = keras.layers.AveragePooling3D((1, 1, window), strides=1,
                                             name=f"{name}_mean")(squares)
        sums = keras.layers.Reshape(x.shape[1:], name=f"{name}_merge")(sums)
        base = keras.layers.Rescaling(alpha * window, offset=bias, name=f"{name}_base")(sums)
        return keras.layers.Multiply(name=name)([x, keras.ops.power(base, -beta)])

    def new_head(self, features):
        """The logits of `self.head` on the backbone's `features` (slim's "PreLogits"): 1x1
        convs on pooled spatial features, fully connected layers on flat ones, as TF builds
        them; Keras' Dropout, so the head drops out when it trains in Keras too."""
        scope = self.head.scope
        net = self.end_point("PreLogits", features)
        spatial = len(net.shape) == 4
        if spatial:
            net = self.global_pool(net, f"{scope}/global_pool")
        if self.head.dropout:
            net = keras.layers.Dropout(self.head.dropout,
                                       name=_keras_name(f"{scope}/dropout"))(net)
        layer = self.conv if spatial else self.dense
        for i in range(1, self.head.hidden + 1):
            net = layer(net, f"{scope}/hidden_{i}")
        logits = layer(net, scope, activation=None)
        return self.squeeze(logits, f"{scope}/squeeze") if spatial else logits

    def layer_name(self, scope):
        """The Keras name of slim scope `scope`, for the layers a builder makes itself."""
        return _keras_name(scope)

    def end_point(self, name, x):
        self.end_points[name] = x
        return x

    def _track(self, name, shape, weight, trainable=True):
        shape = tuple(weight.shape) if shape is None else tuple(shape)
        self.variables.append(PortedVariable(name, shape, weight, trainable))


def _padding_before(size, kernel, stride):
    """TF's "SAME" padding before a side of `size` (the extra pixel goes after)."""
    return max(0, (-(-size // stride) - 1) * stride + kernel - size) // 2


def _keras_name(scope):
    """A Keras layer name for slim scope `scope` (None: Keras names it)."""
    return scope.replace("/", "-") if scope else None
