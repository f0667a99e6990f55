"""The hand-written protobuf decoder, TensorProto value fields (through the V1 reader) and the
object-graph walk, on hand-encoded messages.

(test_formats_tf_object compares the same decoding with TF's own parse of a real graph.)
"""
import struct

import numpy as np
import pytest

import ckptkit
from ckptkit.formats.protos import BUNDLE_ENTRY, SHAPE, TENSOR, decode, decode_entry, message
from ckptkit.formats.tf_object import objects
from ckptkit.formats import slices
from helpers.bundle_writer import pb_bytes, pb_int, varint, write_bundle, write_table
from helpers.tf_factories import as_bits


def field(number, value):
    """A protobuf field: varint for ints, length-delimited for bytes."""
    return (pb_int if isinstance(value, int) else pb_bytes)(number, value)


def fixed32(number, value):
    return varint(number << 3 | 5) + struct.pack("<I", value)


def fixed64(number, raw):
    return varint(number << 3 | 1) + raw


def test_bundle_entry():
    shape = field(2, field(1, 3)) + field(2, field(1, 0)) + field(2, b"")
    entry = field(1, 19) + field(2, shape) + field(3, 2) + field(4, 1 << 40) + field(5, 12) \
        + fixed32(6, 0xDEADBEEF)
    assert decode(entry, BUNDLE_ENTRY) == {
        "dtype": 19, "shape": {"dim": [{"size": 3}, {"size": 0}, {}]}, "shard_id": 2,
        "offset": 1 << 40, "size": 12, "crc32c": 0xDEADBEEF}


def test_negative_int64_is_ten_bytes_twos_complement():
    assert decode(field(1, (1 << 64) - 1), SHAPE | message({1: ("x", "int")})) == {"x": -1}
    assert decode(field(2, field(1, (1 << 64) - 5)), SHAPE) == {"dim": [{"size": -5}]}


# --- decode_entry: every index entry of a V2 bundle -------------------------------------------

def tf_entry(dtype, shape, shard=0, offset=0, size=0, crc=0, after=b""):
    """A BundleEntryProto laid out as TF's bundle writer lays it out: fields in number order,
    zeros left out (proto3), the crc32c always there; `after` follows it (slices)."""
    dims = b"".join(field(2, field(1, d) if d else b"") for d in shape)
    out = field(1, dtype) + field(2, dims)
    out += b"".join(field(n, v) for n, v in ((3, shard), (4, offset), (5, size)) if v)
    return out + fixed32(6, crc) + after


ENTRIES = {
    "tf": tf_entry(1, (3, 3, 4, 4), 0, 80, 576, 0xD0621F83),
    "scalar": tf_entry(9, (), 0, 0, 8, 1),
    "empty": tf_entry(1, (0, 5)),
    "sharded": tf_entry(2, (7,), 3, 1 << 40, 56, 0xFFFFFFFF),
    "negative-offset": tf_entry(1, (4,), 0, -8, 16, 5),
    "long-shape": tf_entry(1, (2,) * 70, 0, 12, 4 << 70, 7),
    "slices": tf_entry(1, (6,), after=field(7, field(1, field(1, 2) + field(2, 3)))),
    "out-of-order": field(4, 80) + field(1, 1) + field(2, field(2, field(1, 4))) + fixed32(6, 1),
    "size-twice": tf_entry(1, (4,), 0, 0, 16, 3)[:-5] + field(5, 20) + fixed32(6, 3),
    "dtype-only": field(1, 19) + fixed32(6, 9),
}


def outcome(decoder, body):
    try:
        return decoder(body)
    except ckptkit.FormatError as e:
        return type(e), str(e)


@pytest.mark.parametrize("body", ENTRIES.values(), ids=ENTRIES)
def test_decode_entry_is_the_generic_decode(body):
    expected = decode(body, BUNDLE_ENTRY)
    assert decode_entry(body) == expected
    assert decode_entry(memoryview(b"  " + body)[2:]) == expected


