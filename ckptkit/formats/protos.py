"""Just enough protobuf wire format to decode the messages checkpoints hold.

Hand-written on purpose: importing the protobuf runtime costs about as much as the rest of
`ckptkit inspect` together, and these messages are few and small. Each message is a schema
{field number: (attribute, kind)}; kinds are "int" (varint, int64 two's complement), "fixed32",
"bytes", "str", "packed" (repeated varint, packed or not), "f32"/"f64" (repeated floats,
packed or not), or a nested schema. Attributes whose name ends in "[]" are repeated.

Field numbers follow tensorflow/core/protobuf/tensor_bundle.proto,
framework/{tensor_shape,tensor_slice,tensor,versions}.proto, util/saved_tensor_slice.proto and
protobuf/trackable_object_graph.proto.
"""
import struct
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


def _repeated(kind, value, wire):
    """Values of a repeated scalar field, whether it arrived packed (wire 2) or not."""
    if wire != 2:
        return [_signed(value)] if kind == "packed" else [value]
    if kind == "f32":
        return list(struct.unpack(f"<{len(value) // 4}f", value[: len(value) // 4 * 4]))
    if kind == "f64":
        return list(struct.unpack(f"<{len(value) // 8}d", value[: len(value) // 8 * 8]))
    out, pos = [], 0
    while pos < len(value):
        v, pos = varint(value, pos)
        out.append(_signed(v))
    return out


def decode(buf, schema):
    """Decode one message into a dict of the schema's attributes (unknown fields skipped)."""
    msg = {}
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            length, pos = varint(buf, pos)
            if pos + length > end:
                raise FormatError("truncated message")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            if pos + 4 > end:
                raise FormatError("truncated message")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wire == 1:
            if pos + 8 > end:
                raise FormatError("truncated message")
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise FormatError(f"bad protobuf wire type {wire}")
        spec = schema.get(number)
        if spec is None:
            continue
        attr, kind = spec
        if isinstance(kind, dict):
            value = decode(value, kind)
        elif kind == "int":
            value = _signed(value)
        elif kind == "str":
            value = bytes(value).decode("utf-8", "replace")
        elif kind == "bytes":
            value = bytes(value)
        elif kind in ("packed", "f32", "f64"):
            msg.setdefault(attr, []).extend(_repeated(kind, value, wire))
            continue
        if attr.endswith("[]"):
            msg.setdefault(attr[:-2], []).append(value)
        else:
            msg[attr] = value
    return msg


VERSION = {1: ("producer", "int"), 2: ("min_consumer", "int")}
SHAPE = {2: ("dim[]", {1: ("size", "int"), 2: ("name", "str")}), 3: ("unknown_rank", "int")}
SLICE = {1: ("extent[]", {1: ("start", "int"), 2: ("length", "int")})}
BUNDLE_HEADER = {1: ("num_shards", "int"), 2: ("endianness", "int"), 3: ("version", VERSION)}
BUNDLE_ENTRY = {1: ("dtype", "int"), 2: ("shape", SHAPE), 3: ("shard_id", "int"),
                4: ("offset", "int"), 5: ("size", "int"), 6: ("crc32c", "fixed32"),
                7: ("slices[]", SLICE)}
TENSOR = {1: ("dtype", "int"), 2: ("shape", SHAPE), 4: ("content", "bytes"),
          5: ("float_val", "f32"), 6: ("double_val", "f64"), 7: ("int_val", "packed"),
          8: ("string_val[]", "bytes"), 9: ("scomplex_val", "f32"), 10: ("int64_val", "packed"),
          11: ("bool_val", "packed"), 12: ("dcomplex_val", "f64"), 13: ("half_val", "packed"),
          16: ("uint32_val", "packed"), 17: ("uint64_val", "packed")}
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
