"""NumPy `.npz` archives: a zip of `.npy` files, one tensor each.

- a zip (PKWARE APPNOTE): per member a local header (`PK\\x03\\x04`, 30 bytes: flags, method,
  CRC-32, sizes, then the name and an extra field whose length may differ from the central
  directory's), then the member's bytes (then a data descriptor when flag bit 3 is set);
  after the last member the central directory, one entry per member with its name, method,
  CRC-32, sizes and local header offset. `np.savez` STOREs members, `np.savez_compressed`
  DEFLATEs them; numpy adds zip64 extras (sizes 0xFFFFFFFF, the real ones in extra field 1).
- member `NAME.npy` holds tensor NAME: magic `\\x93NUMPY`, version (1.0: 2-byte header
  length, 2.0: 4-byte), a Python-literal dict `{'descr': '<f4', 'fortran_order': False,
  'shape': (2, 3)}` padded with spaces, then the elements, C or Fortran order, in the descr's
  byte order; their size is exactly elements x item size.
Notes: scalars have shape (); empty arrays have no data bytes. Object arrays are pickles:
listed as dtype `object`, never unpickled. Numpy saves bfloat16 as raw `|V2`, which cannot
be told apart from other void data: listed as `void16`, read refused. Members not ending in
`.npy` are not tensors and are skipped. Headers are parsed from the mapped file, so a member
with corrupt data still lists; stored members are read as views of the map, deflated ones
are inflated one at a time, in pieces, their CRC-32 and size checked.
The central directory alone decides what zipfile lists, so it is cross-checked before
listing: each entry's local header must repeat its name, method, CRC-32 and sizes, and the
members (with their data descriptors) and the directory must tile the file from byte 0;
bytes that no entry accounts for are a member a damaged directory would silently lose
(Corrupt). A name holding a NUL byte is refused (zipfile cuts names there).
A deflated member may inflate to at most 64x its stored size + 256 MiB: 1 MB of deflate
holds 1 GB of zeros, and a tensor is held whole once read, so a larger claim is refused
before anything is allocated (base.check_expansion, also used for HDF5). Shapes numpy cannot make
(over 64 dimensions; [0, 2**62]: no elements, yet past numpy's byte limit) list, but reading
them is refused (base.numpy_shape). The writer refuses names zip cannot hold (NUL, over 65,535
bytes) before writing.
"""
import io
import struct
import tokenize
import warnings
import zipfile
import zlib
from math import prod

from ..errors import CkptError, Corrupt, FormatError, Unsupported
from ..fileio import map_file, release_maps, unmap
from ..variable import ML_DTYPES, Variable, dtype_name
from .base import Reader, Writer, check_expansion, numpy_shape

# what zipfile raises on a damaged archive or member
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError,
              NotImplementedError, struct.error)
_LOCAL_HEADER = b"PK\x03\x04"
# what numpy's .npy header parser lets through on a mangled header
_HEADER_ERRORS = (ValueError, TypeError, SyntaxError, tokenize.TokenError)
_HEAD = 1 << 14   # covers numpy's largest .npy header (10000 bytes)
_PIECE = 1 << 20  # bytes inflated, or checked, at a time
_RESAVE = "a decompression bomb? If the tensor is real, re-save it uncompressed (np.savez), " \
    "which ckptkit maps instead of inflating"


