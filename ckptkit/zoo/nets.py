"""The nets factory: one registry of the networks ckptkit can build, and what fine-tuning,
planning, prediction and export need to know about each (STYLE.md habits 4 and 5: one
registry, adaptation is data).

A NetRecord names a net's variable scope, its image size and preprocessing, the scopes of its
original classifier and the class count of the published ImageNet checkpoints (1001 with a
background class at index 0: label_offset 1), and its TF1 builder and arg_scope as
"module:function" strings that train/ resolves when it builds a graph: this module is plain
data and never loads TensorFlow.

Notes
- resnet_v2 checkpoints were trained at 299x299 with Inception preprocessing (research/slim's
  README), although tf_slim's default_image_size says 224; the records follow the checkpoints.
- lenet and cifarnet have no published checkpoints: 10 classes (MNIST, CIFAR-10); LeNet takes
  one channel.

A user's own net: `--net path/to/mynet.py:build` or `--net package.module:build` names a
function with the contract ckptkit's own architectures follow (train/architectures):
`build(images, num_classes, is_training=..., scope=...) -> (logits, end_points)`, and with
num_classes=None the features its classifier would see. Its facts are read from the function:
the defaults of its `scope` and `num_classes` parameters (or attributes of those names), and
optional attributes `default_image_size` (224), `preprocessing` ("inception"),
`classifier_scopes` (its classifier, which a new head replaces), `channels` (3),
`label_offset` (0) and `arg_scope` (a function of the same module). Its module is its code:
loading it runs it (import TensorFlow there as `from ckptkit.tfcompat import tf, slim`).
"""
import functools
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from difflib import SequenceMatcher

from ..errors import CkptError

PREPROCESSING = ("vgg", "inception", "lenet", "cifarnet")
# ImageNet channel means (RGB) that VGG-style preprocessing subtracts
VGG_MEANS = (123.68, 116.78, 103.94)


@dataclass(frozen=True)
class NetRecord:
    """What ckptkit knows about one net; see the module notes."""

    name: str
    scope: str                  # the net's variable scope: "resnet_v1_50", "InceptionV3"
    image_size: int
    preprocessing: str          # one of PREPROCESSING
    classifier_scopes: tuple    # the original classifier: ("InceptionV3/Logits", ...)
    num_classes: int            # of the published checkpoints
    label_offset: int = 0       # 1 when num_classes counts a background class
    channels: int = 3
    builder: str = ""           # "module:function" building the net (tf_slim signature)
    arg_scope: str = ""         # "module:function" returning the net's arg_scope
    keras: str = ""             # "module:function" building it in Keras 3 (port/nets)


def _net(name, scope, size, preprocessing, classifier, classes, builder, arg_scope,
         channels=3, keras=""):
    return NetRecord(name, scope, size, preprocessing, tuple(classifier), classes,
                     1 if classes == 1001 else 0, channels, builder, arg_scope,
                     keras and _KERAS + keras)


_SLIM = "tf_slim.nets."
_RESNET_ARGS = _SLIM + "resnet_utils:resnet_arg_scope"
_SMALL = "ckptkit.train.architectures.small_nets:"
_KERAS = "ckptkit.port.nets."

NETS = {net.name: net for net in [
    _net("alexnet_v2", "alexnet_v2", 224, "vgg", ["alexnet_v2/fc8"], 1000,
         _SLIM + "alexnet:alexnet_v2", _SLIM + "alexnet:alexnet_v2_arg_scope",
         keras="vgg:alexnet"),
    _net("cifarnet", "CifarNet", 32, "cifarnet", ["CifarNet/logits"], 10,
         _SMALL + "cifarnet", _SMALL + "cifarnet_arg_scope", keras="small:cifarnet"),
    *[_net(f"inception_v{v}", f"InceptionV{v}", 299 if v == 3 else 224, "inception",
           [f"InceptionV{v}/Logits"] + (["InceptionV3/AuxLogits"] if v == 3 else []), 1001,
           f"{_SLIM}inception_v{v}:inception_v{v}",
           f"{_SLIM}inception_v{v}:inception_v{v}_arg_scope",
           keras=f"inception:inception_v{v}") for v in (1, 2, 3)],
    _net("lenet", "LeNet", 28, "lenet", ["LeNet/fc4"], 10,
         _SMALL + "lenet", _SMALL + "lenet_arg_scope", channels=1, keras="small:lenet"),
    *[_net(f"resnet_v1_{d}", f"resnet_v1_{d}", 224, "vgg", [f"resnet_v1_{d}/logits"], 1000,
           f"{_SLIM}resnet_v1:resnet_v1_{d}", _RESNET_ARGS, keras="resnet:resnet")
      for d in (50, 101, 152)],
    *[_net(f"resnet_v2_{d}", f"resnet_v2_{d}", 299, "inception", [f"resnet_v2_{d}/logits"],
           1001, f"{_SLIM}resnet_v2:resnet_v2_{d}", _RESNET_ARGS, keras="resnet:resnet")
      for d in (50, 101, 152)],
    *[_net(f"vgg_{d}", f"vgg_{d}", 224, "vgg", [f"vgg_{d}/fc8"], 1000,
           f"{_SLIM}vgg:vgg_{d}", _SLIM + "vgg:vgg_arg_scope", keras="vgg:vgg")
      for d in (16, 19)],
    # mobilenet v1/v2/v3
    *[_net(f"mobilenet_{v}{width}", f"Mobilenet{v.upper()}", 224, "inception",
           [f"Mobilenet{v.upper()}/Logits"], 1001,
           f"ckptkit.train.architectures.mobilenet_{v}:mobilenet_{v}{width}",
           f"ckptkit.train.architectures.mobilenet_{v}:mobilenet_{v}_arg_scope",
           keras=f"mobilenet:mobilenet_{v}")
      for v, widths in (("v1", ("", "_075", "_050", "_025")),
                        ("v2", ("", "_140", "_130", "_075", "_050", "_035")),
                        ("v3", ("_large", "_small")))
      for width in widths],
    # inception_v4, inception_resnet_v2, overfeat
    *[_net(name, scope, 299, "inception", [f"{scope}/Logits", f"{scope}/AuxLogits"], 1001,
           f"ckptkit.train.architectures.{name}:{name}",
           f"ckptkit.train.architectures.{name}:{name}_arg_scope", keras=f"inception_v4:{name}")
      for name, scope in (("inception_v4", "InceptionV4"),
                          ("inception_resnet_v2", "InceptionResnetV2"))],
    _net("overfeat", "overfeat", 231, "vgg", ["overfeat/fc8"], 1000,
         "ckptkit.train.architectures.overfeat:overfeat",
         "ckptkit.train.architectures.overfeat:overfeat_arg_scope", keras="vgg:overfeat"),
    # nasnet, pnasnet
    # no enclosing scope in their checkpoints (conv0/..., cell_0/..., final_layer/FC/...):
    # scope "", classifier scopes anchored at the top
    *[_net(f"{n}_mobile", "", 224, "inception", ["/final_layer", f"/aux_{aux}"], 1001,
           f"ckptkit.train.architectures.nasnet:{n}_mobile",
           f"ckptkit.train.architectures.nasnet:{n}_mobile_arg_scope", keras=f"nasnet:{n}")
      for n, aux in (("nasnet", 7), ("pnasnet", 5))],
]}


