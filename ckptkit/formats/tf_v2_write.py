"""Writing TF V2 bundles (`P.index` + `P.data-SSSSS-of-NNNNN`), as tf.train.Saver does.

- each tensor's bytes go to one data shard, back to back: numeric tensors C order,
  little-endian; string tensors as varint64 lengths, the masked crc32c of the lengths taken
  as uint32s, then the bytes (tf_v2.py has the reading side).
- the index is a table (sstable.TableWriter): "" -> BundleHeaderProto (num_shards, version
  producer 1), then every name in byte order -> BundleEntryProto (dtype, shape, shard_id,
  offset, size, masked crc32c of the bytes as TF computes it).
- with several shards a tensor goes to the shard holding the fewest bytes so far.
Notes: a partitioned variable is written whole (no slices). A tensor copied from another V2
bundle keeps its stored bytes and its crc32c (nothing decoded). resource/variant tensors
cannot be written. Data shards are renamed into place before the index, so a prefix is
visible only once complete; the `checkpoint` state file (fileio.write_state) comes after that.
"""
import os

import google_crc32c

from ..errors import CkptError, FormatError, Unsupported
from ..fileio import open_regular
from ..variable import TF_DTYPES, dtype_name
from .base import Writer
from .protos import encode_entry, encode_header, encode_varint
from .sstable import TableWriter, mask_crc
from .tf_v2 import TFV2Reader, shard_name

TF_CODES = {name: code for code, (name, _) in TF_DTYPES.items()}
_CHUNK = 8 << 20


class TFV2Writer(Writer):
    format = "tf-v2"

    def __init__(self, prefix, shards=1):
        super().__init__(prefix)
        if not 1 <= shards <= 99999:
            raise CkptError(f"--shards must be 1..99999, not {shards}")
        self.num_shards = shards
        self._data = [self.temp(shard_name(prefix, i, shards), buffering=0)
                      for i in range(shards)]
        self._sizes = [0] * shards
        self._entries = {}   # key bytes -> BundleEntryProto bytes
        self._sources = {}   # source data file -> fd
        self._run = None     # [source fd, start, end, shard]: copied bytes not yet written

    def _slot(self, name, nbytes):
        key = name.encode("utf-8")
        if key in self._entries or not key:
            raise FormatError(f"tensor name {name!r} is empty or written twice")
        if self.num_shards == 1:
            return key, 0
        return key, min(range(self.num_shards), key=self._sizes.__getitem__)

    def _record(self, key, dtype, shape, shard, size, crc):
        self._entries[key] = encode_entry(TF_CODES[dtype], shape, shard, self._sizes[shard],
                                          size, crc)
        self._sizes[shard] += size

    def add(self, name, array):
        import numpy as np

        dtype = dtype_name(array.dtype)
        if dtype not in TF_CODES or dtype in ("resource", "variant"):
            raise Unsupported(f"tensor {name!r}: a V2 bundle cannot hold dtype {array.dtype}")
        key, shard = self._slot(name, array.nbytes)
        self._copy_run()
        f = self._data[shard]
        if dtype == "string":
            data, crc = string_bytes(array)
            _write_all(f, data)
            self._record(key, dtype, array.shape, shard, len(data), mask_crc(crc))
            return
        flat = np.ascontiguousarray(array).reshape(-1)
        if flat.dtype.byteorder == ">" or (flat.dtype.byteorder == "=" and
                                           np.little_endian is False):
            flat = flat.astype(flat.dtype.newbyteorder("<"))
        raw = flat.view(np.uint8)
        crc = 0
        for start in range(0, raw.size, _CHUNK):
            chunk = raw[start:start + _CHUNK]
            crc = google_crc32c.extend(crc, chunk)
            _write_all(f, chunk)
        self._record(key, dtype, array.shape, shard, raw.size, mask_crc(crc))

    def copy(self, reader, var, name):
        """The stored bytes of an unsliced little-endian V2 tensor, with its crc32c (checked
        first: corrupt bytes are not passed on as a sound tensor). Bytes that continue the
        previous copy's, from the same file into the same shard, join its run: one
        copy_file_range per run, not per tensor."""
        if not isinstance(reader, TFV2Reader) or var.slices or reader.big_endian or \
                var.dtype not in TF_CODES or var.dtype in ("resource", "variant"):
            return False
        entry = var.where[0]
        _, offset, size = reader.checked_bytes(var.name, var.dtype, var.shape, entry)
        source = reader.data_paths[entry.get("shard_id", 0)]
        key, shard = self._slot(name, size)
        fd = self._sources.get(source)
        if fd is None:
            fd = self._sources[source] = open_regular(source)
        run = self._run
        if run is not None and run[0] == fd and run[2] == offset and run[3] == shard:
            run[2] += size
        else:
            self._copy_run()
            self._run = [fd, offset, offset + size, shard]
        self._record(key, var.dtype, var.shape, shard, size, entry.get("crc32c", 0))
        return True

    def _copy_run(self):
        """Write the pending run of copied bytes to its shard."""
        if self._run is not None:
            fd, start, end, shard = self._run
            self._run = None
            _copy_range(fd, self._data[shard].fileno(), start, end - start)

    def finish(self):
        self._copy_run()
        self._close_sources()
        index = self.temp(self.path + ".index")
        table = TableWriter(index)
        table.add(b"", encode_header(self.num_shards))
        entries = self._entries
        table.extend((key, entries[key]) for key in sorted(entries))
        table.finish()

    def abort(self):
        self._run = None
        self._close_sources()
        super().abort()

    def _close_sources(self):
        for fd in self._sources.values():
            os.close(fd)
        self._sources = {}


def string_bytes(array):
    """(stored bytes, crc32c before masking) of a string tensor (object array of bytes)."""
    values = [v if isinstance(v, bytes) else
              v.encode("utf-8") if isinstance(v, str) else bytes(v)
              for v in array.reshape(-1).tolist()]
    lengths = b"".join(encode_varint(len(v)) for v in values)
    crc = google_crc32c.value(b"".join(min(len(v), 0xFFFFFFFF).to_bytes(4, "little")
                                       for v in values))
    check = mask_crc(crc).to_bytes(4, "little")
    crc = google_crc32c.extend(crc, check)
    for v in values:
        crc = google_crc32c.extend(crc, v)
    return lengths + check + b"".join(values), crc


def _write_all(f, data):
    view = memoryview(data).cast("B")
    while view:
        n = f.write(view)
        view = view[n:]


def _copy_range(src, dst, offset, size):
    """Append bytes offset..offset+size of fd `src` to fd `dst`: in the kernel where it can
    (copy_file_range), else through a fixed buffer; memory stays flat either way."""
    end = offset + size
    if hasattr(os, "copy_file_range"):
        try:
            while offset < end:
                n = os.copy_file_range(src, dst, min(end - offset, 1 << 30), offset)
                if n == 0:
                    raise FormatError("source data file ended early")
                offset += n
            return
        except OSError:
            pass   # e.g. not supported across these file systems: copy by hand
    while offset < end:
        chunk = os.pread(src, min(end - offset, _CHUNK), offset)
        if not chunk:
            raise FormatError("source data file ended early")
        _write_all_fd(dst, chunk)
        offset += len(chunk)


def _write_all_fd(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