@pytest.mark.parametrize("name", ["tf", "scalar", "sharded", "slices"])
def test_decode_entry_of_every_damaged_entry_is_the_generic_decode(name):
    """Every byte of an entry set to every value, and every truncation: decode_entry gives
    what the generic walk gives, the same dict or the same error."""
    body = ENTRIES[name]
    damaged = [body[:i] for i in range(len(body))] + [
        body[:i] + bytes([v]) + body[i + 1:] for i in range(len(body)) for v in range(256)]
    wrong = [d for d in damaged if outcome(decode_entry, d) != outcome(
        lambda b: decode(b, BUNDLE_ENTRY), d)]
    assert wrong == []


# --- TensorProto value fields, through the V1 reader -------------------------------------------

def v1_file(path, tensors):
    """A V1 checkpoint of {name: (dtype enum, shape, TensorProto fields)}, each tensor one
    full-extent slice, laid out as TF's TensorSliceWriter lays it out (see GOLDEN_V1)."""
    full = field(1, b"")   # TensorSliceProto with one empty extent per dimension: "all"
    metas, entries = b"", []
    for name, (enum, shape, proto) in sorted(tensors.items()):
        dims = b"".join(field(2, field(1, d)) for d in shape)
        extents = b"".join(full for _ in shape)
        metas += field(1, field(1, name.encode()) + field(2, dims) + field(3, enum)
                       + field(4, extents))
        data = field(1, name.encode()) + field(2, extents) + field(3, proto)
        entries.append((slices.slice_key(name, ((0, -1),) * len(shape)), field(2, data)))
    entries.append((b"", field(1, metas + field(2, field(1, 1)))))
    write_table(str(path), entries)
    return str(path)


def _f32(f):
    return struct.pack("<f", f)


VALUES = {  # name: (dtype enum, expected, packed field, unpacked fields)
    "f32": (1, np.array([1.5, -0.0, np.inf], np.float32),
            field(5, b"".join(_f32(f) for f in (1.5, -0.0, np.inf))),
            b"".join(varint(5 << 3 | 5) + _f32(f) for f in (1.5, -0.0, np.inf))),
    "f64": (2, np.array([2.5, -1e300]), field(6, struct.pack("<2d", 2.5, -1e300)),
            b"".join(fixed64(6, struct.pack("<d", d)) for d in (2.5, -1e300))),
    "i32": (3, np.array([1, -2, 300, 0], np.int32),
            field(7, b"".join(varint(i % (1 << 64)) for i in (1, -2, 300, 0))),
            b"".join(field(7, i % (1 << 64)) for i in (1, -2, 300, 0))),
    "i64": (9, np.array([-(1 << 63), (1 << 63) - 1]),
            field(10, varint(1 << 63) + varint((1 << 63) - 1)),
            field(10, 1 << 63) + field(10, (1 << 63) - 1)),
    "bool": (10, np.array([True, False, True]), field(11, b"\x01\x00\x01"),
             field(11, 1) + field(11, 0) + field(11, 1)),
    "f16": (19, np.array([1.0, -2.0], np.float16),
            field(13, varint(0x3C00) + varint(0xC000)), field(13, 0x3C00) + field(13, 0xC000)),
    "c64": (8, np.array([1 + 2j, -3j], np.complex64),
            field(9, struct.pack("<4f", 1, 2, 0, -3)),
            b"".join(varint(9 << 3 | 5) + _f32(f) for f in (1, 2, 0, -3))),
}
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_tensor_values_packed_or_not(tmp_path, packed):
    """proto3 parsers must accept both encodings of a repeated number field."""
    path = v1_file(tmp_path / "v1", {name: (enum, expected.shape, pk if packed else unpk)
                                     for name, (enum, expected, pk, unpk) in VALUES.items()})
    wrong = []
    with ckptkit.open_checkpoint(path) as reader:
        assert reader.format == "tf-v1"
        for name, (_, expected, _, _) in VALUES.items():
            try:
                value = reader.read(name)
            except Exception as e:   # noqa: BLE001 (any failure is a wrong answer here)
                wrong.append(f"{name}: {type(e).__name__}: {e}")
                continue
            if value.dtype != expected.dtype or \
                    not np.array_equal(as_bits(value), as_bits(expected)):
                wrong.append(f"{name}: {value!r}")
    assert wrong == []


