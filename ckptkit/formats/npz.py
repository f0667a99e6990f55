"""NumPy `.npz` archives: a zip of `.npy` files, one tensor each.

- a zip (PKWARE APPNOTE): per member a local header (`PK\\x03\\x04`, 30 bytes, then the name
  and an extra field whose length may differ from the central directory's), then the
  member's bytes; at the end the central directory. `np.savez` STOREs members,
  `np.savez_compressed` DEFLATEs them; numpy adds zip64 extras. Each member's CRC-32 of its
  uncompressed bytes is in its headers.
- member `NAME.npy` holds tensor NAME: magic `\\x93NUMPY`, version (1.0: 2-byte header
  length, 2.0: 4-byte), a Python-literal dict `{'descr': '<f4', 'fortran_order': False,
  'shape': (2, 3)}` padded with spaces, then the elements, C or Fortran order, in the descr's
  byte order; their size is exactly elements x item size.
Notes: scalars have shape (); empty arrays have no data bytes. Object arrays are pickles:
listed as dtype `object`, never unpickled. Numpy saves bfloat16 as raw `|V2`, which cannot
be told apart from other void data: listed as `void16`, read refused. Members not ending in
`.npy` are not tensors and are skipped. Headers are parsed from the mapped file, so a member
with corrupt data still lists; stored members are read as views of the map, deflated ones
are decompressed one at a time.
"""
import io
import struct
import tokenize
import warnings
import zipfile
import zlib
from math import prod

from ..errors import Corrupt, FormatError, Unsupported
from ..fileio import map_file, unmap
from ..variable import ML_DTYPES, Variable, dtype_name
from .base import Reader, Writer

# what zipfile raises on a damaged archive or member
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError,
              NotImplementedError, struct.error)
_LOCAL_HEADER = b"PK\x03\x04"
# what numpy's .npy header parser lets through on a mangled header
_HEADER_ERRORS = (ValueError, TypeError, SyntaxError, tokenize.TokenError)
_HEAD = 1 << 14   # covers numpy's largest .npy header (10000 bytes)


def data_start(buf, info, path):
    """Where a zip member's (compressed) bytes begin in the mapped archive `buf`."""
    at = info.header_offset
    head = buf[at:at + 30]
    if len(head) < 30 or head[:4] != _LOCAL_HEADER:
        raise FormatError(f"{path}: member {info.filename!r} has no local header at byte {at}")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    start = at + 30 + name_len + extra_len
    if start + info.compress_size > len(buf):
        raise Corrupt(f"{path}: member {info.filename!r} runs past the end of the file "
                      f"({len(buf)} bytes); the file is truncated")
    return start


