"""safetensors files (Hugging Face): a JSON header, then every tensor's raw bytes.

- bytes 0..8: N, the header length, unsigned 64-bit little-endian.
- bytes 8..8+N: UTF-8 JSON object (padded with spaces): `{NAME: {"dtype": "F32",
  "shape": [2, 3], "data_offsets": [BEGIN, END]}, ..., "__metadata__": {str: str}}`.
- then the byte buffer: tensor NAME is bytes BEGIN..END of it (offsets count from 8+N),
  C order, little-endian; END-BEGIN is exactly elements x item size.
- dtypes: BOOL U8 I8 U16 I16 F16 BF16 U32 I32 F32 C64 U64 I64 F64, F8_E4M3 (float8_e4m3fn),
  F8_E5M2 (float8_e5m2).
Notes: scalars have shape [] and empty tensors BEGIN == END; tensors may not overlap; the
optional `__metadata__` is free text (kept as `metadata`); where `ckptkit port --to torch`
wrote the file, its "ckptkit" entry is a JSON object naming the checkpoint, the net, the
PyTorch class to load into and each key's checkpoint tensor (`origin` and `sources`; one not
shaped so is set aside with a warning). Sub-byte and other newer dtypes
(F4, F6_*, F8_E8M0) are refused. A shape numpy cannot make (over 64 dimensions; [0, 2**62],
which has no elements but passes numpy's byte limit) lists, but reading it is refused. N is
at most 100 MiB (MAX_HEADER, as safetensors' own reader): the writer refuses a larger header
(long names) before writing.
"""
import json
import os
from math import prod

from ..errors import FormatError, NotFound, Unsupported
from ..fileio import map_file, unmap
from ..variable import ITEMSIZE, Variable, numpy_dtype
from .base import Reader, Writer, numpy_shape
from .keras_meta import SET_ASIDE


DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
          "F16": "float16", "BF16": "bfloat16", "U32": "uint32", "I32": "int32",
          "F32": "float32", "C64": "complex64", "U64": "uint64", "I64": "int64",
          "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
MAX_HEADER = 100 << 20


class SafetensorsReader(Reader):
    format = "safetensors"

    def __init__(self, path):
        super().__init__(path)
        self.files = [path]
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                n = int.from_bytes(head, "little")
                if len(head) < 8 or n > min(size - 8, MAX_HEADER):
                    raise FormatError(f"{path} is not a safetensors file: its header length "
                                      f"{n} does not fit a {size}-byte file (truncated?)")
                raw = f.read(n)
        except OSError as e:
            raise NotFound(f"cannot read {path}: {e.strerror}") from None
        self._start = 8 + n
        header = self._header(raw)
        self.metadata = header.pop("__metadata__", {})
        if not isinstance(self.metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise FormatError(f"{path}: __metadata__ must map strings to strings")
        found = [self._variable(name, entry, size - self._start)
                 for name, entry in header.items()]
        _check_overlaps(path, found)
        for var in sorted(found, key=lambda v: v.name):
            self.variables[var.name] = var
        if "ckptkit" in self.metadata:
            try:
                self.origin, self.sources = _port_record(self.metadata["ckptkit"],
                                                         self.variables)
            except ValueError as e:
                self.warnings.append(f"{path}: {e}; {SET_ASIDE}")
        self._map = map_file(path)

    def _header(self, raw):
        def no_duplicates(pairs):
            seen = set()
            for key, _ in pairs:
                if key in seen:
                    raise FormatError(f"{self.path}: the header repeats key {key!r}")
                seen.add(key)
            return dict(pairs)

        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise FormatError(f"{self.path} is not a safetensors file: its header is not "
                              f"JSON ({e})") from None
        if not isinstance(header, dict):
            raise FormatError(f"{self.path}: the header is not a JSON object")
        return header

    def _variable(self, name, entry, buffer_size):
        """One header entry, checked against the buffer."""
        where = f"{self.path}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: entry must hold exactly dtype, shape, data_offsets")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(code, str) or code not in DTYPES:
            raise Unsupported(f"{where} has dtype {code!r}; ckptkit reads "
                              f"{', '.join(DTYPES)}")
        if not _ints(shape) or not _ints(offsets) or len(offsets) != 2:
            raise FormatError(f"{where}: shape {shape} or data_offsets {offsets} is not a list "
                              "of non-negative integers")
        dtype = DTYPES[code]
        begin, end = offsets
        nbytes = prod(shape) * ITEMSIZE[dtype]
        if not begin <= end <= buffer_size:
            raise FormatError(f"{where}: data_offsets {offsets} lie outside the "
                              f"{buffer_size}-byte buffer (truncated file?)")
        if end - begin != nbytes:
            raise FormatError(f"{where} claims shape {shape} {dtype} ({nbytes} bytes) but "
                              f"data_offsets {offsets} span {end - begin} bytes")
        return Variable(name, tuple(shape), dtype, nbytes, where=begin)

    def read(self, name):
        import numpy as np

        var = self.variable(name)
        dtype = numpy_dtype(var.dtype).newbyteorder("<")
        numpy_shape(f"{self.path}: tensor {name!r}", var.shape, dtype)
        return np.frombuffer(self._map, dtype, var.size,
                             offset=self._start + var.where).reshape(var.shape)

    def close(self):
        unmap(self._map)


