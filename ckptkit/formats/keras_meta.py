"""What `ckptkit port` records in a Keras 3 `.keras` archive: the checkpoint and net it was
ported from, and the checkpoint tensor of every weight, matched to the HDF5 datasets that
hold them.

- metadata.json (a JSON object) carries "ckptkit": {"checkpoint": str, "net": str,
  "weights": {Keras weight path: checkpoint tensor, or null for a weight of a new head}, ...}
  (port/keras.py writes it). A Keras weight path is `LAYER/VARIABLE`, e.g. `conv1/kernel`.
- config.json: {"config": {"layers": [{"class_name": str, "config": {"name": str, ...}},
  ...]}}, the layers in the order the model holds them; a nested Functional or Sequential
  model has its own "layers" in its "config".
- model.weights.h5 names weights by layer class, not layer name: the k-th layer (k from 0)
  of a class C among a model's layers is `layers/c` (C in snake case: Conv2D -> conv2d,
  BatchNormalization -> batch_normalization) for k = 0, else `layers/c_k`; a nested model's
  layers go under its own path (`layers/functional/layers/conv2d`). A layer's variables are
  `PATH/vars/0`, `PATH/vars/1`, ... in the order it made them, trainable ones first: the
  order ckptkit's metadata lists a layer's weights in.
Notes: the file is never trusted. A "ckptkit" object that is not shaped as above, a weight
whose layer or variable the archive lacks, or a layer holding another number of variables
than the mapping gives it makes the whole mapping unusable: the reader warns in one line
and lists the weights without it, never failing because of it.
"""
import re

# how a warning about an unusable mapping ends
SET_ASIDE = "the checkpoint tensors of its weights are unknown"
_NESTED = ("Functional", "Sequential")


def port_section(metadata):
    """The "ckptkit" object of a parsed metadata.json, or None for an archive ckptkit did
    not write (no object there)."""
    section = metadata.get("ckptkit") if isinstance(metadata, dict) else None
    return section if isinstance(section, dict) else None


def port_record(path, section, config, datasets):
    """(origin, sources, warnings) of archive `path` from its metadata's "ckptkit" object
    `section`, its parsed config.json (None when unreadable) and its dataset names: origin
    {"checkpoint", "net"} (None unless both are strings), sources {dataset name: checkpoint
    tensor} (empty when unusable), warnings what was set aside (one line each)."""
    checkpoint, net = section.get("checkpoint"), section.get("net")
    origin = {"checkpoint": checkpoint, "net": net} \
        if isinstance(checkpoint, str) and isinstance(net, str) else None
    try:
        return origin, _sources(section.get("weights"), config, datasets), []
    except ValueError as e:
        return origin, {}, [f"{path}: {e}; {SET_ASIDE}"]


def _sources(weights, config, datasets):
    """{dataset: checkpoint tensor}; ValueError saying why the mapping cannot be used."""
    if not isinstance(weights, dict) or not all(
            isinstance(path, str) and (source is None or _tensor_name(source))
            for path, source in weights.items()):
        raise ValueError("metadata.json's ckptkit weights are not a mapping of Keras weight "
                         "paths to checkpoint tensor names")
    groups = _layer_groups(config)
    counts = {}
    for name in datasets:
        group, sep, _ = name.rpartition("/vars/")
        if sep:
            counts[group] = counts.get(group, 0) + 1
    sources, used, lacking = {}, {}, []
    for path, source in weights.items():
        group = groups.get(path.rpartition("/")[0])
        if group is None:
            lacking.append(path)
            continue
        index = used[group] = used.get(group, -1) + 1
        dataset = f"{group}/vars/{index}"
        if dataset not in datasets:
            lacking.append(path)
        elif source is not None:
            sources[dataset] = source
    if lacking:
        raise ValueError(f"metadata.json names {len(lacking)} weight(s) the archive lacks "
                         f"(first {lacking[0]!r})")
    for group, n in used.items():
        if counts.get(group) != n + 1:
            raise ValueError(f"layer {group} holds {counts.get(group, 0)} variables, "
                             f"metadata.json names {n + 1}")
    return sources


def _tensor_name(text):
    return isinstance(text, str) and text and text.strip("/") == text


def _layer_groups(config):
    """{layer name: its HDF5 group} from a parsed config.json; ValueError when its layers
    are not listed as Keras lists them (see the module notes)."""
    groups = {}
    model = config.get("config") if isinstance(config, dict) else None
    pending = [("layers", model)]
    while pending:
        prefix, model = pending.pop()
        layers = model.get("layers") if isinstance(model, dict) else None
        if not isinstance(layers, list):
            raise ValueError("config.json does not list the model's layers")
        taken = {}
        for layer in layers:
            kind = layer.get("class_name") if isinstance(layer, dict) else None
            inner = layer.get("config") if kind is not None else None
            name = inner.get("name") if isinstance(inner, dict) else None
            if not (isinstance(kind, str) and isinstance(name, str)):
                raise ValueError("config.json lists a layer without a class name or name")
            if name in groups:
                raise ValueError(f"config.json names two layers {name!r}")
            key = snake_case(kind)
            taken[key] = n = taken.get(key, -1) + 1
            groups[name] = f"{prefix}/{key}" + (f"_{n}" if n else "")
            if kind in _NESTED:
                pending.append((f"{groups[name]}/layers", inner))
    return groups


def snake_case(name):
    """Keras' file name of a class name: non-word characters dropped, "_" before each
    capital that starts a lowercase run and after each lowercase letter followed by a
    capital, then lowercase (Conv2D -> conv2d, BatchNormalization -> batch_normalization)."""
    name = re.sub(r"\W+", "", name)
    return re.sub(r"(?<=.)(?=[A-Z][a-z])|(?<=[a-z])(?=[A-Z])", "_", name).lower()
