"""TF V1 checkpoints (2015-2017): one sstable file of SavedTensorSlices messages.

- key "" holds SavedTensorSlices.meta: every tensor's name, full shape, dtype and the slices
  saved for it (a whole tensor is one slice covering every dimension).
- every other key is a slice key (slices.py) whose value is SavedTensorSlices.data: the
  tensor name, the slice, and a TensorProto with the values in its typed repeated field
  (float_val, int_val, ...) or in tensor_content.
Notes: large tensors may be split into several slices even when not partitioned; slices of
one tensor share a key prefix, so reading one tensor seeks to it and reads no other.
Sharded saves (Saver(sharded=True)) write one such file per device, `NAME-00000-of-00002`,
`NAME-00001-of-00002`, and name them by the pattern `NAME-?????-of-00002`; each file lists only
its own tensors and slices (a partitioned variable may have pieces in several), so the reader
opens every shard or none.
"""
import os
import re
from math import prod

from ..errors import Corrupt, CkptError, FormatError, NotFound, Unsupported
from ..fileio import release_maps
from ..variable import Variable, numpy_dtype
from . import slices
from .base import Reader, numpy_shape
from .protos import (SAVED_TENSOR_SLICES, TENSOR_KINDS, decode, raw_extents, repeated_array,
                     tensor_type)
from .sstable import Table

# dtype -> TensorProto field holding its values when tensor_content is empty
_VALUE_FIELD = {
    "float32": "float_val", "float64": "double_val", "int64": "int64_val", "bool": "bool_val",
    "complex64": "scomplex_val", "complex128": "dcomplex_val", "float16": "half_val",
    "bfloat16": "half_val", "uint32": "uint32_val", "uint64": "uint64_val",
}


# ends one file of a sharded save (-SSSSS-of-NNNNN), or the pattern naming them (-?????-of-NNNNN)
SHARD_SUFFIX = re.compile(r"-(\d{5}|\?{5})-of-(\d{5,})\Z")


def shard_pattern(path):
    """`NAME-?????-of-NNNNN` when `path` is that pattern or one file of a save in several;
    else None (the one file of a one-shard save is the whole checkpoint)."""
    m = SHARD_SUFFIX.search(path)
    if m is None:
        return None
    shard, count = m.groups()
    if shard != "?????" and (int(count) == 1 or int(shard) >= int(count)):
        return None
    return f"{path[:m.start()]}-?????-of-{count}"


def shard_paths(path):
    """The files of the V1 checkpoint `path`: the file itself, or each shard a pattern names."""
    m = SHARD_SUFFIX.search(path)
    if m is None or m.group(1) != "?????":
        return [path]
    return [f"{path[:m.start()]}-{i:05d}-of-{m.group(2)}" for i in range(int(m.group(2)))]


