"""Turn whatever path a user typed into one checkpoint: its format and where its files are.

Accepted: a V2 prefix (`model.ckpt-1000`), any of its files (`.index`, `.data-*`, `.meta`),
a V1 file, a sharded V1 save (its `NAME-?????-of-NNNNN` pattern or any of its files),
`.h5`/`.keras`/`.weights.h5`, `.npz`, `.safetensors`, a directory, a SavedModel directory or
its `saved_model.pb`/`.pbtxt` (its variables/), or `pretrained:NAME`: registry entry NAME as
`ckptkit pretrained get` put it (zoo.pretrained).
A directory resolves as `tf.train.latest_checkpoint` does: the path its `checkpoint` state
file names (relative to the directory), a V2 prefix before a V1 file. A state naming what is
not there is said in the note, with the fallback taken: the same basename here (a path from
another machine), else the newest checkpoint found, which is also what a directory without
a usable state file gives (where latest_checkpoint gives None).
"""
import os
import re
from dataclasses import dataclass
from glob import escape, glob

from .errors import FormatError, NotFound
from .fileio import STATE_FILE, TEMP_MARK, read_state
from .formats import open_reader
from .formats.sstable import is_table
from .formats.tf_v1 import SHARD_SUFFIX, shard_paths, shard_pattern
from .zoo import pretrained

_V2_MEMBER = re.compile(r"^(.*)\.(index|meta|data-\d{5}-of-\d{5})$", re.S)
_OTHER = (".h5", ".hdf5", ".keras", ".npz", ".safetensors")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_SAVED_MODEL = ("saved_model.pb", "saved_model.pbtxt")
PRETRAINED = pretrained.PREFIX


@dataclass(frozen=True)
class Resolved:
    kind: str          # "tf-v2" | "tf-v1" | "keras-h5" | "keras-zip" | "npz" | "safetensors"
    path: str          # the V2 prefix, or the file
    note: str = ""     # how a directory was resolved, when it needed a fallback


def open_checkpoint(path):
    """Open any checkpoint ckptkit reads (see resolve for what `path` may be); the reader's
    `note` says how a directory or name was resolved, when that needed a fallback."""
    resolved = resolve(path)
    reader = open_reader(resolved.kind, resolved.path)
    reader.note = resolved.note
    return reader


def resolve(path):
    """The Resolved checkpoint `path` names; see the module notes."""
    path = os.fspath(path)
    if path.startswith(PRETRAINED):
        found = resolve_pretrained(path[len(PRETRAINED):])
        return Resolved(found.kind, found.path, note=f"{path} is {found.path}")
    if os.path.isdir(path):
        return _resolve_dir(path)
    if os.path.isfile(path):
        m = _V2_MEMBER.match(path)
        if m and (m.group(2) == "index" or os.path.isfile(m.group(1) + ".index")):
            return Resolved("tf-v2", m.group(1))
        if os.path.basename(path) in _SAVED_MODEL:
            found = _saved_model(os.path.dirname(path))
            if found is None:
                raise NotFound(f"{path}: its SavedModel holds no variables (no "
                               f"{_variables(os.path.dirname(path))}.index)")
            return found
    found = _tf_checkpoint(path)
    if found is not None:
        return found
    if os.path.isfile(path):
        return Resolved(_sniff(path), path)
    raise NotFound(f"no checkpoint at {path}{_nearby(path)}")


def _tf_checkpoint(prefix):
    """The TF checkpoint `prefix` names, V2 before V1 as TF looks, or None: a V2 prefix, a V1
    file, or a sharded V1 save by its pattern or by any of its files."""
    if os.path.isfile(prefix + ".index"):
        return Resolved("tf-v2", prefix)
    if os.path.isfile(prefix) and is_table(prefix):
        return Resolved("tf-v1", shard_pattern(prefix) or prefix)
    if shard_pattern(prefix) == prefix and any(map(os.path.isfile, shard_paths(prefix))):
        return Resolved("tf-v1", prefix)
    return None


def resolve_pretrained(name, directory=None, registry=None, verify=True):
    """The Resolved checkpoint of pretrained `name` (zoo.pretrained.locate: downloaded and
    checked, or made locally and pinned by the registry's sha256)."""
    item, target = pretrained.locate(name, directory, registry, verify=verify)
    if not item.local:
        return resolve(target)
    try:
        found = resolve(target)
    except NotFound:
        made = f"; make it with: {item.made_by}" if item.made_by else ""
        raise NotFound(f"pretrained checkpoint {item.name} is made locally and is not at "
                       f"{target}{made}") from None
    if verify:
        pretrained.check_pin(item, found.path + ".index" if found.kind == "tf-v2"
                             else found.path)
    return found