def _port_record(text, variables):
    """(origin {"checkpoint", "net", "class"}, sources {key: checkpoint tensor}) of the
    "ckptkit" metadata entry `text`; ValueError saying why it cannot be used."""
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        record = None
    fields = ("checkpoint", "net", "class")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in fields):
        raise ValueError("its ckptkit metadata is not the JSON object `ckptkit port --to "
                         "torch` writes")
    weights = record.get("weights")
    if not isinstance(weights, dict) or not all(
            isinstance(source, (str, type(None))) for source in weights.values()):
        raise ValueError("its ckptkit metadata's weights are not a mapping of keys to "
                         "checkpoint tensor names")
    lacking = [key for key in weights if key not in variables]
    if lacking:
        raise ValueError(f"its ckptkit metadata names {len(lacking)} key(s) the file lacks "
                         f"(first {lacking[0]!r})")
    return ({k: record[k] for k in fields},
            {key: source for key, source in weights.items() if source is not None})


def _ints(values):
    """A JSON list of non-negative integers (JSON's true/false are not sizes)."""
    return isinstance(values, list) and all(type(v) is int and v >= 0 for v in values)


def _check_overlaps(path, variables):
    """Tensors may not share bytes; an empty tensor overlaps nothing."""
    spans = sorted((v.where, v.where + v.nbytes, v.name) for v in variables if v.nbytes)
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise FormatError(f"{path}: tensors {first!r} and {second!r} overlap in the buffer")


SAFETENSORS_CODES = {name: code for code, name in DTYPES.items()}


class SafetensorsWriter(Writer):
    """The header from `begin` (every name, dtype, shape and offset is known before any
    byte is written), then the tensors in that order, little-endian, in chunks. Names are
    sorted as safetensors' own writer does; strings and other dtypes it lacks are refused.
    `metadata` ({str: str}) is the header's `__metadata__`."""

    format = "safetensors"

    def __init__(self, path, metadata=None):
        super().__init__(path)
        self._f = self.temp(path)
        self._expect = []
        self._metadata = dict(metadata or {})

    def begin(self, specs):
        header, offset = ({"__metadata__": self._metadata} if self._metadata else {}), 0
        for name, shape, dtype in specs:
            if dtype not in SAFETENSORS_CODES:
                raise Unsupported(f"tensor {name!r} is {dtype}, which safetensors cannot hold "
                                  f"(it holds {', '.join(sorted(SAFETENSORS_CODES))})")
            nbytes = prod(shape) * ITEMSIZE[dtype]
            header[name] = {"dtype": SAFETENSORS_CODES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            self._expect.append((name, tuple(shape), dtype))
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        if len(raw) > MAX_HEADER:
            raise Unsupported(f"the safetensors header of {self.path} would be {len(raw)} "
                              f"bytes; readers take at most {MAX_HEADER} (are some names "
                              "megabytes long?); write a V2 checkpoint instead")
        self._f.write(len(raw).to_bytes(8, "little") + raw)
        self._expect.reverse()

    def add(self, name, array):
        import numpy as np

        from ..variable import dtype_name

        spec = (name, tuple(array.shape), dtype_name(array.dtype))
        if not self._expect or self._expect[-1] != spec:
            raise FormatError(f"safetensors writer: got {spec}, expected "
                              f"{self._expect[-1] if self._expect else 'nothing'}")
        self._expect.pop()
        flat = np.ascontiguousarray(array).reshape(-1)
        if flat.dtype.byteorder == ">":
            flat = flat.astype(flat.dtype.newbyteorder("<"))
        raw = flat.view(np.uint8)
        for start in range(0, raw.size, 8 << 20):
            self._f.write(raw[start:start + (8 << 20)])

    def finish(self):
        if self._expect:
            raise FormatError(f"safetensors writer: {len(self._expect)} tensors never came")
