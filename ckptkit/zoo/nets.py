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
"""
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


def _net(name, scope, size, preprocessing, classifier, classes, builder, arg_scope,
         channels=3):
    return NetRecord(name, scope, size, preprocessing, tuple(classifier), classes,
                     1 if classes == 1001 else 0, channels, builder, arg_scope)


_SLIM = "tf_slim.nets."
_RESNET_ARGS = _SLIM + "resnet_utils:resnet_arg_scope"
_SMALL = "ckptkit.train.architectures.small_nets:"

NETS = {net.name: net for net in [
    _net("alexnet_v2", "alexnet_v2", 224, "vgg", ["alexnet_v2/fc8"], 1000,
         _SLIM + "alexnet:alexnet_v2", _SLIM + "alexnet:alexnet_v2_arg_scope"),
    _net("cifarnet", "CifarNet", 32, "cifarnet", ["CifarNet/logits"], 10,
         _SMALL + "cifarnet", _SMALL + "cifarnet_arg_scope"),
    *[_net(f"inception_v{v}", f"InceptionV{v}", 299 if v == 3 else 224, "inception",
           [f"InceptionV{v}/Logits"] + (["InceptionV3/AuxLogits"] if v == 3 else []), 1001,
           f"{_SLIM}inception_v{v}:inception_v{v}",
           f"{_SLIM}inception_v{v}:inception_v{v}_arg_scope") for v in (1, 2, 3)],
    _net("lenet", "LeNet", 28, "lenet", ["LeNet/fc4"], 10,
         _SMALL + "lenet", _SMALL + "lenet_arg_scope", channels=1),
    *[_net(f"resnet_v1_{d}", f"resnet_v1_{d}", 224, "vgg", [f"resnet_v1_{d}/logits"], 1000,
           f"{_SLIM}resnet_v1:resnet_v1_{d}", _RESNET_ARGS) for d in (50, 101, 152)],
    *[_net(f"resnet_v2_{d}", f"resnet_v2_{d}", 299, "inception", [f"resnet_v2_{d}/logits"],
           1001, f"{_SLIM}resnet_v2:resnet_v2_{d}", _RESNET_ARGS) for d in (50, 101, 152)],
    *[_net(f"vgg_{d}", f"vgg_{d}", 224, "vgg", [f"vgg_{d}/fc8"], 1000,
           f"{_SLIM}vgg:vgg_{d}", _SLIM + "vgg:vgg_arg_scope") for d in (16, 19)],
]}


def get_net(name):
    """The NetRecord called `name` (a NetRecord passes through); CkptError naming the known
    nets and the closest one otherwise."""
    if isinstance(name, NetRecord):
        return name
    key = str(name).strip().lower().replace("-", "_")
    if key in NETS:
        return NETS[key]
    scores = sorted((-SequenceMatcher(None, key, known).ratio(), known) for known in NETS)
    hint = f"; closest: {scores[0][1]}" if -scores[0][0] >= 0.5 else ""
    raise CkptError(f"unknown net {name!r}; known: {', '.join(sorted(NETS))}{hint}")
