"""The LevelDB-style immutable table that both TF checkpoint formats use for their index.

Layout (tensorflow/core/lib/io/format.h, table_builder.cc):
- file = data blocks, a metaindex block, an index block, then a 48-byte footer:
  metaindex handle + index handle (varint64 offset, varint64 size each), zero padding to 40
  bytes, then the magic 0xdb4775248b80fb57 as fixed64 little-endian.
- every block is followed by a 5-byte trailer: compression type (0 = none) and the masked
  crc32c of block bytes + type byte.
- a block is a run of entries (varint32 shared key bytes, unshared key bytes, value length,
  key delta, value), then uint32 restart offsets and their uint32 count.
- index block entries map a separator key (>= the last key of a block) to that block's handle.
- compression type 1 is raw snappy: a varint uncompressed length, then literals and
  back-references (tag low bits: 0 literal, 1/2/3 copy with a 1/2/4-byte offset).
Notes: TF's bundle writer leaves blocks uncompressed, but some tools (e.g. TF Serving test
data) wrote snappy index blocks. Checksums of every block read are verified, so a flipped
byte is caught before it is interpreted.
"""
import bisect
import itertools
import os
import struct

import google_crc32c

from ..errors import Corrupt, FormatError, Unsupported
from ..fileio import map_file, unmap
from .protos import encode_varint as _varint, varint

MAGIC = 0xDB4775248B80FB57
_CHUNK = 8 << 20   # bytes per step when checksumming a large block
FOOTER_SIZE = 48
_MASK_DELTA = 0xA282EAD8


