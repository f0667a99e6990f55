"""TF2 object-based checkpoints: a V2 bundle plus the object graph that names its keys.

- the scalar string tensor `_CHECKPOINTABLE_OBJECT_GRAPH` is a serialized
  TrackableObjectGraph: nodes with named children (edges), attributes (name, the TF1-style
  full_name, the bundle key holding the value) and slot variables (optimizer slot `m` of
  node 3 lives at node 9).
- variable keys end in `/.ATTRIBUTES/VARIABLE_VALUE`; optimizer slots sit under
  `.OPTIMIZER_SLOT/`.
Notes: a node's path is the chain of child names from the root (node 0), found breadth-first,
so the shortest path wins where objects are shared.
"""
from collections import deque
from dataclasses import dataclass

from ..errors import FormatError
from .protos import OBJECT_GRAPH, decode
from .tf_v2 import GRAPH_KEY


@dataclass(frozen=True)
class ObjectAttribute:
    key: str          # the bundle key holding the value
    path: str         # object path from the root, e.g. model/dense/kernel (a variable's
                      # VALUE is the object itself; slots read optimizer/m[model/dense/kernel])
    full_name: str    # the variable's TF1-style name, where it had one
    slot_of: str = ""  # for optimizer slots: "<slot name> of <variable path>"


def objects(reader):
    """Every attribute in the object graph of a TF2 checkpoint, in key order."""
    if GRAPH_KEY not in reader:
        raise FormatError(f"{reader.path} is not an object-based (TF2) checkpoint: it has no "
                          f"{GRAPH_KEY}")
    raw = reader.read(GRAPH_KEY).reshape(-1)
    if raw.size != 1:
        raise FormatError(f"{GRAPH_KEY} holds {raw.size} strings, not one")
    nodes = decode(raw[0], OBJECT_GRAPH, f"{reader.path}: {GRAPH_KEY}").get("nodes", [])
    paths = {0: ""}
    queue = deque([0])
    while queue:
        node = queue.popleft()
        for child in nodes[node].get("children", []) if node < len(nodes) else []:
            target = child.get("node_id", 0)
            if target not in paths:
                paths[target] = _join(paths[node], child.get("local_name", ""))
                queue.append(target)
    slot_of = {}
    for i, node in enumerate(nodes):
        for slot in node.get("slot_variables", []):
            original = paths.get(slot.get("original_variable_node_id", 0), "?")
            name, target = slot.get("slot_name", ""), slot.get("slot_variable_node_id", -1)
            slot_of[target] = f"{name} of {original}"
            # slots hang off the optimizer, not off any child edge
            paths.setdefault(target, _join(paths.get(i, "?"), f"{name}[{original}]"))
    out = []
    for i, node in enumerate(nodes):
        for attr in node.get("attributes", []):
            name = attr.get("name", "")
            path = paths.get(i, f"<unreachable node {i}>")
            out.append(ObjectAttribute(
                attr.get("checkpoint_key", ""),
                path if name == "VARIABLE_VALUE" else _join(path, name),
                attr.get("full_name", ""), slot_of.get(i, "")))
    return sorted(out, key=lambda a: a.key)


def _join(a, b):
    return f"{a}/{b}" if a else b