def data_start(buf, info, path):
    """Where a zip member's (compressed) bytes begin in the mapped archive `buf`, once its
    local header agrees with its central directory entry: a damaged entry would otherwise
    read another member's bytes."""
    member = f"{path}: member {info.filename!r}"
    at = info.header_offset
    head = buf[at:at + 30]
    if len(head) < 30 or head[:4] != _LOCAL_HEADER:
        raise Corrupt(f"{member} has no local header at byte {at}")
    flags, method, _, _, crc, csize, usize, name_len, extra_len = struct.unpack(
        "<4H3I2H", head[6:])
    start = at + 30 + name_len + extra_len
    if start + info.compress_size > len(buf):
        raise Corrupt(f"{member} runs past the end of the file ({len(buf)} bytes); the file "
                      "is truncated")
    if (flags | info.flag_bits) & 1:
        raise Unsupported(f"{member} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise Unsupported(f"{member} uses zip compression method {info.compress_type}; "
                          "ckptkit reads stored and deflated members (as numpy and Keras "
                          "write them)")
    fields = [("name", buf[at + 30:at + 30 + name_len], _raw_name(info)),
              ("method", method, info.compress_type)]
    if not flags & 8:   # no data descriptor: the CRC and sizes are in the local header
        csize, usize = _zip64_sizes(buf[at + 30 + name_len:start], csize, usize)
        fields += [("CRC-32", crc, info.CRC), ("compressed size", csize, info.compress_size),
                   ("size", usize, info.file_size)]
    for what, here, there in fields:
        if here != there:
            raise Corrupt(f"{member}: its local header at byte {at} gives {what} {here!r}, "
                          f"the central directory {there!r} (a damaged directory?)")
    if method == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise FormatError(f"{member} is stored uncompressed but its sizes disagree "
                          f"({info.compress_size} != {info.file_size})")
    return start


