"""A slim checkpoint as the PyTorch state dict of an existing PyTorch class that computes
what the slim graph computes: timm's TF-ported Inception-v4 and Inception-ResNet-v2,
torchvision's VGG 16 and 19. TF-free and torch-free: the names come from the tables here,
the tensors from the checkpoint, and the file is safetensors, which
`model.load_state_dict(safetensors.torch.load_file(path), strict=True)` takes.

Layouts: conv kernels HWIO -> OIHW; slim's fully connected layers (1x1 convs, and VGG's 7x7
fc6, which torchvision applies to the flattened NCHW features) -> Linear [out, in]; batch
norm without gamma (slim's scale=False) -> weight ones, num_batches_tracked 0. Both libraries'
classes use TF's batch norm epsilon (1e-3) and pad exactly as slim does for these nets.

No other net has such a class: timm's and torchvision's Inception-v3 average-pool with the
padding counted at the borders (count_include_pad), which slim does not, so their logits
differ from slim's by about 1% of their scale; torchvision's ResNets put a block's stride in
its first unit, slim's resnet_v1 in its last. For those the Keras 3 model on Keras' PyTorch
backend (`--to keras --backend torch`) is the route.
"""
import dataclasses
import importlib
import json
import os
import re
from math import prod

import numpy as np

from ..errors import CkptError, MissingPackage, PlanError
from ..fileio import new_output, output_lock
from ..formats.safetensors import SafetensorsWriter
from ..plan import ModelVar, plan_for, renamed
from ..scopes import compile_pattern, role
from ..zoo.nets import get_net


@dataclasses.dataclass(frozen=True)
class Target:
    """The PyTorch class a net's state dict is for: `model` in `package` (timm's
    create_model name, or torchvision.models' function), and its `blocks`: [(slim block
    under the net's scope, state dict prefix, slots)] in the class's order (see _expand)."""

    package: str
    model: str
    blocks: object

    def constructor(self, classes):
        """The Python expression making the class with `classes` outputs."""
        if self.package == "timm":
            return f"timm.create_model({self.model!r}, num_classes={classes})"
        return f"torchvision.models.{self.model}(num_classes={classes})"


def _vgg(convs):
    """torchvision's VGG: `convs` 3x3 convs per block, each followed by a ReLU, a max pool
    after each block; fc6-fc8 in `classifier` between ReLUs and dropouts."""
    blocks, index = [], 0
    for block, count in enumerate(convs, 1):
        for conv in range(1, count + 1):
            blocks.append((f"conv{block}/conv{block}_{conv}", f"features.{index}", [""]))
            index += 2
        index += 1
    return blocks + [(fc, f"classifier.{i}", None) for fc, i in (("fc6", 0), ("fc7", 3),
                                                                   ("fc8", 6))]


# a block's convs in the class's order; slim's, sorted by branch and layer name, are the same
_A = ["branch0", "branch1.0", "branch1.1", "branch2.0", "branch2.1", "branch2.2", "branch3.1"]
_B = ["branch0", "branch1.0", "branch1.1", "branch1.2", "branch2.0", "branch2.1", "branch2.2",
      "branch2.3", "branch2.4", "branch3.1"]
_C = ["branch0", "branch1_0", "branch1_1a", "branch1_1b", "branch2_0", "branch2_1", "branch2_2",
      "branch2_3a", "branch2_3b", "branch3.1"]
_REDUCE_A = ["branch0", "branch1.0", "branch1.1", "branch1.2"]
_REDUCE_B = ["branch0.0", "branch0.1", "branch1.0", "branch1.1", "branch1.2", "branch1.3"]
_BLOCK35 = ["branch0", "branch1.0", "branch1.1", "branch2.0", "branch2.1", "branch2.2", "conv2d"]
_BLOCK17 = ["branch0", "branch1.0", "branch1.1", "branch1.2", "conv2d"]
_REDUCE_7A = ["branch0.0", "branch0.1", "branch1.0", "branch1.1", "branch2.0", "branch2.1",
              "branch2.2"]


