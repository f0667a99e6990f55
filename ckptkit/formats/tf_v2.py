"""TF V2 checkpoint bundles: `P.index` plus `P.data-SSSSS-of-NNNNN` shards.

- `P.index` is an sstable (see sstable.py). Key "" holds a BundleHeaderProto (num_shards,
  endianness, version); every other key is a tensor name whose value is a BundleEntryProto
  (dtype, shape, shard_id, offset, size, masked crc32c of the bytes, slices).
- a numeric tensor is `size` raw bytes at `offset` in its shard, C order, in the header's
  endianness; `size` must equal elements x item size.
- a string tensor is varint64 lengths of all elements, a 4-byte masked crc32c of those
  length bytes, then the strings back to back.
Notes: scalars have an empty shape; empty tensors have size 0. A partitioned variable has an
entry with its full shape and `slices` but no bytes; each slice's bytes sit under an
OrderedCode key (slices.py), which sorts before all names and is not listed as a tensor.
Index-only checkpoints (data shards absent) list fine; reading a value names the missing file.
Reading a value checks its crc32c, as TF's BundleReader does, so a flipped byte is an error
rather than a wrong number.
"""
import functools
import os
from math import prod

import google_crc32c

from ..errors import Corrupt, FormatError, NotFound, Unsupported
from ..fileio import map_file, release_maps, unmap
from ..variable import Variable, numpy_dtype
from . import slices
from .base import Reader, no_cyclic_gc, numpy_shape
from .protos import BUNDLE_HEADER, decode, decode_entry, raw_extents, tensor_type
from .sstable import Table, unmask_crc


GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_NO_SHAPE = {}   # an entry without a shape: a scalar


def shard_name(prefix, shard, num_shards):
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