def _raw_name(info):
    """A member's name as its central directory entry holds it (UTF-8 when flag bit 11 says
    so, else cp437, as zipfile decodes it)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _zip64_sizes(extra, csize, usize):
    """A local header's (compressed size, size): those it gives as 0xFFFFFFFF come from its
    zip64 extra field (id 1: the size first, then the compressed size)."""
    while len(extra) >= 4:
        kind, length = struct.unpack("<HH", extra[:4])
        if kind == 1:
            values = extra[4:4 + length]
            if usize == 0xFFFFFFFF and len(values) >= 8:
                usize, values = int.from_bytes(values[:8], "little"), values[8:]
            if csize == 0xFFFFFFFF and len(values) >= 8:
                csize = int.from_bytes(values[:8], "little")
            break
        extra = extra[4 + length:]
    return csize, usize


def member_bytes(buf, info, path, fix):
    """A member's uncompressed bytes in pieces of at most _PIECE, from the mapped archive
    `buf`; Corrupt unless they come to its size and CRC-32. The checks (data_start,
    check_expansion) come before the first piece is inflated; `fix` ends the message of a
    refused expansion."""
    start = data_start(buf, info, path)
    if info.compress_type == zipfile.ZIP_DEFLATED:
        check_expansion(f"{path}: member {info.filename!r}", info.file_size,
                        info.compress_size, fix)
    return _pieces(buf, info, path, start)


def _pieces(buf, info, path, start):
    member = f"member {info.filename!r} of {path}"
    deflated = info.compress_type == zipfile.ZIP_DEFLATED
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    pos, end, pending, size, crc = start, start + info.compress_size, b"", 0, 0
    while True:
        if not pending and pos < end:
            pending = buf[pos:min(pos + _PIECE, end)]
            pos += len(pending)
            release_maps(buf)   # the pages read count in RSS until given back
        if deflated:
            try:
                piece = inflate.decompress(pending, _PIECE)
            except zlib.error as e:
                raise Corrupt(f"{member} is corrupt: {e}") from None
            pending = inflate.unconsumed_tail
        else:
            piece, pending = pending, b""
        if not piece:
            if deflated and not inflate.eof and pos < end:
                continue   # the input so far held no whole output yet
            break
        size += len(piece)
        if size > info.file_size:
            raise Corrupt(f"{member} is corrupt: it holds more than its {info.file_size} bytes")
        crc = zlib.crc32(piece, crc)
        yield piece
    if size != info.file_size:
        raise Corrupt(f"{member} is corrupt: it holds {size} of its {info.file_size} bytes; "
                      "the file is truncated or damaged")
    if crc != info.CRC:
        raise Corrupt(f"{member} is corrupt: Bad CRC-32 {crc:08x}, the central directory "
                      f"says {info.CRC:08x}")


class NpzReader(Reader):
    format = "npz"

    def __init__(self, path):
        super().__init__(path)
        self.files = [path]
        self._map = None
        try:
            with zipfile.ZipFile(path) as zf:
                infos, directory = zf.infolist(), zf.start_dir
            self._map = map_file(path)
            starts = self._check_directory(infos, directory)
            found = {}
            for info in infos:
                if info.filename.endswith(".npy"):
                    name = info.filename[:-len(".npy")]
                    if name in found:
                        raise FormatError(f"{path}: member {info.filename!r} appears twice")
                    found[name] = self._variable(name, info, starts[info])
        except ZIP_ERRORS as e:
            self.close()
            raise FormatError(f"{path} is not a readable npz (zip) file: {e}; is it truncated?"
                              ) from None
        except FormatError:
            self.close()
            raise
        for name in sorted(found):
            self.variables[name] = found[name]

    def _check_directory(self, infos, directory):
        """The members the central directory lists, with their data descriptors, must fill
        the file from byte 0 to the directory: bytes no entry accounts for are a member that
        a damaged directory (a changed entry, a wrong count or size) would lose unseen.
        Returns {info: where its bytes start}."""
        at, described, starts = 0, False, {}
        for info in sorted(infos, key=lambda i: i.header_offset):
            if "\0" in info.orig_filename:
                raise FormatError(f"{self.path}: member name {info.orig_filename!r} holds a "
                                  "NUL byte (zip readers cut the name there)")
            self._follows(at, info.header_offset, described)
            starts[info] = data_start(self._map, info, self.path)
            at = starts[info] + info.compress_size
            described = bool(info.flag_bits & 8)
        self._follows(at, directory, described)
        return starts

    def _follows(self, end, start, described):
        """Bytes end..start lie between two members, or the last one and the directory: none,
        or a data descriptor (signature optional; CRC-32; sizes of 4 or 8 bytes)."""
        if start < end:
            raise Corrupt(f"{self.path}: members overlap at bytes {start}..{end} (a damaged "
                          "central directory)")
        if start - end not in ((12, 16, 20, 24) if described else (0,)):
            raise Corrupt(f"{self.path}: bytes {end}..{start} belong to no member the central "
                          "directory lists (a damaged directory: a tensor there would be "
                          "lost)")

    def _variable(self, name, info, start):
        """A member's tensor, from its .npy header alone."""
        from numpy.lib import format as npy

        member = f"{self.path}: member {info.filename!r}"
        f = io.BytesIO(self._head(member, info, start))
        try:
            version = npy.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise Unsupported(f"{member} is .npy version {version[0]}.{version[1]}; "
                                  "ckptkit reads 1.0 and 2.0")
            read_header = npy.read_array_header_1_0 if version == (1, 0) else \
                npy.read_array_header_2_0
            with warnings.catch_warnings():   # a mangled header makes ast warn on stderr
                warnings.simplefilter("ignore")
                shape, fortran, dtype = read_header(f)
        except _HEADER_ERRORS as e:
            raise FormatError(f"{member} is not a .npy array: {e}") from None
        header = f.tell()
        stored = info.file_size - header
        if any(d < 0 for d in shape):
            raise FormatError(f"{member} claims shape {list(shape)}")
        if dtype.hasobject:
            return Variable(name, shape, "object", stored,
                            where=(info, start, header, dtype, fortran))
        nbytes = prod(shape) * dtype.itemsize
        if nbytes != stored:
            raise FormatError(f"{member} claims shape {list(shape)} {dtype} ({nbytes} bytes) "
                              f"but holds {stored} bytes")
        return Variable(name, shape, dtype_name(dtype), nbytes,
                        where=(info, start, header, dtype, fortran))

    def _head(self, member, info, start):
        """The first bytes of a member, enough for any .npy header. Read from the map, as
        zipfile would check a small member's CRC before its header is parsed, and a corrupt
        member is for `problems` to report, not a reason to refuse the listing."""
        if info.compress_type == zipfile.ZIP_STORED:
            return self._map[start:start + min(info.file_size, _HEAD)]
        try:
            return zlib.decompressobj(-zlib.MAX_WBITS).decompress(
                self._map[start:start + min(info.compress_size, _HEAD)], _HEAD)
        except zlib.error as e:
            raise Corrupt(f"{member} cannot be decompressed: {e}") from None

    def read(self, name):
        import numpy as np

        var = self.variable(name)
        info, start, header, dtype, fortran = var.where
        if dtype.hasobject:
            raise Unsupported(f"{self.path}: {name!r} is a pickled object array, refused "
                              "(unpickling can run code); re-save it as a numeric array")
        if dtype.kind == "V":
            raise Unsupported(f"{self.path}: {name!r} has raw dtype {dtype.str} (structured, or "
                              "bfloat16 saved by numpy, which loses the type); re-save it "
                              "with a plain numeric dtype")
        shape = var.shape[::-1] if fortran else var.shape
        numpy_shape(f"{self.path}: tensor {name!r}", shape, dtype)
        if info.compress_type == zipfile.ZIP_STORED:
            data, offset = self._map, start + header
        else:
            data, offset = self._inflate(info), header
        array = np.frombuffer(data, dtype, prod(shape), offset=offset).reshape(shape)
        return array.T if fortran else array

    def _inflate(self, info):
        """A deflated member, inflated a piece at a time into one buffer: the tensor needs
        all of it, but never a second copy."""
        import numpy as np

        pieces = member_bytes(self._map, info, self.path, _RESAVE)
        out, at = np.empty(info.file_size, np.uint8), 0
        for piece in pieces:
            out[at:at + len(piece)] = np.frombuffer(piece, np.uint8)
            at += len(piece)
        return out

    def problems(self, progress=None):
        """Check every tensor member's size and CRC-32, a piece at a time, and that numpy
        can hold its shape."""
        for var in self:
            try:
                numpy_shape(f"{self.path}: tensor {var.name!r}", var.shape, var.where[3])
                for _ in member_bytes(self._map, var.where[0], self.path, _RESAVE):
                    pass
            except CkptError as e:
                yield f"{var.name}: {e}"
            if progress:
                progress(var.nbytes)

    def close(self):
        unmap(self._map)