def get_net(name):
    """The NetRecord called `name` (a NetRecord passes through; "file.py:fn" or
    "module:fn": a user's own net, see the module notes); CkptError naming the known nets and
    the closest one otherwise."""
    if isinstance(name, NetRecord):
        return name
    if ":" in str(name):
        return user_net(canonical(str(name)))
    key = str(name).strip().lower().replace("-", "_")
    if key in NETS:
        return NETS[key]
    scores = sorted((-SequenceMatcher(None, key, known).ratio(), known) for known in NETS)
    hint = f"; closest: {scores[0][1]}" if -scores[0][0] >= 0.5 else ""
    raise CkptError(f"unknown net {name!r}; known: {', '.join(sorted(NETS))}{hint}")


def canonical(name):
    """`name` with a user net's file made absolute, so a run rebuilds it from anywhere."""
    where, sep, attr = str(name).strip().rpartition(":")
    if sep and where.endswith(".py"):
        return f"{os.path.abspath(where)}:{attr}"
    return str(name).strip()


@functools.lru_cache(maxsize=None)
def user_net(ref):
    """The NetRecord of a user's net `ref` (canonical "file.py:fn" or "module:fn")."""
    fn = load_ref(ref)
    if not callable(fn):
        raise CkptError(f"--net {ref}: {type(fn).__name__} is not a function building a net")
    params = inspect.signature(fn).parameters

    def fact(attr, kind, default=None):
        value = getattr(fn, attr, None)
        if value is None and attr in params and \
                params[attr].default is not inspect.Parameter.empty:
            value = params[attr].default
        value = default if value is None else value
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CkptError(f"--net {ref}: give the net's {attr} as a default of its {attr!r} "
                            f"parameter or as {fn.__name__}.{attr} (found {value!r})")
        return value

    scope, classes = fact("scope", str), fact("num_classes", int)
    preprocessing = fact("preprocessing", str, "inception")
    if preprocessing not in PREPROCESSING:
        raise CkptError(f"--net {ref}: preprocessing {preprocessing!r} is not one of "
                        f"{', '.join(PREPROCESSING)}")
    where = ref.rpartition(":")[0]
    arg_scope, arg_ref = getattr(fn, "arg_scope", None), ""
    if arg_scope is not None:
        arg_ref = f"{where}:{getattr(arg_scope, '__name__', '?')}"
        if getattr(_module_of(where), arg_ref.rpartition(":")[2], None) is not arg_scope:
            raise CkptError(f"--net {ref}: its arg_scope must be a function of its module")
    return NetRecord(ref, scope, fact("default_image_size", int, 224), preprocessing,
                     tuple(fact("classifier_scopes", (list, tuple), ())), classes,
                     fact("label_offset", int, 0), fact("channels", int, 3), ref, arg_ref)


def load_ref(ref):
    """The object a "module:name" or "path/file.py:name" reference names; what the module
    raises while loading becomes one line."""
    where, _, attr = ref.rpartition(":")
    module = _module_of(where)
    if not hasattr(module, attr):
        raise CkptError(f"{where} defines no {attr!r}")
    return getattr(module, attr)


def _module_of(where):
    """The module "package.module" or "path/file.py" names, loaded."""
    try:
        return _file_module(where) if where.endswith(".py") else importlib.import_module(where)
    except CkptError:
        raise
    except Exception as e:       # the user's module ran and failed: say how, in one line
        first = (str(e).splitlines() or [""])[0]
        raise CkptError(f"cannot load {where}: {type(e).__name__}: {first}") from None


def _file_module(path):
    """A Python file, imported once under a name of its own."""
    if not os.path.isfile(path):
        raise CkptError(f"no Python file {path}")
    key = f"ckptkit_user_net_{abs(hash(os.path.realpath(path))):x}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]
