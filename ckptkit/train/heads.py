"""The graph side of the nets factory: backbones without their classifier, new heads, and
batch normalization frozen by scope. Call it through nets.build, which checks the arguments.

How a net is built
- Under the net's own arg_scope, with the conv/fc layers' batch-norm normalizer replaced by
  `_BatchNorm.layer`, which passes is_training explicitly: False for a layer whose scope a
  frozen pattern matches, else the build's is_training.
- ResNet v2 also calls batch_norm directly: `preact` in every unit (its units run through
  `_BatchNorm.unit`, which sets the mode for that call by arg_scope) and `postnorm` (the
  mode the net function itself is given).
- After building, every batch-norm layer under a frozen pattern must have been decided by
  _BatchNorm, so a net that creates one some other way fails loudly instead of silently
  updating frozen statistics.

Backbones ("new" head)
- resnet_v1/v2 and the small nets: num_classes=None (global pool / features).
- inception_v1/2/3: tf_slim's inception_vN_base under the same scope (no Logits, no AuxLogits).
- vgg/alexnet: tf_slim builds fc8 unconditionally, so the layers up to fc7 are rebuilt here
  with the same names, shapes and initialisers (tests compare with tf_slim's variable list).
"""
from ..errors import CkptError
from ..scopes import closest_scopes
from ..tfcompat import slim, tf
from ..zoo.nets import load_ref

# units per block of the ResNet v2 depths (tf_slim's resnet_v2_50/101/152)
_RESNET_V2_UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_VGG_REPEATS = {"vgg_16": (2, 2, 3, 3, 3), "vgg_19": (2, 2, 4, 4, 4)}
_NORMALIZED_LAYERS = (slim.conv2d, slim.separable_conv2d, slim.fully_connected,
                      slim.conv2d_transpose)


def resolve(ref):
    """"module:function" or "file.py:function" -> the function (imported after tfcompat, so
    tf_slim imports work)."""
    return load_ref(ref)


class _BatchNorm:
    """Decides, per batch-norm layer scope, whether it trains; remembers what it froze."""

    def __init__(self, is_training, patterns):
        self.is_training = is_training
        self.patterns = patterns
        self.frozen = set()         # scopes of the layers run in inference mode by a pattern

    def training(self, scope):
        if any(p.matches(scope) for p in self.patterns):
            self.frozen.add(scope)
            return False
        return self.is_training

    def layer(self, inputs, **kwargs):
        """normalizer_fn for conv/fc layers: slim.batch_norm with an explicit mode."""
        name = kwargs.get("scope")
        kwargs["is_training"] = self.training(_inside(name if isinstance(name, str)
                                                      else "BatchNorm"))
        return slim.batch_norm(inputs, **kwargs)

    def unit(self, unit_fn):
        """A ResNet v2 unit_fn whose `preact` batch norm (a direct call) gets its mode."""
        def unit(inputs, **kwargs):
            preact = self.training(_inside("bottleneck_v2/preact"))
            with slim.arg_scope([slim.batch_norm], is_training=preact):
                return unit_fn(inputs, **kwargs)
        return unit

    def normalizer_scope(self):
        """arg_scope giving `layer` to every layer type whose current normalizer is
        slim.batch_norm (nets without batch norm keep none)."""
        current = slim.current_arg_scope()
        bn = slim.arg_scope_func_key(slim.batch_norm)
        ops = [op for op in _NORMALIZED_LAYERS
               if slim.arg_scope_func_key(
                   current.get(slim.arg_scope_func_key(op), {}).get("normalizer_fn")) == bn]
        return slim.arg_scope(ops, normalizer_fn=self.layer)


def _net_arg_scope(record):
    """The net's own arg_scope (a user's net may have none)."""
    return slim.arg_scope(resolve(record.arg_scope)() if record.arg_scope else {})


def _inside(scope):
    """`scope` inside the current variable scope."""
    outer = tf.get_variable_scope().name
    return f"{outer}/{scope}" if outer else scope


