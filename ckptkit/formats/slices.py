"""Tensors saved in slices: partitioned variables (V2, V1) and V1's split large tensors.

A slice is ((start, length), ...) per dimension; length -1 means the whole dimension, as in
TensorSliceProto. Slice data is stored under a key made by TF's
checkpoint::EncodeTensorNameSlice with OrderedCode:
- NumIncreasing(0): the byte 0x00, so slice keys sort before every tensor name;
- the name, with 0x00 -> 00 ff and 0xff -> ff 00, ended by 00 01;
- NumIncreasing(rank): a length byte, then the value big-endian without leading zeros;
- per dimension SignedNumIncreasing(start) then SignedNumIncreasing(length): the value
  sign-extended, cut to len = bits//7 + 1 bytes, with len's header bits XORed into the first
  two bytes (a single byte 0x80 ^ v when |v| < 64).
"""
import re
from math import prod

from ..errors import FormatError

_ESCAPES = {b"\x00": b"\x00\xff", b"\xff": b"\xff\x00"}
_HEADER = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0),
           (0xFE, 0), (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0)]


def _string(s):
    return re.sub(rb"[\x00\xff]", lambda m: _ESCAPES[m.group()], s) + b"\x00\x01"


def _unsigned(v):
    raw = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
    return bytes([len(raw)]) + raw


def _signed(v):
    x = ~v if v < 0 else v
    n = x.bit_length() // 7 + 1
    out = bytearray((v & ((1 << 80) - 1)).to_bytes(10, "big")[10 - n:])
    out[0] ^= _HEADER[n][0]
    if n > 1:
        out[1] ^= _HEADER[n][1]
    return bytes(out)


def name_prefix(name):
    """The key prefix shared by every slice of tensor `name`."""
    return b"\x00" + _string(name.encode("utf-8"))


def slice_key(name, raw_extents):
    key = name_prefix(name) + _unsigned(len(raw_extents))
    for start, length in raw_extents:
        key += _signed(start) + _signed(length)
    return key


def explicit(raw_extents, shape):
    """Raw extents with -1 lengths replaced by the dimension's size."""
    return tuple((s, d - s if n == -1 else n) for (s, n), d in zip(raw_extents, shape))


def assemble(shape, dtype, pieces, name):
    """One array from (explicit extents, array) pieces that must cover `shape` exactly once.

    Coverage is checked before the result is allocated, so a tiny file claiming a huge
    partitioned tensor fails cleanly instead of exhausting memory."""
    import numpy as np

    total = prod(shape)
    for extents, piece in pieces:
        if len(extents) != len(shape) or any(
                s < 0 or n < 0 or s + n > d for (s, n), d in zip(extents, shape)):
            raise FormatError(f"tensor {name!r}: slice {list(extents)} does not fit its shape "
                              f"{list(shape)}")
        if piece.shape != tuple(n for _, n in extents):
            raise FormatError(f"tensor {name!r}: slice {list(extents)} holds shape "
                              f"{list(piece.shape)}")
    covered = sum(piece.size for _, piece in pieces)
    if covered != total:
        raise FormatError(f"tensor {name!r}: its slices cover {covered} of {total} elements")
    out = np.empty(shape, dtype=dtype)
    for extents, piece in pieces:
        out[tuple(slice(s, s + n) for s, n in extents)] = piece
    return out