class NpzReader(Reader):
    format = "npz"

    def __init__(self, path):
        super().__init__(path)
        self.files = [path]
        self._map = None
        self._zip = None
        try:
            self._zip = zipfile.ZipFile(path)
            self._map = map_file(path)
            found = {}
            for info in self._zip.infolist():
                if info.filename.endswith(".npy"):
                    name = info.filename[:-len(".npy")]
                    if name in found:
                        raise FormatError(f"{path}: member {info.filename!r} appears twice")
                    found[name] = self._variable(name, info)
        except ZIP_ERRORS as e:
            self.close()
            raise FormatError(f"{path} is not a readable npz (zip) file: {e}; is it truncated?"
                              ) from None
        except FormatError:
            self.close()
            raise
        for name in sorted(found):
            self.variables[name] = found[name]

    def _variable(self, name, info):
        """A member's tensor, from its .npy header alone."""
        from numpy.lib import format as npy

        member = f"{self.path}: member {info.filename!r}"
        f = io.BytesIO(self._head(member, info))
        try:
            version = npy.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise Unsupported(f"{member} is .npy version {version[0]}.{version[1]}; "
                                  "ckptkit reads 1.0 and 2.0")
            read_header = npy.read_array_header_1_0 if version == (1, 0) else \
                npy.read_array_header_2_0
            with warnings.catch_warnings():   # a mangled header makes ast warn on stderr
                warnings.simplefilter("ignore", SyntaxWarning)
                shape, fortran, dtype = read_header(f)
        except _HEADER_ERRORS as e:
            raise FormatError(f"{member} is not a .npy array: {e}") from None
        header = f.tell()
        stored = info.file_size - header
        if any(d < 0 for d in shape):
            raise FormatError(f"{member} claims shape {list(shape)}")
        if dtype.hasobject:
            return Variable(name, shape, "object", stored, where=(info, header, dtype, fortran))
        nbytes = prod(shape) * dtype.itemsize
        if nbytes != stored:
            raise FormatError(f"{member} claims shape {list(shape)} {dtype} ({nbytes} bytes) "
                              f"but holds {stored} bytes")
        return Variable(name, shape, dtype_name(dtype), nbytes,
                        where=(info, header, dtype, fortran))

    def _head(self, member, info):
        """The first bytes of a member, enough for any .npy header. Read from the map, as
        zipfile would check a small member's CRC before its header is parsed, and a corrupt
        member is for `problems` to report, not a reason to refuse the listing."""
        if info.flag_bits & 1:
            raise Unsupported(f"{member} is encrypted")
        start = data_start(self._map, info, self.path)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise FormatError(f"{member} is stored uncompressed but its sizes disagree "
                                  f"({info.compress_size} != {info.file_size})")
            return self._map[start:start + min(info.file_size, _HEAD)]
        if info.compress_type != zipfile.ZIP_DEFLATED:
            raise Unsupported(f"{member} uses zip compression method {info.compress_type}; "
                              "ckptkit reads stored and deflated members (as numpy writes)")
        try:
            return zlib.decompressobj(-zlib.MAX_WBITS).decompress(
                self._map[start:start + min(info.compress_size, _HEAD)], _HEAD)
        except zlib.error as e:
            raise Corrupt(f"{member} cannot be decompressed: {e}") from None

    def read(self, name):
        import numpy as np

        var = self.variable(name)
        info, header, dtype, fortran = var.where
        if dtype.hasobject:
            raise Unsupported(f"{self.path}: {name!r} is a pickled object array, refused "
                              "(unpickling can run code); re-save it as a numeric array")
        if dtype.kind == "V":
            raise Unsupported(f"{self.path}: {name!r} has raw dtype {dtype.str} (structured, or "
                              "bfloat16 saved by numpy, which loses the type); re-save it "
                              "with a plain numeric dtype")
        if info.compress_type == zipfile.ZIP_STORED:
            data, offset = self._map, data_start(self._map, info, self.path) + header
        else:
            data, offset = self._inflate(name, info, header, var.nbytes), 0
        shape = var.shape[::-1] if fortran else var.shape
        array = np.frombuffer(data, dtype, prod(shape), offset=offset).reshape(shape)
        return array.T if fortran else array

    def _inflate(self, name, info, header, nbytes):
        """The decompressed data bytes of one member."""
        try:
            with self._zip.open(info) as f:
                f.seek(header)
                data = f.read(nbytes)
        except ZIP_ERRORS as e:
            raise Corrupt(f"{self.path}: member {info.filename!r} cannot be decompressed: {e}"
                          ) from None
        if len(data) != nbytes:
            raise Corrupt(f"{self.path}: tensor {name!r} holds {len(data)} of its {nbytes} "
                          "bytes; the file is truncated")
        return data

    def problems(self, progress=None):
        """Check every tensor member's CRC-32 (zipfile checks it on reading to the end)."""
        for var in self:
            info = var.where[0]
            try:
                with self._zip.open(info) as f:
                    while f.read(1 << 20):
                        pass
            except ZIP_ERRORS as e:
                yield f"{var.name}: member {info.filename!r} of {self.path} is corrupt: {e}"
            if progress:
                progress(var.nbytes)

    def close(self):
        if self._zip is not None:
            self._zip.close()
        unmap(self._map)


class NpzWriter(Writer):
    """An uncompressed `.npz` (what np.savez writes): one stored zip64 member per tensor,
    written in chunks, so memory stays flat. bfloat16 is refused (numpy would save it as raw
    void data that no reader can type again); strings become fixed-width bytes, refused when
    a value ends in NUL bytes (numpy would drop them)."""

    format = "npz"

    def __init__(self, path):
        super().__init__(path)
        self._zip = zipfile.ZipFile(self.temp(path), "w", zipfile.ZIP_STORED, allowZip64=True)

    def begin(self, specs):
        for name, _, dtype in specs:
            if dtype in ML_DTYPES or dtype in ("resource", "variant", "object"):
                raise Unsupported(f"tensor {name!r} is {dtype}, which .npz cannot hold; "
                                  "cast it (--cast float32) or write safetensors / a V2 "
                                  "checkpoint")

    def add(self, name, array):
        import numpy as np
        from numpy.lib import format as npy

        if array.dtype.hasobject:
            values = array.reshape(-1).tolist()
            if any(v.endswith(b"\x00") for v in values):
                raise Unsupported(f"tensor {name!r} holds strings ending in NUL bytes, which "
                                  ".npz would drop; write a V2 checkpoint instead")
            array = np.array(values, dtype=bytes).reshape(array.shape)
        if array.dtype.kind == "V":
            raise Unsupported(f"tensor {name!r} is {array.dtype}, which .npz cannot hold")
        array = array if array.flags.c_contiguous else array.copy()
        with self._zip.open(name + ".npy", "w", force_zip64=True) as f:
            header = npy.header_data_from_array_1_0(array)
            try:
                npy.write_array_header_1_0(f, header)
            except ValueError:
                npy.write_array_header_2_0(f, header)
            raw = array.reshape(-1).view(np.uint8)
            for start in range(0, raw.size, 8 << 20):
                f.write(raw[start:start + (8 << 20)])

    def finish(self):
        self._zip.close()

    def abort(self):
        try:
            self._zip.close()
        except (ValueError, OSError):
            pass
        super().abort()