def unmask_crc(masked):
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask_crc(crc):
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def is_table(path):
    """True when the file ends in the table magic."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < FOOTER_SIZE:
                return False
            f.seek(-8, os.SEEK_END)
            return struct.unpack("<Q", f.read(8))[0] == MAGIC
    except OSError:
        return False


class Table:
    """Sorted key -> value entries of one table file, read through a memory map."""

    def __init__(self, path):
        self.path = path
        self.buf = map_file(path)
        self._view = memoryview(self.buf)
        if len(self.buf) < FOOTER_SIZE:
            raise FormatError(f"{path}: too short to be a checkpoint table "
                              f"({len(self.buf)} bytes)")
        footer = self.buf[-FOOTER_SIZE:]
        if struct.unpack("<Q", footer[40:])[0] != MAGIC:
            raise FormatError(f"{path}: not a TensorFlow checkpoint table (bad magic)")
        try:
            _, pos = varint(footer, 0, 40)
            _, pos = varint(footer, pos, 40)
            offset, pos = varint(footer, pos, 40)
            size, pos = varint(footer, pos, 40)
        except FormatError as e:
            raise Corrupt(f"{path}: bad table footer ({e})") from None
        index = list(self._entries(self._block(offset, size)))
        self._index_keys = [k for k, _ in index]
        self._handles = []
        for _, handle in index:
            try:
                off, p = varint(handle, 0, len(handle))
                sz, _ = varint(handle, p, len(handle))
            except FormatError as e:
                raise Corrupt(f"{path}: bad block handle in the table index ({e})") from None
            self._handles.append((off, sz))

    def _block(self, offset, size):
        end = offset + size
        if end + 5 > len(self.buf):
            raise FormatError(f"{self.path}: block at {offset}+{size} runs past the end of "
                              f"the file ({len(self.buf)} bytes); the file is truncated")
        data = self._view[offset:end]   # no copy: V1 blocks hold whole tensors
        kind = self.buf[end]
        stored = struct.unpack_from("<I", self.buf, end + 1)[0]
        crc = 0
        for start in range(offset, end, _CHUNK):
            crc = google_crc32c.extend(crc, self.buf[start:min(start + _CHUNK, end)])
        if unmask_crc(stored) != google_crc32c.extend(crc, bytes([kind])):
            raise Corrupt(f"{self.path}: checksum mismatch in block at offset {offset}")
        if kind == 1:
            return _unsnappy(data, self.path)
        if kind != 0:
            raise Unsupported(f"{self.path}: table block compressed with unknown type {kind}")
        return data

    def _entries(self, block):
        n = len(block)
        if n < 4:
            raise FormatError(f"{self.path}: block too short")
        restarts = struct.unpack_from("<I", block, n - 4)[0]
        limit = n - 4 - 4 * restarts
        if restarts == 0 or limit < 0:
            raise FormatError(f"{self.path}: bad block restart count {restarts}")
        pos, key = 0, b""
        while pos < limit:
            # one-byte varints are the common case; fall back for longer ones
            shared = block[pos]
            if shared < 128 and pos + 2 < limit and block[pos + 1] < 128 and block[pos + 2] < 128:
                unshared, vlen, pos = block[pos + 1], block[pos + 2], pos + 3
            else:
                try:
                    shared, pos = varint(block, pos, limit)
                    unshared, pos = varint(block, pos, limit)
                    vlen, pos = varint(block, pos, limit)
                except FormatError as e:
                    raise Corrupt(f"{self.path}: bad entry in table block ({e})") from None
            vstart = pos + unshared
            vend = vstart + vlen
            if shared > len(key) or vend > limit:
                raise Corrupt(f"{self.path}: bad entry in table block")
            key = key[:shared] + block[pos:vstart]   # bytes, also from a memoryview
            yield key, block[vstart:vend]
            pos = vend

    def items(self, start=b""):
        """(key, value) pairs in key order, from the first key >= start; chained in C, one
        generator step per entry, not two."""
        first = bisect.bisect_left(self._index_keys, start) if start else 0
        pairs = itertools.chain.from_iterable(self._entries(self._block(offset, size))
                                              for offset, size in self._handles[first:])
        return filter(lambda pair: pair[0] >= start, pairs) if start else pairs

    def close(self):
        self._view.release()
        unmap(self.buf)


def _unsnappy(data, path):
    """Decompress one raw snappy block."""
    try:
        size, pos = varint(data, 0, len(data))
    except FormatError:
        raise Corrupt(f"{path}: corrupt snappy block") from None
    if size > 64 * len(data) + 1024:
        raise FormatError(f"{path}: snappy block claims {size} bytes")
    out = bytearray()
    n = len(data)
    try:
        while pos < n:
            tag = data[pos]
            pos += 1
            kind = tag & 3
            if kind == 0:
                length = tag >> 2
                if length >= 60:
                    extra = length - 59
                    length = int.from_bytes(data[pos:pos + extra], "little")
                    pos += extra
                length += 1
                if pos + length > n:
                    raise IndexError
                out += data[pos:pos + length]
                pos += length
                continue
            if kind == 1:
                length, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[pos]
                pos += 1
            else:
                width = 2 if kind == 2 else 4
                length, offset = (tag >> 2) + 1, int.from_bytes(data[pos:pos + width], "little")
                pos += width
            if not 0 < offset <= len(out):
                raise IndexError
            start = len(out) - offset
            for i in range(length):   # copies may overlap what they produce
                out.append(out[start + i])
    except IndexError:
        raise Corrupt(f"{path}: corrupt snappy block") from None
    if len(out) != size:
        raise Corrupt(f"{path}: snappy block holds {len(out)} bytes, not {size}")
    return bytes(out)


class TableWriter:
    """Writes sorted (key, value) pairs as a table to an open binary file, block by block.

    Laid out byte for byte as TF's table_builder does: uncompressed data blocks of about
    256 KiB (table_options.h) with a restart point every 16 entries, an empty metaindex block,
    an index block with a restart per entry mapping each block to the shortest key between
    its last key and the next block's first (LevelDB's FindShortestSeparator; the last block:
    FindShortSuccessor), then the footer. Keys must come in strictly increasing order.
    """

    BLOCK_SIZE = 262144
    RESTART_INTERVAL = 16

    def __init__(self, f):
        self.f = f
        self.offset = 0
        self.index = []           # (last key, handle bytes)
        self._block = bytearray()
        self._restarts = []
        self._count = 0
        self._last = None
        self._pending = None      # handle of a finished block whose index key is not known

    def add(self, key, value):
        self.extend(((key, value),))

    def extend(self, pairs):
        """add() each (key, value) of `pairs` in turn: one loop over local state, which a
        300,000-entry index notices."""
        last, count, block, restarts = self._last, self._count, self._block, self._restarts
        interval, limit = self.RESTART_INTERVAL, self.BLOCK_SIZE
        try:
            for key, value in pairs:
                if last is not None and key <= last:
                    raise FormatError(f"table keys out of order: {key!r} after {last!r}")
                if self._pending is not None:   # the previous block's index key, now that
                    self.index.append((_separator(last, key), self._pending))   # we know key
                    self._pending = None
                shared = 0
                if count % interval == 0:
                    restarts.append(len(block))
                else:
                    shared = _common_prefix(key, last)
                unshared, size = len(key) - shared, len(value)
                if shared < 0x80 and unshared < 0x80 and size < 0x80:   # one-byte varints
                    block += bytes((shared, unshared, size))
                else:
                    block += _varint(shared) + _varint(unshared) + _varint(size)
                block += key[shared:]
                block += value
                count += 1
                last = key
                if len(block) + 4 * len(restarts) + 4 >= limit:
                    self._count = count
                    self._flush()
                    count, block, restarts = 0, self._block, self._restarts
        finally:
            self._last, self._count = last, count

    def _flush(self):
        if self._count:
            self._pending = self._put(self._finish(self._block, self._restarts))
        self._block, self._restarts, self._count = bytearray(), [], 0

    @staticmethod
    def _finish(block, restarts):
        restarts = restarts or [0]
        return bytes(block) + b"".join(struct.pack("<I", r) for r in restarts) + \
            struct.pack("<I", len(restarts))

    def _put(self, block):
        """Append a block and its trailer; its handle (varint offset, varint size)."""
        crc = google_crc32c.extend(google_crc32c.value(block), b"\x00")
        self.f.write(block + b"\x00" + struct.pack("<I", mask_crc(crc)))
        handle = _varint(self.offset) + _varint(len(block))
        self.offset += len(block) + 5
        return handle

    def finish(self):
        self._flush()
        if self._pending is not None:
            self.index.append((_successor(self._last), self._pending))
        meta = self._put(self._finish(b"", []))
        index = bytearray()
        for key, handle in self.index:   # restart interval 1: every key whole
            index += _varint(0) + _varint(len(key)) + _varint(len(handle)) + key + handle
        index_handle = self._put(self._finish(index, _offsets(self.index)))
        self.f.write((meta + index_handle).ljust(40, b"\x00") + struct.pack("<Q", MAGIC))


def _common_prefix(a, b):
    """Length of the longest common prefix of two byte strings: the first differing byte is
    found from the highest set bit of their XOR, in C, not byte by byte."""
    n = min(len(a), len(b))
    differ = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - (differ.bit_length() + 7) // 8


def _offsets(index):
    """Restart offsets of an index block whose every entry is a restart."""
    out, pos = [], 0
    for key, handle in index:
        out.append(pos)
        pos += len(_varint(0) + _varint(len(key)) + _varint(len(handle))) + len(key) + len(handle)
    return out


def _separator(start, limit):
    """LevelDB's bytewise FindShortestSeparator: a short key in [start, limit)."""
    n = min(len(start), len(limit))
    i = 0
    while i < n and start[i] == limit[i]:
        i += 1
    if i < n and start[i] < 0xFF and start[i] + 1 < limit[i]:
        return start[:i] + bytes([start[i] + 1])
    return start


def _successor(key):
    """LevelDB's bytewise FindShortSuccessor: a short key >= key."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key
