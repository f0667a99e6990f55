"""TF V1 checkpoints (2015-2017): one sstable file of SavedTensorSlices messages.

- key "" holds SavedTensorSlices.meta: every tensor's name, full shape, dtype and the slices
  saved for it (a whole tensor is one slice covering every dimension).
- every other key is a slice key (slices.py) whose value is SavedTensorSlices.data: the
  tensor name, the slice, and a TensorProto with the values in its typed repeated field
  (float_val, int_val, ...) or in tensor_content.
Notes: large tensors may be split into several slices even when not partitioned; slices of
one tensor share a key prefix, so reading one tensor seeks to it and reads no other.
"""

from math import prod

from ..errors import Corrupt, CkptError, FormatError, Unsupported
from ..fileio import release_maps
from ..variable import Variable, numpy_dtype
from . import slices
from .base import Reader
from .protos import (SAVED_TENSOR_SLICES, TENSOR_KINDS, decode, raw_extents, repeated_array,
                     tensor_type)
from .sstable import Table

# dtype -> TensorProto field holding its values when tensor_content is empty
_VALUE_FIELD = {
    "float32": "float_val", "float64": "double_val", "int64": "int64_val", "bool": "bool_val",
    "complex64": "scomplex_val", "complex128": "dcomplex_val", "float16": "half_val",
    "bfloat16": "half_val", "uint32": "uint32_val", "uint64": "uint64_val",
}


class TFV1Reader(Reader):
    format = "tf-v1"

    def __init__(self, path):
        super().__init__(path)
        self.files = [path]
        self._table = Table(path)
        first = next(self._table.items(), None)
        if first is None or first[0] != b"":
            raise FormatError(f"{path}: no tensor list (not a V1 checkpoint)")
        meta = decode(first[1], SAVED_TENSOR_SLICES, f"{path}: tensor list").get("meta")
        if meta is None:
            raise FormatError(f"{path}: no tensor list (not a V1 checkpoint)")
        for t in sorted(meta.get("tensor", []), key=lambda t: t.get("name", "")):
            name = t.get("name", "")
            try:
                dtype, itemsize, shape, nelem = tensor_type(t.get("dtype", 0),
                                                            t.get("shape", {}))
            except FormatError as e:
                raise FormatError(f"{path}: tensor {name!r} {e}") from None
            parts = tuple(slices.explicit(raw_extents(s, len(shape)), shape)
                          for s in t.get("slice", []))
            partitioned = parts if len(parts) > 1 else ()
            self.variables[name] = Variable(name, shape, dtype, nelem * itemsize, partitioned)

    def read(self, name):
        var = self.variable(name)
        prefix = slices.name_prefix(name)
        pieces = []
        for key, value in self._table.items(start=prefix):
            if not key.startswith(prefix):
                break
            data = decode(value, SAVED_TENSOR_SLICES, f"{self.path}: data of {name!r}").get(
                "data", {})
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
        """Every block's checksum, then every tensor's decoding."""
        try:
            for _ in self._table.items():
                pass
        except CkptError as e:
            yield str(e)
            return
        yield from super().problems(progress)

    def release(self):
        release_maps(self._table.buf)

    def close(self):
        self._table.close()


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
