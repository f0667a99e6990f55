"""Just enough protobuf wire format to decode the messages checkpoints hold.

Hand-written on purpose: importing the protobuf runtime costs about as much as the rest of
`ckptkit inspect` together, and these messages are few and small. Each message is a schema
made by message({field number: (attribute, kind)}); kinds are "int" (varint, int64 two's
complement), "fixed32", "str", "bytes" (a slice of the input: a memoryview stays one, so
large payloads are not copied), a nested schema, or a repeated number "varints", "f32",
"f64" (packed or not; turned into arrays by repeated_array). An attribute whose name ends in
"[]" is repeated.

Field numbers follow tensorflow/core/protobuf/tensor_bundle.proto,
framework/{tensor_shape,tensor_slice,tensor,versions}.proto, util/saved_tensor_slice.proto and
protobuf/trackable_object_graph.proto.
"""
import functools

from ..errors import FormatError
from ..variable import TF_DTYPES


def varint(buf, pos, limit=None):
    """(value, next position) of the varint at buf[pos], which must end before `limit`."""
    limit = len(buf) if limit is None else limit
    result = shift = 0
    while pos < limit:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FormatError("varint longer than 10 bytes")
    raise FormatError("truncated varint")


def decode(buf, schema, what=None):
    """Decode one message into a dict of the schema's attributes (unknown fields skipped);
    `what` names the message in errors. Repeated numbers stay raw (see repeated_array)."""
    try:
        return _decode(buf, schema)
    except FormatError as e:
        if what is None:
            raise
        raise type(e)(f"{what}: {e}") from None


def _decode(buf, schema):
    """The hot loop of listing a checkpoint: one-byte varints are read inline."""
    msg = {}
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key = buf[pos]
            pos += 1
            if key > 0x7F:
                key, pos = varint(buf, pos - 1)
            wire = key & 7
            if wire == 0:
                value = buf[pos]
                pos += 1
                if value > 0x7F:
                    value, pos = varint(buf, pos - 1)
            elif wire == 2 or wire == 5 or wire == 1:
                if wire == 2:
                    length = buf[pos]
                    pos += 1
                    if length > 0x7F:
                        length, pos = varint(buf, pos - 1)
                else:
                    length = 4 if wire == 5 else 8
                value = buf[pos:pos + length]
                pos += length
                if pos > end:
                    raise IndexError
            else:
                raise FormatError(f"bad protobuf wire type {wire}")
            spec = schema.get(key >> 3)
            if spec is None:
                continue
            name, kind, repeated, expected = spec
            if expected is None:   # a repeated number: kept raw for repeated_array
                msg.setdefault(name, []).append((wire, value))
                continue
            if wire != expected:
                raise FormatError(f"field {key >> 3} has wire type {wire}, expected {expected}")
            if kind == "int":
                if value >= 1 << 63:
                    value -= 1 << 64
            elif kind == "fixed32":
                value = int.from_bytes(value, "little")
            elif kind == "str":
                value = bytes(value).decode("utf-8", "replace")
            elif kind != "bytes":
                value = _nested(value, kind)
            if repeated:
                msg.setdefault(name, []).append(value)
            else:
                msg[name] = value
    except IndexError:
        raise FormatError("truncated message") from None
    return msg


_SMALL = {}   # (schema, bytes) -> decoded: shapes and slices repeat across many entries


def _nested(buf, schema):
    """A sub-message; small ones are decoded once per distinct value (results are shared
    and never modified)."""
    if len(buf) > 32:
        return _decode(buf, schema)
    key = (id(schema), bytes(buf))
    hit = _SMALL.get(key)
    if hit is None:
        if len(_SMALL) > 100_000:
            _SMALL.clear()
        hit = _SMALL[key] = _decode(buf, schema)
    return hit


def message(fields):
    """A schema from {number: (attribute, kind)}, each field as (name, kind, repeated,
    expected wire type; None for repeated numbers, which take any)."""
    compiled = {}
    for number, (attr, kind) in fields.items():
        wire = None if kind in ("varints", "f32", "f64") else 0 if kind == "int" else \
            5 if kind == "fixed32" else 2
        compiled[number] = (attr.removesuffix("[]"), kind, attr.endswith("[]"), wire)
    return compiled


_REPEATED_NUMBERS = {"varints": (0, None), "f32": (5, "<f4"), "f64": (1, "<f8")}