class TFV2Reader(Reader):
    format = "tf-v2"

    def __init__(self, prefix):
        super().__init__(prefix)
        self.index_path = prefix + ".index"
        self._table = Table(self.index_path)
        self._slice_entries = {}
        self._shards = {}
        self._views = {}   # (id of a shard map, dtype, offset % item size) -> typed view
        self._holdable_kinds = set()
        entries = self._table.items()
        first = next(entries, None)
        if first is None or first[0] != b"":
            raise FormatError(f"{self.index_path}: no bundle header (not a V2 checkpoint index)")
        header = decode(first[1], BUNDLE_HEADER, f"{self.index_path}: bundle header")
        self.num_shards = header.get("num_shards", 0)
        self.big_endian = header.get("endianness", 0) == 1
        if not 0 <= self.num_shards <= 100000:
            raise FormatError(f"{self.index_path}: absurd shard count {self.num_shards}")
        self.data_paths = [shard_name(prefix, i, self.num_shards)
                           for i in range(self.num_shards)]
        self.files = [self.index_path] + self.data_paths
        variables = self.variables
        with no_cyclic_gc():   # ~a million small objects for a big index, none of them cyclic
            self._read_entries(entries)
        if GRAPH_KEY in variables:
            self.format = "tf-object"   # the object graph is read by tf_object.objects()

    def _read_entries(self, entries):
        variables = self.variables
        types = {}   # (dtype code, id of a shape message) -> tensor_type's answer, the message
        for key, value in entries:
            try:
                entry = decode_entry(value)
            except FormatError as e:
                raise type(e)(f"{self.index_path}: entry {key!r}: {e}") from None
            if key[:1] == b"\x00":
                self._slice_entries[key] = entry
                continue
            name = key.decode("utf-8", "backslashreplace")
            variables[name] = self._variable(name, entry, types)

    def _variable(self, name, entry, types):
        """The Variable of one entry; `types` remembers tensor_type per shape message, which
        decode_entry shares among the entries of one shape (the message held there keeps
        its id from being reused)."""
        shape_msg = entry.get("shape", _NO_SHAPE)
        kind = (entry.get("dtype", 0), id(shape_msg))
        known = types.get(kind)
        if known is None:
            try:
                known = types[kind] = (*tensor_type(kind[0], shape_msg), shape_msg)
            except FormatError as e:
                raise FormatError(f"{self.index_path}: tensor {name!r} {e}") from None
        dtype, itemsize, shape, nelem, _ = known
        size = entry.get("size", 0)
        if entry.get("slices"):
            raw = tuple(raw_extents(s, len(shape)) for s in entry["slices"])
            return Variable(name, shape, dtype, nelem * itemsize,
                            tuple(slices.explicit(r, shape) for r in raw), (entry, raw))
        if size < 0:
            raise Corrupt(f"{self.index_path}: tensor {name!r} claims {size} bytes")
        if itemsize and size != nelem * itemsize:
            raise Corrupt(f"{self.index_path}: tensor {name!r} claims shape {list(shape)} "
                          f"{dtype} ({nelem * itemsize} bytes) but holds {size} bytes")
        shard = entry.get("shard_id", 0)
        shards = self.num_shards if size else max(self.num_shards, 1)   # 0: nothing stored
        if not 0 <= shard < shards or entry.get("offset", 0) < 0:
            raise Corrupt(f"{self.index_path}: tensor {name!r} points at shard {shard} "
                              f"offset {entry.get('offset', 0)}; the bundle has "
                              f"{self.num_shards} shards")
        return Variable(name, shape, dtype, size, (), (entry, None))

    def _map_shard(self, shard):
        """Map data file `shard`, once (_located looks in self._shards first)."""
        path = self.data_paths[shard] if shard < len(self.data_paths) else None
        if path is None or not os.path.isfile(path):
            raise NotFound(f"data file {path} is missing (the index lists tensors stored "
                           "there; was only the .index copied?)")
        buf = self._shards[shard] = map_file(path)
        return buf

    def checked_bytes(self, name, dtype, shape, entry):
        """The stored bytes of one entry as (buffer, offset, size), bounds-checked against its
        shard file and crc32c-checked against the entry."""
        buf, offset, size = self._located(name, entry)
        if _checksum(name, dtype, shape, buf, offset, size) != unmask_crc(entry.get("crc32c", 0)):
            self._crc_mismatch(name, entry)
        return buf, offset, size

    def _located(self, name, entry):
        """(shard map, offset, size) of an entry's bytes, which must lie inside the shard."""
        get = entry.get
        shard, offset, size = get("shard_id", 0), get("offset", 0), get("size", 0)
        buf = self._shards.get(shard)
        if buf is None:
            buf = self._map_shard(shard)
        if offset + size > len(buf):
            raise Corrupt(f"tensor {name!r}: bytes {offset}..{offset + size} lie past the end "
                          f"of {self.data_paths[shard]} ({len(buf)} bytes)")
        return buf, offset, size

    def _crc_mismatch(self, name, entry):
        raise Corrupt(f"{name}: crc32c mismatch: its bytes in "
                      f"{self.data_paths[entry.get('shard_id', 0)]} are corrupt")

    def _holdable(self, var):
        """Unsupported unless numpy can hold the tensor's value; remembered per shape and
        dtype, which repeat."""
        kind = (var.shape, var.dtype)
        if kind in self._holdable_kinds:
            return
        if var.dtype in ("resource", "variant"):
            raise Unsupported(f"tensor {var.name!r} is a {var.dtype} tensor, which has no "
                              "portable value")
        numpy_shape(f"{self.path}: tensor {var.name!r}", var.shape, numpy_dtype(var.dtype))
        self._holdable_kinds.add(kind)

    def read(self, name):
        var = self.variable(name)
        self._holdable(var)
        if not var.slices:
            return self._array(name, var.dtype, var.shape, var.where[0])
        pieces = []
        for (entry, shape), extents in zip(self._pieces(var), var.slices or [None]):
            if entry is None:
                raise FormatError(f"tensor {name!r}: slice {list(extents)} is listed but "
                                  "not stored")
            pieces.append((extents, self._array(name, var.dtype, shape, entry)))
        return slices.assemble(var.shape, numpy_dtype(var.dtype), pieces, name)

    def _array(self, name, dtype, shape, entry):
        """One stored piece as an array viewing the shard map; the crc32c is taken over that
        array's own bytes, not over a second view of them."""
        if dtype == "string":
            buf, offset, size = self.checked_bytes(name, dtype, shape, entry)
            return _strings(name, buf[offset:offset + size], shape)
        npd = _stored_dtype(dtype, self.big_endian)
        buf, offset, size = self._located(name, entry)
        count, rest = divmod(size, npd.itemsize)
        if rest or count != prod(shape):
            self.checked_bytes(name, dtype, shape, entry)   # a bad crc32c is named first
            raise Corrupt(f"tensor {name!r}: {size} bytes do not hold shape {list(shape)}")
        values = self._typed(buf, npd, offset, count)
        if google_crc32c.value(values) != unmask_crc(entry.get("crc32c", 0)):
            self._crc_mismatch(name, entry)
        if not count:
            import numpy as np

            return np.empty(shape, numpy_dtype(dtype))
        return values.reshape(shape)

    def _typed(self, buf, npd, offset, count):
        """`count` items of dtype `npd` at byte `offset` of a shard map: a slice of one
        view of the whole map per dtype and byte skew, which costs a fraction of a
        frombuffer per tensor (the maps, and so their ids, last as long as the reader)."""
        start, skew = divmod(offset, npd.itemsize)
        key = (id(buf), npd, skew)
        whole = self._views.get(key)
        if whole is None:
            import numpy as np

            whole = self._views[key] = np.frombuffer(buf, npd, (len(buf) - skew) //
                                                     npd.itemsize, skew)
        return whole[start:start + count]

    def _pieces(self, var):
        """(entry or None, shape) for each stored piece of a variable."""
        entry, raw = var.where
        if not var.slices:
            return [(entry, var.shape)]
        return [(self._slice_entries.get(slices.slice_key(var.name, r)),
                 tuple(n for _, n in extents)) for r, extents in zip(raw, var.slices)]

    def problems(self, progress=None):
        """Check every tensor's crc32c and bounds, and that every shard is present."""
        for path in self.data_paths:
            if not os.path.isfile(path):
                yield f"missing data file {path}"
        for var in self:
            for entry, shape in self._pieces(var):
                try:
                    if var.dtype not in ("resource", "variant"):
                        self._holdable(var)
                    if entry is None:
                        raise Corrupt("a listed slice is not stored")
                    self.checked_bytes(var.name, var.dtype, shape, entry)
                except NotFound:
                    pass   # reported once above, per missing file
                except (Corrupt, Unsupported) as err:
                    yield f"{var.name}: {err}" if var.name not in str(err) else str(err)
            if progress:
                progress(var.nbytes)

    def release(self):
        release_maps(*self._shards.values())

    def close(self):
        self._table.close()
        self._views.clear()   # they hold the maps open
        for buf in self._shards.values():
            unmap(buf)