def _sniff(path):
    """The format of a single file, from its bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise NotFound(f"cannot read {path}: {e.strerror}") from None
    lower = path.lower()
    if head.startswith(_HDF5_MAGIC):
        return "keras-h5"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "keras-zip" if lower.endswith(".keras") else "npz"
    if len(head) >= 9 and head[8:9] == b"{" and lower.endswith(".safetensors"):
        return "safetensors"
    if is_table(path):
        return "tf-v1"
    if lower.endswith(".safetensors"):
        return "safetensors"
    shown = head[:8]
    raise FormatError(f"{path} is not a checkpoint ckptkit knows (starts with {shown!r}; "
                      "expected a TF table, HDF5, zip/npz or safetensors)")


def _variables(d):
    return os.path.join(d, "variables", "variables")


def _saved_model(d):
    """The variables of SavedModel directory `d` (a V2 bundle at variables/variables), or
    None."""
    return Resolved("tf-v2", _variables(d)) if os.path.isfile(_variables(d) + ".index") else None


def _resolve_dir(d):
    saved_model = _saved_model(d)
    if saved_model is not None:
        return saved_model
    note = ""
    if os.path.isfile(os.path.join(d, STATE_FILE)):
        named = read_state(d)
        if named is not None:
            for candidate, as_written in _candidates(d, named):
                found = _tf_checkpoint(candidate)
                if found is not None:
                    moved = "" if as_written else (f"the checkpoint state names {named!r}; "
                                                   f"using {found.path} in this directory")
                    return Resolved(found.kind, found.path, note=moved)
            note = f"the checkpoint state names {named!r}, which is not here; "
    found = _newest(d) or _single_file(d)
    if found is None:
        raise NotFound(f"no checkpoint in directory {d} (no usable `checkpoint` state file, "
                       "no *.index, no V1 checkpoint, no .h5/.npz/.safetensors file)")
    return Resolved(found.kind, found.path, note=note + f"using the newest, {found.path}"
                    if note else "")


def _candidates(d, named):
    """(path, is it the path as written) for where a state path may point: as written
    (relative to the directory), else the same basename here (a path from another machine,
    POSIX or Windows)."""
    as_written = named if os.path.isabs(named) else os.path.join(d, named)
    base = named.replace("\\", "/").rsplit("/", 1)[-1]
    return [(as_written, True), (os.path.join(d, base), False)]


def _step(prefix):
    """The number a prefix ends in (before a sharded V1 save's `-?????-of-NNNNN`), or -1."""
    m = re.search(r"(\d+)$", SHARD_SUFFIX.sub("", prefix))
    return int(m.group(1)) if m else -1


def _newest(d):
    prefixes = [p[: -len(".index")] for p in glob(os.path.join(escape(d), "*.index"))
                if os.path.isfile(p)]
    if os.path.isfile(os.path.join(d, ".index")):
        prefixes.append(os.path.join(d, ""))
    if prefixes:
        best = max(prefixes, key=lambda p: (_step(p), os.path.getmtime(p + ".index"), p))
        return Resolved("tf-v2", best)
    files = [os.path.join(d, n) for n in sorted(os.listdir(d))]
    tables = {shard_pattern(f) or f: f for f in files
              if os.path.isfile(f) and TEMP_MARK not in f and is_table(f)}
    if tables:
        return Resolved("tf-v1", max(tables, key=lambda p: (_step(p),
                                                             os.path.getmtime(tables[p]), p)))
    return None


def _single_file(d):
    """The one .h5/.keras/.npz/.safetensors file of a directory, if there is exactly one."""
    files = [os.path.join(d, n) for n in sorted(os.listdir(d))
             if n.lower().endswith(_OTHER) and os.path.isfile(os.path.join(d, n))]
    if len(files) > 1:
        raise NotFound(f"directory {d} holds several checkpoints; name one: "
                       f"{', '.join(os.path.basename(f) for f in files[:6])}")
    return Resolved(_sniff(files[0]), files[0]) if files else None


def _nearby(path):
    """A hint listing files next to a missing path that share its start."""
    d, base = os.path.split(path)
    try:
        names = sorted(n for n in os.listdir(d or ".") if base and n.startswith(base[:4]))
    except OSError:
        return ""
    return f" (files nearby: {', '.join(names[:5])})" if names else ""