def repeated_array(items, kind):
    """A repeated numeric field as a numpy array, whether it arrived packed or not: uint64
    for varints (view as int64 for signed fields), float32/float64 for f32/f64. Decoded with
    numpy, so ten million values never become ten million Python objects."""
    import numpy as np

    single_wire, dtype = _REPEATED_NUMBERS[kind]
    parts = []
    for wire, value in items:
        if wire == 2 and dtype:
            if len(value) % np.dtype(dtype).itemsize:
                raise FormatError(f"packed {kind} field of {len(value)} bytes")
            parts.append(np.frombuffer(value, dtype))
        elif wire == 2:
            parts.append(_varints(np.frombuffer(value, np.uint8)))
        elif wire == single_wire:
            parts.append(np.frombuffer(value, dtype) if dtype else
                         np.array([value], dtype=np.uint64))
        else:
            raise FormatError(f"repeated {kind} field with wire type {wire}")
    if not parts:
        return np.array([], dtype=dtype or np.uint64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _varints(raw):
    """Every varint of a packed run, vectorised."""
    import numpy as np

    if raw.size and raw[-1] & 0x80:
        raise FormatError("packed varints end inside a value")
    ends = np.flatnonzero(raw < 0x80)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.size and lengths.max() > 10:
        raise FormatError("varint longer than 10 bytes")
    out = np.zeros(ends.size, dtype=np.uint64)
    for k in range(int(lengths.max()) if lengths.size else 0):
        take = lengths > k
        out[take] |= (raw[starts[take] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    return out


VERSION = message({1: ("producer", "int"), 2: ("min_consumer", "int")})
SHAPE = message({2: ("dim[]", message({1: ("size", "int"), 2: ("name", "str")})),
                 3: ("unknown_rank", "int")})
SLICE = message({1: ("extent[]", message({1: ("start", "int"), 2: ("length", "int")}))})
BUNDLE_HEADER = message({1: ("num_shards", "int"), 2: ("endianness", "int"),
                         3: ("version", VERSION)})
BUNDLE_ENTRY = message({1: ("dtype", "int"), 2: ("shape", SHAPE), 3: ("shard_id", "int"),
                        4: ("offset", "int"), 5: ("size", "int"), 6: ("crc32c", "fixed32"),
                        7: ("slices[]", SLICE)})
TENSOR = message({1: ("dtype", "int"), 2: ("shape", SHAPE), 4: ("content", "bytes"),
                  5: ("float_val", "f32"), 6: ("double_val", "f64"), 7: ("int_val", "varints"),
                  8: ("string_val[]", "bytes"), 9: ("scomplex_val", "f32"),
                  10: ("int64_val", "varints"), 11: ("bool_val", "varints"),
                  12: ("dcomplex_val", "f64"), 13: ("half_val", "varints"),
                  16: ("uint32_val", "varints"), 17: ("uint64_val", "varints")})
# TensorProto value field -> its repeated kind, for repeated_array
TENSOR_KINDS = {name: kind for name, kind, _, wire in TENSOR.values() if wire is None}
SAVED_SLICE_META = message({1: ("name", "str"), 2: ("shape", SHAPE), 3: ("dtype", "int"),
                            4: ("slice[]", SLICE)})
SAVED_TENSOR_SLICES = message({
    1: ("meta", message({1: ("tensor[]", SAVED_SLICE_META), 2: ("versions", VERSION)})),
    2: ("data", message({1: ("name", "str"), 2: ("slice", SLICE), 3: ("data", TENSOR)})),
})
OBJECT_GRAPH = message({1: ("nodes[]", message({
    1: ("children[]", message({1: ("node_id", "int"), 2: ("local_name", "str")})),
    2: ("attributes[]", message({1: ("name", "str"), 2: ("full_name", "str"),
                                 3: ("checkpoint_key", "str")})),
    3: ("slot_variables[]", message({1: ("original_variable_node_id", "int"),
                                     2: ("slot_name", "str"),
                                     3: ("slot_variable_node_id", "int")})),
}))})


_ENTRY_TAIL = ((0x18, "shard_id"), (0x20, "offset"), (0x28, "size"))   # fields 3-5, varints
_ENTRY_HEADS = {}   # bytes of an entry's dtype and shape fields -> their decoded dict


def decode_entry(buf):
    """A BundleEntryProto exactly as decode(buf, BUNDLE_ENTRY) gives it. The layout TF writes
    is read without the generic walk: dtype and shape (decoded once per distinct pair:
    a checkpoint's shapes repeat), shard_id, offset and size in field order, the crc32c
    last. Any other layout (slices, fields out of order or repeated, a long shape) walks."""
    buf = bytes(buf)
    end = len(buf) - 5
    if end < 4 or buf[0] != 0x08 or buf[2] != 0x12 or buf[1] > 0x7F or buf[3] > 0x7F or \
            buf[end] != 0x35:
        return _decode(buf, BUNDLE_ENTRY)
    pos = 4 + buf[3]
    head = _ENTRY_HEADS.get(buf[:pos])
    if head is None:
        if pos > end:
            return _decode(buf, BUNDLE_ENTRY)
        head = _decode(buf[:pos], BUNDLE_ENTRY)
        if len(_ENTRY_HEADS) > 100_000:
            _ENTRY_HEADS.clear()
        _ENTRY_HEADS[buf[:pos]] = head
    entry = head.copy()
    try:
        for tag, name in _ENTRY_TAIL:
            if pos < end and buf[pos] == tag:
                value = buf[pos + 1]
                pos += 2
                if value > 0x7F:
                    value, pos = varint(buf, pos - 1, end)
                entry[name] = value - (1 << 64) if value >= 1 << 63 else value
    except FormatError:   # a varint running into the crc32c: not TF's layout
        pos = -1
    if pos != end:
        return _decode(buf, BUNDLE_ENTRY)
    entry["crc32c"] = int.from_bytes(buf[end + 1:], "little")
    return entry


def tensor_type(dtype_code, shape_msg):
    """(dtype name, bytes per element, shape, element count) from a tensor's DataType enum
    and TensorShapeProto; errors say what is wrong, the caller says which tensor."""
    if dtype_code not in TF_DTYPES:
        raise FormatError(f"has unknown dtype {dtype_code}")
    dtype, itemsize = TF_DTYPES[dtype_code]
    if shape_msg.get("unknown_rank"):
        raise FormatError("has unknown rank")
    shape = tuple([d.get("size", 0) for d in shape_msg.get("dim", ())])
    nelem = 1
    for d in shape:
        if d < 0:
            raise FormatError(f"has shape {list(shape)}")
        nelem *= d
    return dtype, itemsize, shape, nelem


def raw_extents(slice_msg, rank):
    """A TensorSliceProto dict as ((start, length), ...), length -1 for a whole dimension."""
    extents = slice_msg.get("extent", [])
    if not extents:
        return ((0, -1),) * rank
    if len(extents) != rank:
        raise FormatError(f"slice of rank {len(extents)} for a tensor of rank {rank}")
    return tuple((e.get("start", 0), e.get("length", -1)) for e in extents)


# --- encoding: the few messages the V2 writer emits ------------------------------------------
# proto3 leaves zero-valued scalar fields out; TF writes these messages the same way.

_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def encode_varint(n):
    """Protobuf/LevelDB varint; negative numbers as 64-bit two's complement (10 bytes)."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _int_field(number, value):
    return encode_varint(number << 3) + encode_varint(value) if value else b""


def _bytes_field(number, data):
    return encode_varint(number << 3 | 2) + encode_varint(len(data)) + bytes(data)


@functools.lru_cache(maxsize=4096)
def _entry_head(dtype_code, shape, shard_id):
    """An entry's fields before its offset: dtype (1), TensorShapeProto (2: one `dim` per
    dimension, its `size` as field 1 inside), shard_id (3); remembered, since a checkpoint's
    shapes repeat."""
    dims = b"".join(_bytes_field(2, _int_field(1, d)) for d in shape)
    return _int_field(1, dtype_code) + _bytes_field(2, dims) + _int_field(3, shard_id)


@functools.lru_cache(maxsize=4096)
def _entry_size(size):
    """An entry's size (field 5) and the tag of its crc32c (field 6, fixed32); remembered,
    since sizes repeat with shapes."""
    return _int_field(5, size) + encode_varint(6 << 3 | 5)


def encode_header(num_shards, producer=1):
    """BundleHeaderProto, little-endian (endianness 0 is left out)."""
    return _int_field(1, num_shards) + _bytes_field(3, _int_field(1, producer))


def encode_entry(dtype_code, shape, shard_id, offset, size, masked_crc):
    """BundleEntryProto of one whole (unsliced) tensor, fields in number order as TF writes
    them; `masked_crc` as stored (always present)."""
    return (_entry_head(dtype_code, tuple(shape), shard_id) + _int_field(4, offset)
            + _entry_size(size) + masked_crc.to_bytes(4, "little"))