def build(record, images, num_classes, *, head, head_scope, hidden, dropout, is_training,
          frozen):
    """nets.build after its checks: `frozen` holds compiled scopes.Pattern objects."""
    bn = _BatchNorm(is_training, frozen)
    before = {v.op.name for v in tf.global_variables()}
    # entered in order: normalizer_scope() reads the net's arg_scope
    with _net_arg_scope(record), bn.normalizer_scope(), \
            slim.arg_scope([slim.batch_norm, slim.dropout], is_training=is_training):
        if head == "keep":
            logits, end_points = _net(record, images, num_classes, is_training, bn)
            logits = _flat(logits)
            if "AuxLogits" in end_points:
                end_points["AuxLogits"] = _flat(end_points["AuxLogits"])
        else:
            features, end_points = _net(record, images, None, is_training, bn)
            _check_head_scope(record, head_scope, before)
            end_points["PreLogits"] = features
            logits = _new_head(features, num_classes, head_scope, hidden, dropout, is_training)
    end_points["Logits"] = logits
    names = [v.op.name for v in tf.global_variables()]
    # what this build created; all the graph's when it reused every variable (replicas)
    _check_frozen(record, bn, [n for n in names if n not in before] or names)
    return logits, end_points


def _check_head_scope(record, head_scope, before):
    """The new head's top-level scope holds none of the variables the backbone created (those
    not in `before`): NASNet's and PNASNet's are top-level (cell_0/...), and a head in one of
    their scopes would share it in --train, the plan's exclusions and frozen patterns."""
    top = _inside(head_scope.split("/")[0])
    taken = next((v.op.name for v in tf.global_variables() if v.op.name not in before and
                  v.op.name.startswith(top + "/")), None)
    if taken:
        raise CkptError(f"head scope {head_scope!r} must be a scope of its own: {top!r} is "
                        f"{record.name}'s ({taken}); e.g. 'Logits'")


def _net(record, images, num_classes, is_training, bn):
    """The net with its classifier for `num_classes`, or its features when None: tf_slim's
    builders by family, ckptkit's own and users' by the user-net contract."""
    slim_builder = record.builder.startswith("tf_slim.")
    module = record.builder.partition(":")[0].rpartition(".")[2] if slim_builder else ""
    scope = record.scope
    if module == "resnet_v2":
        blocks = [b._replace(unit_fn=bn.unit(b.unit_fn)) for b in resnet_v2_blocks(record)]
        postnorm = bn.training(_inside(f"{scope}/postnorm"))  # is_training, or False
        return resolve("tf_slim.nets.resnet_v2:resnet_v2")(
            images, blocks, num_classes, is_training=postnorm, global_pool=True, scope=scope)
    if num_classes is None and module.startswith("inception"):
        return resolve(f"{record.builder}_base")(images, scope=scope)
    if num_classes is None and module in ("vgg", "alexnet"):
        features = _vgg_features if module == "vgg" else _alexnet_features
        return features(record, images, is_training)
    kwargs = {} if not slim_builder or module == "resnet_v1" else {"spatial_squeeze": False}
    if module == "resnet_v1":
        kwargs["global_pool"] = True
    return resolve(record.builder)(images, num_classes=num_classes, is_training=is_training,
                                    scope=scope, **kwargs)


def resnet_v2_blocks(record):
    """The blocks tf_slim's resnet_v2_50/101/152 build (its functions build them inline)."""
    block = resolve("tf_slim.nets.resnet_v2:resnet_v2_block")
    units = _RESNET_V2_UNITS[int(record.name.rpartition("_")[2])]
    return [block(f"block{i + 1}", base_depth=64 * 2 ** i, num_units=n,
                  stride=2 if i < 3 else 1) for i, n in enumerate(units)]


def _vgg_features(record, images, is_training):
    """tf_slim's vgg_16/vgg_19 up to fc7 (fc layers as convolutions)."""
    end_points = {}
    with tf.variable_scope(record.scope, values=[images]) as sc:
        net = images
        for i, repeat in enumerate(_VGG_REPEATS[record.name]):
            net = slim.repeat(net, repeat, slim.conv2d, 64 * 2 ** min(i, 3), [3, 3],
                              scope=f"conv{i + 1}")
            net = slim.max_pool2d(net, [2, 2], scope=f"pool{i + 1}")
            end_points[f"{sc.name}/pool{i + 1}"] = net
        net = end_points[f"{sc.name}/fc6"] = slim.conv2d(net, 4096, [7, 7], padding="VALID",
                                                         scope="fc6")
        net = slim.dropout(net, 0.5, is_training=is_training, scope="dropout6")
        net = end_points[f"{sc.name}/fc7"] = slim.conv2d(net, 4096, [1, 1], scope="fc7")
    return net, end_points