class TFV1Reader(Reader):
    format = "tf-v1"

    def __init__(self, path):
        super().__init__(path)
        self.files = shard_paths(path)
        missing = [f for f in self.files if not os.path.isfile(f)]
        if missing:
            raise NotFound(f"{path}: missing {len(missing)} of its {len(self.files)} shard "
                           f"files ({', '.join(missing[:3])}{', ...' * (len(missing) > 3)}); "
                           "a tensor may be stored in any shard, so none is read")
        self._tables = [Table(f) for f in self.files]
        found = {}   # name -> (dtype, shape, nbytes, slices, indexes of the tables holding it)
        for i, table in enumerate(self._tables):
            for t in _tensor_list(table):
                name = t.get("name", "")
                try:
                    dtype, itemsize, shape, nelem = tensor_type(t.get("dtype", 0),
                                                                t.get("shape", {}))
                except FormatError as e:
                    raise FormatError(f"{table.path}: tensor {name!r} {e}") from None
                parts = [slices.explicit(raw_extents(s, len(shape)), shape)
                         for s in t.get("slice", [])]
                known = found.setdefault(name, (dtype, shape, nelem * itemsize, [], []))
                if known[:2] != (dtype, shape):
                    raise FormatError(f"{table.path}: tensor {name!r} is {dtype} "
                                      f"{list(shape)} here but {known[0]} {list(known[1])} in "
                                      "another shard")
                known[3].extend(parts)
                known[4].append(i)
        for name in sorted(found):
            dtype, shape, nbytes, parts, where = found[name]
            partitioned = tuple(parts) if len(parts) > 1 else ()
            self.variables[name] = Variable(name, shape, dtype, nbytes, partitioned,
                                            tuple(where))

    def read(self, name):
        var = self.variable(name)
        numpy_shape(f"{self.path}: tensor {name!r}", var.shape, numpy_dtype(var.dtype))
        prefix = slices.name_prefix(name)
        pieces = []
        for table in (self._tables[i] for i in var.where):
            for key, value in table.items(start=prefix):
                if not key.startswith(prefix):
                    break
                data = decode(value, SAVED_TENSOR_SLICES, f"{table.path}: data of {name!r}"
                              ).get("data", {})
                extents = slices.explicit(raw_extents(data.get("slice", {}), len(var.shape)),
                                          var.shape)
                shape = tuple(n for _, n in extents)
                pieces.append((extents, _tensor_values(name, var.dtype, shape,
                                                       data.get("data", {}))))
        if not pieces:
            raise FormatError(f"tensor {name!r} is listed but no data is stored for it")
        if len(pieces) == 1 and pieces[0][1].shape == var.shape:
            return pieces[0][1]
        return slices.assemble(var.shape, numpy_dtype(var.dtype), pieces, name)

    def problems(self, progress=None):
        """Every block's checksum in every shard, then every tensor's decoding."""
        broken = False
        for table in self._tables:
            try:
                for _ in table.items():
                    pass
            except CkptError as e:
                broken = True
                yield str(e)
        if not broken:
            yield from super().problems(progress)

    def release(self):
        release_maps(*(table.buf for table in self._tables))

    def close(self):
        for table in self._tables:
            table.close()


def _tensor_list(table):
    """The tensors (name, dtype, shape, slices) a V1 file's first entry lists."""
    first = next(table.items(), None)
    meta = None
    if first is not None and first[0] == b"":
        meta = decode(first[1], SAVED_TENSOR_SLICES, f"{table.path}: tensor list").get("meta")
    if meta is None:
        raise FormatError(f"{table.path}: no tensor list (not a V1 checkpoint)")
    return meta.get("tensor", [])


def _tensor_values(name, dtype, shape, proto):
    """A TensorProto's values as an array of `shape`: from tensor_content, or from the typed
    repeated field TF's V1 writer fills (float_val, int_val, half_val bit patterns, ...)."""
    import numpy as np

    if dtype in ("resource", "variant"):
        raise Unsupported(f"tensor {name!r} is a {dtype} tensor, which has no portable value")
    nelem = prod(shape)
    npd = numpy_dtype(dtype)
    if "content" in proto and dtype != "string":
        content = proto["content"]
        if len(content) != nelem * npd.itemsize:
            raise Corrupt(f"tensor {name!r}: {len(content)} bytes do not hold shape "
                          f"{list(shape)}")
        return np.frombuffer(content, dtype=npd).reshape(shape)
    if dtype == "string":
        values = proto.get("string_val", [])
        arr = np.empty(len(values), dtype=object)
        arr[:] = [bytes(v) for v in values]
    else:
        kind = _VALUE_FIELD.get(dtype, "int_val")
        raw = repeated_array(proto.get(kind, []), TENSOR_KINDS[kind])
        if dtype in ("float16", "bfloat16"):
            arr = raw.astype(np.uint16).view(npd)
        elif dtype in ("complex64", "complex128"):
            arr = raw.view(npd)
        elif raw.dtype == np.uint64:
            arr = raw.view(np.int64).astype(npd)   # varints carry two's complement
        else:
            arr = raw.astype(npd, copy=False)
    if arr.size != nelem:
        raise Corrupt(f"tensor {name!r}: {arr.size} values stored for shape {list(shape)}")
    return arr.reshape(shape)