def _inception_v4():
    blocks = [("Conv2d_1a_3x3", "features.0", [""]), ("Conv2d_2a_3x3", "features.1", [""]),
              ("Conv2d_2b_3x3", "features.2", [""]), ("Mixed_3a", "features.3", ["conv"]),
              ("Mixed_4a", "features.4", _REDUCE_B), ("Mixed_5a", "features.5", ["conv"])]
    blocks += [(f"Mixed_5{b}", f"features.{6 + i}", _A) for i, b in enumerate("bcde")]
    blocks += [("Mixed_6a", "features.10", _REDUCE_A)]
    blocks += [(f"Mixed_6{b}", f"features.{11 + i}", _B) for i, b in enumerate("bcdefgh")]
    blocks += [("Mixed_7a", "features.18", _REDUCE_B)]
    blocks += [(f"Mixed_7{b}", f"features.{19 + i}", _C) for i, b in enumerate("bcd")]
    return blocks + [("Logits/Logits", "last_linear", None)]


def _inception_resnet_v2():
    stem = [("Conv2d_1a_3x3", "conv2d_1a"), ("Conv2d_2a_3x3", "conv2d_2a"),
            ("Conv2d_2b_3x3", "conv2d_2b"), ("Conv2d_3b_1x1", "conv2d_3b"),
            ("Conv2d_4a_3x3", "conv2d_4a")]
    blocks = [(name, prefix, [""]) for name, prefix in stem] + [("Mixed_5b", "mixed_5b", _A)]
    blocks += [(f"Repeat/block35_{i + 1}", f"repeat.{i}", _BLOCK35) for i in range(10)]
    blocks += [("Mixed_6a", "mixed_6a", _REDUCE_A)]
    blocks += [(f"Repeat_1/block17_{i + 1}", f"repeat_1.{i}", _BLOCK17) for i in range(20)]
    blocks += [("Mixed_7a", "mixed_7a", _REDUCE_7A)]
    blocks += [(f"Repeat_2/block8_{i + 1}", f"repeat_2.{i}", _BLOCK17) for i in range(9)]
    blocks += [("Block8", "block8", _BLOCK17), ("Conv2d_7b_1x1", "conv2d_7b", [""])]
    return blocks + [("Logits/Logits", "classif", None)]