class NpzWriter(Writer):
    """An uncompressed `.npz` (what np.savez writes): one stored zip64 member per tensor,
    written in chunks, so memory stays flat. bfloat16 is refused (numpy would save it as raw
    void data that no reader can type again); strings become fixed-width bytes, refused when
    a value ends in NUL bytes (numpy would drop them); so are names zip cannot hold (a NUL
    byte, where zipfile cuts them; over 65,535 bytes), before anything is written."""

    format = "npz"

    def __init__(self, path):
        super().__init__(path)
        self._zip = zipfile.ZipFile(self.temp(path), "w", zipfile.ZIP_STORED, allowZip64=True)

    def begin(self, specs):
        for name, _, dtype in specs:
            size = len(name.encode("utf-8")) + len(".npy")
            if "\0" in name or size > 0xFFFF:
                what = "holds a NUL byte, where zip names end" if "\0" in name else \
                    f"is {size} bytes as a member name; zip names stop at 65,535"
                raise Unsupported(f"tensor {_short(name)}: its name {what}; rename it "
                                  f"(`ckptkit surgery CHECKPOINT -o {self.path} --rename "
                                  "OLD=NEW`) or write safetensors / a V2 checkpoint")
            if dtype in ML_DTYPES or dtype in ("resource", "variant", "object"):
                raise Unsupported(f"tensor {name!r} is {dtype}, which .npz cannot hold; "
                                  "cast it (`ckptkit surgery CHECKPOINT -o "
                                  f"{self.path} --cast float32`) or write safetensors / a V2 "
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


def _short(name, keep=60):
    """A name quoted for a one-line message (a hostile one may be megabytes long)."""
    return repr(name) if len(name) <= keep else f"{name[:keep]!r}... ({len(name)} characters)"
