"""The one Variable record every reader yields, and the dtype table.

dtype names are numpy's (`float32`, `bfloat16`, `string` for tf.string). Numpy is imported only
when a value is read, so listing a checkpoint never pays for it.
"""
from math import prod

# TF DataType enum -> (numpy-style name, bytes per element; 0 = variable-length)
TF_DTYPES = {
    1: ("float32", 4), 2: ("float64", 8), 3: ("int32", 4), 4: ("uint8", 1), 5: ("int16", 2),
    6: ("int8", 1), 7: ("string", 0), 8: ("complex64", 8), 9: ("int64", 8), 10: ("bool", 1),
    11: ("qint8", 1), 12: ("quint8", 1), 13: ("qint32", 4), 14: ("bfloat16", 2),
    15: ("qint16", 2), 16: ("quint16", 2), 17: ("uint16", 2), 18: ("complex128", 16),
    19: ("float16", 2), 20: ("resource", 0), 21: ("variant", 0), 22: ("uint32", 4),
    23: ("uint64", 8), 24: ("float8_e5m2", 1), 25: ("float8_e4m3fn", 1),
    26: ("float8_e4m3fnuz", 1), 27: ("float8_e4m3b11fnuz", 1), 28: ("float8_e5m2fnuz", 1),
    29: ("int4", 1), 30: ("uint4", 1), 31: ("int2", 1), 32: ("uint2", 1),   # a byte each
}
ITEMSIZE = {name: size for name, size in TF_DTYPES.values()}
# quantized TF types are stored as their plain integer twins
_STORAGE = {"qint8": "int8", "quint8": "uint8", "qint16": "int16", "quint16": "uint16",
            "qint32": "int32"}
# numeric dtypes numpy holds through ml_dtypes (their numpy kind is "V")
ML_DTYPES = {"bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz",
             "float8_e4m3b11fnuz", "float8_e5m2fnuz", "int4", "uint4", "int2", "uint2"}


def numpy_dtype(name):
    """The numpy dtype that holds a tensor of dtype `name` (ml_dtypes for bfloat16/float8)."""
    import numpy as np

    name = _STORAGE.get(name, name)
    if name in ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    if name == "string":
        return np.dtype(object)
    return np.dtype(name)


def dtype_name(dtype):
    """Our name for a numpy dtype (bytes/str arrays count as `string`)."""
    if dtype.kind in "OSU":
        return "string"
    return dtype.name


class Variable:
    """A tensor in a checkpoint: what it is, not its value.

    `slices` lists the saved pieces of a partitioned variable as ((start, length), ...) per
    piece, one pair per dimension; `where` is the reader's own pointer to the bytes, left out
    of equality, hash and repr. A plain slotted class, not a frozen dataclass: readers make
    one per tensor, and a frozen dataclass takes 4x as long to make (300,000 of them: 0.3 s).
    Never modified once made.
    """

    __slots__ = ("name", "shape", "dtype", "nbytes", "slices", "where")

    def __init__(self, name, shape, dtype, nbytes, slices=(), where=None):
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.nbytes = nbytes
        self.slices = slices
        self.where = where

    def _key(self):
        return self.name, self.shape, self.dtype, self.nbytes, self.slices

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return (f"Variable(name={self.name!r}, shape={self.shape!r}, dtype={self.dtype!r}, "
                f"nbytes={self.nbytes!r}, slices={self.slices!r})")

    @property
    def size(self):
        """Number of elements."""
        return prod(self.shape)

    def to_json(self):
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
               "nbytes": self.nbytes}
        if self.slices:
            out["slices"] = [[list(e) for e in extents] for extents in self.slices]
        return out
