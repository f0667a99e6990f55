"""Just enough protobuf wire format to decode the messages checkpoints hold.

Hand-written on purpose: importing the protobuf runtime costs about as much as the rest of
`ckptkit inspect` together, and these messages are few and small. Each message is a schema
{field number: (attribute, kind)}; kinds are "int" (varint, int64 two's complement), "fixed32",
"bytes" (a slice of the input: a memoryview stays one, so large payloads are not copied), "str", a nested schema, or a repeated number: "varints", "f32", "f64" (packed or
not, turned into arrays by repeated_array). Attributes whose name ends in "[]" are repeated.

Field numbers follow tensorflow/core/protobuf/tensor_bundle.proto,
framework/{tensor_shape,tensor_slice,tensor,versions}.proto, util/saved_tensor_slice.proto and
protobuf/trackable_object_graph.proto.
"""
from math import prod

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


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


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
    msg = {}
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire in (1, 2, 5):
            if wire == 2:
                length, pos = varint(buf, pos)
            else:
                length = 8 if wire == 1 else 4
            if pos + length > end:
                raise FormatError("truncated message")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise FormatError(f"bad protobuf wire type {wire}")
        spec = schema.get(number)
        if spec is None:
            continue
        attr, kind = spec
        if isinstance(kind, str) and kind in _REPEATED_NUMBERS:
            msg.setdefault(attr, []).append((wire, value))
            continue
        expected = 0 if kind == "int" else 5 if kind == "fixed32" else 2
        if wire != expected:
            raise FormatError(f"field {number} has wire type {wire}, expected {expected}")
        if isinstance(kind, dict):
            value = _decode(value, kind)
        elif kind == "int":
            value = _signed(value)
        elif kind == "fixed32":
            value = int.from_bytes(value, "little")
        elif kind == "str":
            value = bytes(value).decode("utf-8", "replace")
        if attr.endswith("[]"):
            msg.setdefault(attr[:-2], []).append(value)
        else:
            msg[attr] = value
    return msg


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


VERSION = {1: ("producer", "int"), 2: ("min_consumer", "int")}
SHAPE = {2: ("dim[]", {1: ("size", "int"), 2: ("name", "str")}), 3: ("unknown_rank", "int")}
SLICE = {1: ("extent[]", {1: ("start", "int"), 2: ("length", "int")})}
BUNDLE_HEADER = {1: ("num_shards", "int"), 2: ("endianness", "int"), 3: ("version", VERSION)}
BUNDLE_ENTRY = {1: ("dtype", "int"), 2: ("shape", SHAPE), 3: ("shard_id", "int"),
                4: ("offset", "int"), 5: ("size", "int"), 6: ("crc32c", "fixed32"),
                7: ("slices[]", SLICE)}
TENSOR = {1: ("dtype", "int"), 2: ("shape", SHAPE), 4: ("content", "bytes"),
          5: ("float_val", "f32"), 6: ("double_val", "f64"), 7: ("int_val", "varints"),
          8: ("string_val[]", "bytes"), 9: ("scomplex_val", "f32"), 10: ("int64_val", "varints"),
          11: ("bool_val", "varints"), 12: ("dcomplex_val", "f64"), 13: ("half_val", "varints"),
          16: ("uint32_val", "varints"), 17: ("uint64_val", "varints")}
SAVED_SLICE_META = {1: ("name", "str"), 2: ("shape", SHAPE), 3: ("dtype", "int"),
                    4: ("slice[]", SLICE)}
SAVED_TENSOR_SLICES = {
    1: ("meta", {1: ("tensor[]", SAVED_SLICE_META), 2: ("versions", VERSION)}),
    2: ("data", {1: ("name", "str"), 2: ("slice", SLICE), 3: ("data", TENSOR)}),
}
OBJECT_GRAPH = {1: ("nodes[]", {
    1: ("children[]", {1: ("node_id", "int"), 2: ("local_name", "str")}),
    2: ("attributes[]", {1: ("name", "str"), 2: ("full_name", "str"),
                         3: ("checkpoint_key", "str")}),
    3: ("slot_variables[]", {1: ("original_variable_node_id", "int"), 2: ("slot_name", "str"),
                             3: ("slot_variable_node_id", "int")}),
})}


def tensor_type(dtype_code, shape_msg, what):
    """(dtype name, bytes per element, shape, element count) from a tensor's DataType enum
    and TensorShapeProto; `what` names the tensor in errors."""
    if dtype_code not in TF_DTYPES:
        raise FormatError(f"{what} has unknown dtype {dtype_code}")
    dtype, itemsize = TF_DTYPES[dtype_code]
    if shape_msg.get("unknown_rank"):
        raise FormatError(f"{what} has unknown rank")
    shape = tuple(d.get("size", 0) for d in shape_msg.get("dim", ()))
    if any(d < 0 for d in shape):
        raise FormatError(f"{what} has shape {list(shape)}")
    return dtype, itemsize, shape, prod(shape)


def raw_extents(slice_msg, rank):
    """A TensorSliceProto dict as ((start, length), ...), length -1 for a whole dimension."""
    extents = slice_msg.get("extent", [])
    if not extents:
        return ((0, -1),) * rank
    if len(extents) != rank:
        raise FormatError(f"slice of rank {len(extents)} for a tensor of rank {rank}")
    return tuple((e.get("start", 0), e.get("length", -1)) for e in extents)
# TensorProto value field -> its repeated kind, for repeated_array
TENSOR_KINDS = {attr: kind for attr, kind in TENSOR.values()
                if isinstance(kind, str) and kind in _REPEATED_NUMBERS}