def _alexnet_features(record, images, is_training):
    """tf_slim's alexnet_v2 up to fc7 (fc layers as convolutions)."""
    end_points = {}
    with tf.variable_scope(record.scope, values=[images]) as sc:
        net = slim.conv2d(images, 64, [11, 11], 4, padding="VALID", scope="conv1")
        net = slim.max_pool2d(net, [3, 3], 2, scope="pool1")
        net = slim.conv2d(net, 192, [5, 5], scope="conv2")
        net = slim.max_pool2d(net, [3, 3], 2, scope="pool2")
        net = slim.conv2d(net, 384, [3, 3], scope="conv3")
        net = slim.conv2d(net, 384, [3, 3], scope="conv4")
        net = slim.conv2d(net, 256, [3, 3], scope="conv5")
        net = end_points[f"{sc.name}/pool5"] = slim.max_pool2d(net, [3, 3], 2, scope="pool5")
        with slim.arg_scope([slim.conv2d],
                            weights_initializer=tf.truncated_normal_initializer(stddev=0.005),
                            biases_initializer=tf.constant_initializer(0.1)):
            net = end_points[f"{sc.name}/fc6"] = slim.conv2d(
                net, 4096, [5, 5], padding="VALID", scope="fc6")
            net = slim.dropout(net, 0.5, is_training=is_training, scope="dropout6")
            net = end_points[f"{sc.name}/fc7"] = slim.conv2d(net, 4096, [1, 1], scope="fc7")
    return net, end_points


def head_only(record, features, num_classes, *, head_scope, hidden, dropout, is_training):
    """The new head alone on pooled `features` (end_points["PreLogits"] of a build), with the
    variables a build makes: created by the first call in a graph, shared after (with a build
    or an earlier call). Features mode trains it on cached features."""
    with _net_arg_scope(record), \
            tf.variable_scope(tf.get_variable_scope(), reuse=tf.AUTO_REUSE):
        return _new_head(features, num_classes, head_scope, hidden, dropout, is_training)


def _new_head(features, num_classes, scope, hidden, dropout, is_training):
    """Global average pooling (spatial features), dropout, ReLU layers `hidden_i` and the final
    linear layer, whose variables are `scope/weights` and `scope/biases`.

    On spatial features the layers are 1x1 convolutions, like the classifiers of the slim nets
    they replace, so they take the net's conv arg_scope (weight decay, initialiser); on flat
    features (LeNet, CifarNet) they are fully connected, like theirs.
    """
    with tf.variable_scope(scope, values=[features]) as sc:
        net = features
        if net.shape.ndims == 4:
            net = tf.reduce_mean(net, [1, 2], keepdims=True, name="global_pool")
        elif net.shape.ndims != 2:
            net = slim.flatten(net)
        if dropout:
            net = slim.dropout(net, keep_prob=1.0 - dropout, is_training=is_training,
                               scope="dropout")
        for i, units in enumerate(hidden, 1):
            net = _dense(net, units, tf.nn.relu, f"hidden_{i}")
        return _flat(_dense(net, num_classes, None, sc))


def _dense(net, units, activation_fn, scope):
    """A linear layer: 1x1 convolution on [batch, 1, 1, depth], else fully connected."""
    if net.shape.ndims == 4:
        return slim.conv2d(net, units, [1, 1], activation_fn=activation_fn,
                           normalizer_fn=None, scope=scope)
    return slim.fully_connected(net, units, activation_fn=activation_fn, normalizer_fn=None,
                                scope=scope)


def _flat(logits):
    """[batch, h, w, classes] classifier output as [batch, classes]."""
    if logits.shape.ndims != 4:
        return logits
    if logits.shape[1] == 1 and logits.shape[2] == 1:
        return tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
    return tf.reduce_mean(logits, [1, 2], name="SpatialMean")


def _check_frozen(record, bn, names):
    """Every frozen pattern matched something, and every batch norm under one was frozen."""
    for pattern in bn.patterns:
        if not any(map(pattern.matches, names)):
            close = closest_scopes(pattern.text, names)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise CkptError(f"frozen scope {pattern.text!r} matches no variable of "
                            f"{record.name}{hint}")
    for name in names:
        scope, _, last = name.rpartition("/")
        if last == "moving_mean" and scope not in bn.frozen and \
                any(p.matches(scope) for p in bn.patterns):
            raise CkptError(f"cannot freeze batch norm {scope!r} of {record.name}: the net "
                            "builds it outside ckptkit's control")