TARGETS = {
    "inception_v4": Target("timm", "inception_v4", _inception_v4()),
    "inception_resnet_v2": Target("timm", "inception_resnet_v2", _inception_resnet_v2()),
    "vgg_16": Target("torchvision", "vgg16", _vgg([2, 2, 3, 3, 3])),
    "vgg_19": Target("torchvision", "vgg19", _vgg([2, 2, 4, 4, 4])),
}
WHY_NOT = {
    "inception_v3": "timm's and torchvision's Inception-v3 count the padding in their border "
                    "average pools (slim does not): their logits differ from slim's by about "
                    "1% of their scale",
    **{f"resnet_v1_{d}": "torchvision's ResNets put a block's stride in its first unit, slim's "
                         "resnet_v1 in its last" for d in (50, 101, 152)},
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """State dict tensor `key` made from slim variable `source` laid out as `layout`: "conv"
    (HWIO -> OIHW), "linear" (-> [out, in], NCHW flattening), "copy", "ones" (a batch norm's
    gamma slim's scale=False leaves out: ones shaped as `source`, its beta) or "count"
    (num_batches_tracked, no source)."""

    key: str
    source: str
    layout: str

    def shape(self, source_shape):
        """The tensor's shape, the source's being `source_shape`."""
        s = source_shape
        if self.layout == "count":
            return ()
        if self.layout == "conv":
            return (s[3], s[2], s[0], s[1])
        if self.layout == "linear":
            return (s[-1], prod(s[:-1]))
        return tuple(s)

    def value(self, read):
        """The tensor, `read(source)` giving the source's value."""
        if self.layout == "count":
            return np.zeros((), np.int64)
        value = read(self.source)
        if self.layout == "conv":
            return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
        if self.layout == "linear":
            value = value.reshape((1, 1) + value.shape) if value.ndim == 2 else value
            return np.ascontiguousarray(value.transpose(3, 2, 0, 1).reshape(value.shape[3], -1))
        return np.ones_like(value) if self.layout == "ones" else value


@dataclasses.dataclass
class StateDict:
    """What `port --to torch` writes, read from the checkpoint one tensor at a time while
    its reader is open: `entries` in the class's order, `specs` {key: (shape, dtype)},
    the plan that pairs them with checkpoint tensors, the metadata stored in the file's
    header (`__metadata__["ckptkit"]`, JSON) and the checkpoint's files."""

    entries: list
    specs: dict
    plan: object
    metadata: dict
    files: list
    reader: object

    def tensors(self, by_key=False):
        """(key, array) of every entry (in key order if `by_key`), each read when reached."""
        restore = {item.model: item for item in self.plan.restore}

        def read(source):
            item = restore[source]
            return item.sliced(self.reader.read(item.ckpt))
        for entry in sorted(self.entries, key=lambda e: e.key) if by_key else self.entries:
            yield entry.key, entry.value(read)


def port_state_dict(reader, net, options, *, drop_background=False):
    """StateDict of `net` for its Target class from the open checkpoint `reader`
    (paths.open_checkpoint; it must stay open while the StateDict is used) under `options`
    (plan.RestoreOptions); drop_background: a 1001-class classifier without its background
    class. A net without a matching class, or a checkpoint lacking a weight the class
    needs, is an error."""
    record = get_net(net)
    target = TARGETS.get(record.name)
    if target is None:
        why = WHY_NOT.get(record.name, "no PyTorch library has a class computing exactly "
                                       "what its slim graph computes")
        raise CkptError(f"--to torch writes state dicts for {', '.join(sorted(TARGETS))}; "
                        f"not {record.name}: {why}. The Keras 3 model runs and trains on "
                        "PyTorch: --to keras --backend torch")
    if drop_background and record.label_offset != 1:
        raise CkptError("--drop-background drops the background class of a 1001-class "
                        f"classifier; {record.name} has none")
    variables = list(reader)
    model = renamed([v for v in variables if role(v.name) == "model"], options.maps)
    shapes = {name: tuple(v.shape) for name, v in model.items()}
    entries = _entries(_expand(target.blocks, record.scope, shapes), shapes)
    sources = list(dict.fromkeys(e.source for e in entries if e.source))
    missing = [name for name in sources if name not in shapes]
    if missing:
        raise PlanError(f"the checkpoint lacks {len(missing)} weight(s) the {target.package} "
                        f"class needs: {', '.join(missing[:5])}")
    drop = 1 if drop_background else 0
    classifier = [compile_pattern(scope) for scope in record.classifier_scopes]
    needed = {name: shapes[name][:-1] + (shapes[name][-1] - drop,)
              if drop and any(p.matches(name) for p in classifier) else shapes[name]
              for name in sources}
    plan = plan_for(variables, [ModelVar(n, s, "float32", True) for n, s in needed.items()],
                    options, label_offset=record.label_offset)
    if reader.note:
        plan.notes.append(reader.note)
    if plan.missing:
        raise PlanError(f"the plan restores no {plan.missing[0]}, which the "
                        f"{target.package} class needs ({len(plan.missing)} in all)")
    specs = {e.key: (e.shape(needed[e.source]), model[e.source].dtype) if e.source
             else ((), "int64") for e in entries}
    classes = specs[entries[-1].key][0][0]
    metadata = {
        "net": record.name, "checkpoint": os.path.abspath(reader.path),
        "class": target.constructor(classes), "package": target.package,
        "model": target.model, "num_classes": classes, "checkpoint_classes": classes + drop,
        "label_offset": 0 if drop else record.label_offset, "image_size": record.image_size,
        "preprocessing": record.preprocessing, "input": "float32 NCHW, preprocessed",
        "output": "logits",
        "weights": {e.key: e.source if e.layout not in ("ones", "count") else None
                    for e in entries},
    }
    return StateDict(entries, specs, plan, metadata, list(reader.files), reader)


def save(state, out, *, overwrite=False):
    """Write `state` (a StateDict) to `out` (.safetensors) atomically, tensor by tensor, the
    metadata in its header; never over a file of the checkpoint, nor over an existing file
    without `overwrite`."""
    out = os.fspath(out)
    new_output(out, state.files, overwrite=overwrite)
    with output_lock(out), SafetensorsWriter(
            out, metadata={"ckptkit": json.dumps(state.metadata)}) as writer:
        writer.begin([(key, *state.specs[key]) for key in sorted(state.specs)])
        for key, value in state.tensors(by_key=True):
            writer.add(key, value)
        writer.commit()
    return out


def torch_model(state):
    """The PyTorch class of `state` (a StateDict) holding its tensors (strict=True), in eval
    mode; torch or the class's package missing is a MissingPackage error."""
    meta = state.metadata
    try:
        import torch
        package = importlib.import_module(meta["package"])
    except ImportError as e:
        raise MissingPackage(f"checking the {meta['net']} state dict needs torch and "
                             f"{meta['package']} (pip install torch {meta['package']}): "
                             f"no {e.name}") from None
    classes = meta["num_classes"]
    model = (package.create_model(meta["model"], num_classes=classes)
             if meta["package"] == "timm"
             else getattr(package.models, meta["model"])(num_classes=classes))
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    ours = {key: tuple(shape) for key, (shape, _) in state.specs.items()}
    if expected != ours:
        key = sorted(set(expected) ^ set(ours)) or [k for k in expected if expected[k] != ours[k]]
        raise PlanError(f"the state dict does not fit {meta['class']}: {key[0]} "
                        f"({ours.get(key[0], 'absent')} here, "
                        f"{expected.get(key[0], 'absent')} there)")
    model.load_state_dict({key: torch.tensor(value) for key, value in state.tensors()},
                          strict=True)
    return model.eval()


def _expand(blocks, scope, shapes):
    """(slim layer scope, state dict prefix, kind) of every layer, in the class's order.
    Slots: None, a fully connected layer (kind "linear"); [""], one conv layer; else the
    names under `prefix` of the block's conv layers, which pair with the checkpoint's conv
    layers in the block sorted by branch and layer name (slim's build order)."""
    for block, prefix, slots in blocks:
        layer = f"{scope}/{block}"
        if slots is None or slots == [""]:
            yield layer, prefix, "linear" if slots is None else "conv"
            continue
        found = sorted({name.rpartition("/")[0] for name in shapes
                        if name.startswith(layer + "/") and name.endswith("/weights")},
                       key=_natural)
        if len(found) != len(slots):
            raise PlanError(f"the checkpoint holds {len(found)} conv layers under {layer}; "
                            f"the class's {prefix} has {len(slots)} (is --net right?)")
        for conv, slot in zip(found, slots):
            yield conv, f"{prefix}.{slot}", "conv"


def _entries(layers, shapes):
    """Entry of every tensor of `layers`: a conv with batch norm is a ConvNormAct (`.conv`,
    `.bn`), one with biases a plain Conv2d."""
    entries = []
    for layer, prefix, kind in layers:
        beta = f"{layer}/BatchNorm/beta"
        if kind == "linear" or beta not in shapes:
            entries += [Entry(f"{prefix}.weight", f"{layer}/weights", kind),
                        Entry(f"{prefix}.bias", f"{layer}/biases", "copy")]
            continue
        gamma = f"{layer}/BatchNorm/gamma"
        entries += [Entry(f"{prefix}.conv.weight", f"{layer}/weights", "conv"),
                    Entry(f"{prefix}.bn.weight", gamma, "copy") if gamma in shapes
                    else Entry(f"{prefix}.bn.weight", beta, "ones"),
                    Entry(f"{prefix}.bn.bias", beta, "copy"),
                    Entry(f"{prefix}.bn.running_mean", f"{layer}/BatchNorm/moving_mean", "copy"),
                    Entry(f"{prefix}.bn.running_var", f"{layer}/BatchNorm/moving_variance",
                          "copy"),
                    Entry(f"{prefix}.bn.num_batches_tracked", "", "count")]
    return entries


def _natural(name):
    """Sort key reading digit runs as numbers (block35_10 after block35_9)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