def test_unknown_fields_of_every_wire_type_are_skipped():
    body = field(99, 5) + field(98, b"junk") + fixed32(97, 1) + fixed64(96, bytes(8)) \
        + field(1, 7)
    assert decode(body, TENSOR) == {"dtype": 7}


@pytest.mark.parametrize("body, match", [
    (field(4, b"abcdef")[:-2], "truncated message"),
    (b"\x08", "truncated message"),
    (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
    (varint(1 << 3 | 3), "wire type 3"),
    (fixed32(1, 0)[:-1], "truncated"),
], ids=["length", "varint", "long-varint", "group", "fixed32"])
def test_malformed_messages_are_format_errors(body, match):
    with pytest.raises(ckptkit.FormatError, match=match):
        decode(body, TENSOR)


# --- objects(): the walk over a TrackableObjectGraph -------------------------------------------

def node(children=(), attributes=(), slots=()):
    out = b"".join(field(1, field(1, n) + field(2, name.encode())) for n, name in children)
    out += b"".join(field(2, field(1, b"VARIABLE_VALUE") + field(2, full.encode())
                          + field(3, key.encode())) for full, key in attributes)
    out += b"".join(field(3, field(1, orig) + field(2, name.encode()) + field(3, slot))
                    for orig, name, slot in slots)
    return field(1, out)


V = "/.ATTRIBUTES/VARIABLE_VALUE"
# root(0) -> model(1) -> dense(2) -> kernel(3); root -> alias(4) -> the same dense (shared);
# root -> optimizer(5), whose slot m of kernel is node 6 (no child edge leads there)
GRAPH = b"".join([
    node(children=[(1, "model"), (4, "alias"), (5, "optimizer")]),
    node(children=[(2, "dense")]),
    node(children=[(3, "kernel")]),
    node(attributes=[("dense/kernel", "model/dense/kernel" + V)]),
    node(children=[(1, "inner")]),
    node(slots=[(3, "m", 6)]),
    node(attributes=[("dense/kernel/m", "model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m" + V)]),
])


class GraphOnly:
    """Just what objects() asks of a reader: a path, `in` and read()."""

    path = "stub"

    def __init__(self, graph):
        self.graph = graph

    def __contains__(self, name):
        return name == "_CHECKPOINTABLE_OBJECT_GRAPH"

    def read(self, name):
        return np.array(self.graph, dtype=object)


def test_objects_walk_breadth_first_and_name_slots():
    attrs = {a.key: a for a in objects(GraphOnly(GRAPH))}
    kernel = attrs["model/dense/kernel" + V]
    assert (kernel.path, kernel.full_name, kernel.slot_of) == \
        ("model/dense/kernel", "dense/kernel", "")   # not alias/inner/dense/kernel
    slot = attrs["model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m" + V]
    assert slot.slot_of == "m of model/dense/kernel"
    assert slot.full_name == "dense/kernel/m"
    assert "unreachable" not in slot.path and "model/dense/kernel" in slot.path


def test_objects_refuses_a_graph_of_several_strings():
    class Two(GraphOnly):
        def read(self, name):
            return np.array([GRAPH, GRAPH], dtype=object)

    with pytest.raises(ckptkit.FormatError, match="holds 2 strings"):
        objects(Two(GRAPH))


def test_objects_of_a_name_based_checkpoint_is_a_format_error(tmp_path):
    prefix = write_bundle(str(tmp_path / "plain"), {"w": np.zeros(2, np.float32)}).prefix
    with ckptkit.open_checkpoint(prefix) as reader:
        assert reader.format == "tf-v2"
        with pytest.raises(ckptkit.FormatError, match="_CHECKPOINTABLE_OBJECT_GRAPH"):
            objects(reader)