def _string_lengths(name, data, n):
    """The n varint64 lengths at the start of a string tensor, and where they end."""
    lengths, pos = [], 0
    for _ in range(n):
        length = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise Corrupt(f"tensor {name!r}: string lengths run past its bytes")
            b = data[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        lengths.append(length)
    if pos + 4 + sum(lengths) > len(data):
        raise Corrupt(f"tensor {name!r}: strings run past its {len(data)} bytes")
    return lengths, pos


def _strings(name, data, shape):
    """Decode a V2 string tensor into an object array of bytes."""
    import numpy as np

    lengths, pos = _string_lengths(name, data, prod(shape))
    pos += 4   # masked crc32c of the lengths
    out = np.empty(len(lengths), dtype=object)
    for i, length in enumerate(lengths):
        out[i] = data[pos:pos + length]
        pos += length
    return out.reshape(shape)


@functools.lru_cache(maxsize=None)
def _stored_dtype(dtype, big_endian):
    """The numpy dtype of a tensor's stored bytes."""
    npd = numpy_dtype(dtype)
    return npd.newbyteorder(">") if big_endian else npd


_COPIED = 64 << 10   # bytes up to which a checksum reads a copy rather than a numpy view


def _checksum(name, dtype, shape, buf, offset, size):
    """crc32c as TF computes it: the raw bytes, except that a string tensor's lengths count as
    uint32 little-endian, not as the varints stored. Large bytes are a numpy view of the map,
    never copied (~2 GB/s); small ones are sliced out, which costs less than making a view."""
    crc, end = 0, offset + size
    if dtype == "string":
        lengths, pos = _string_lengths(name, buf[offset:end], prod(shape))
        packed = b"".join(min(n, 0xFFFFFFFF).to_bytes(4, "little") for n in lengths)
        crc, offset = google_crc32c.value(packed), offset + pos
    if end - offset <= _COPIED:
        return google_crc32c.extend(crc, buf[offset:end])
    import numpy as np

    return google_crc32c.extend(crc, np.frombuffer(buf, np.uint8, end - offset, offset))
