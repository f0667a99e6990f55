"""A test-only writer of TF checkpoints: V2 bundles, V1 files and bare tables, byte by byte.

A deliberately independent encoder, used to build valid and lying checkpoints for the tests.
It follows TensorFlow's layouts (tensorflow/core/lib/io/{format,block_builder,table_builder}.cc,
util/tensor_bundle/tensor_bundle.cc, util/tensor_slice_writer.h) and imports nothing from
ckptkit, so it can disagree with ckptkit's readers and it can lie on purpose: every
BundleEntryProto field, the header, and the bytes of every block may be overridden.
`test_hostile.py::test_encoder_*` proves it right against ckptkit and against TF itself, and
test_formats_tf_v2 has TF read its bundles and its snappy tables with small blocks.

- table: data blocks (prefix-compressed entries, a restart every 16 entries), an empty
  metaindex block, an index block (last key of each data block -> its handle), a 48-byte
  footer; every block is followed by its type byte and the masked crc32c of block + type.
  Options: data blocks of so many entries or so many bytes, the restart intervals, snappy
  (literals only) blocks, a `tamper` hook that rewrites data blocks before they are sealed.
- bundle: `P.index` maps "" to BundleHeaderProto and each name to BundleEntryProto;
  `P.data-SSSSS-of-NNNNN` holds the tensors back to back in name order.
- V1: one table; "" maps to SavedTensorSlices.meta, each OrderedCode slice key to
  SavedTensorSlices.data with the values in the typed TensorProto field.

tests/helpers/hostile.py holds what damages these files afterwards and runs ckptkit on them.
"""
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np

MAGIC = 0xDB4775248B80FB57

# numpy dtype name -> TF DataType enum (tensorflow/core/framework/types.proto)
TF_ENUM = {"float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6,
           "string": 7, "complex64": 8, "int64": 9, "bool": 10, "bfloat16": 14,
           "uint16": 17, "complex128": 18, "float16": 19, "uint32": 22, "uint64": 23}


# ---------------------------------------------------------------- protobuf wire format

def varint(n):
    """Protobuf/LevelDB varint; negative numbers as 64-bit two's complement (10 bytes)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_int(number, value):
    return varint(number << 3) + varint(value)


def pb_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + bytes(data)


def pb_fixed32(number, value):
    return varint(number << 3 | 5) + struct.pack("<I", value)


def shape_proto(shape):
    """TensorShapeProto: one `dim` (field 2) per dimension, `size` (field 1) inside."""
    return b"".join(pb_bytes(2, pb_int(1, d) if d else b"") for d in shape)


def mask(crc):
    """LevelDB/TF crc32c masking: rotate right by 15 bits and add a constant."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def crc32c(data, start=0):
    return google_crc32c.extend(start, bytes(data))


def tf_dtype(array):
    return "string" if array.dtype.kind in "OS" else array.dtype.name


# ---------------------------------------------------------------- sstable

@dataclass
class Layout:
    """Where the parts of a table file lie: (offset, size) of each block, without trailer."""
    data: list
    metaindex: tuple
    index: tuple
    footer: int
    size: int


def build_block(items, restart_interval=16):
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def snappy_literal(raw, max_literal=60):
    """`raw` as a valid snappy stream made of literals only (what a lazy compressor writes),
    each at most `max_literal` bytes: up to 60 fit the tag byte, longer ones put their
    length - 1 in the 1 to 4 bytes after it (tags 60 to 63)."""
    out = bytearray(varint(len(raw)))
    for start in range(0, len(raw), max_literal):
        chunk = raw[start:start + max_literal]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        else:
            length = n.to_bytes((n.bit_length() + 7) // 8, "little")
            out += bytes([(59 + len(length)) << 2]) + length
        out += chunk
    return bytes(out)


def seal(block, kind=0):
    """A block with its trailer: the type byte and the masked crc32c of block + type."""
    return block + bytes([kind]) + struct.pack("<I", mask(crc32c(bytes([kind]),
                                                                 crc32c(block))))


def _data_blocks(items, block_entries, block_size):
    """The entries of each data block: `block_entries` a block, or a block ends once its
    keys and values (+3 bytes an entry) reach `block_size`; else one block for all."""
    if block_size is None:
        n = block_entries or max(len(items), 1)
        return [items[i:i + n] for i in range(0, len(items), n)]
    blocks, pending, size = [], [], 0
    for key, value in items:
        pending.append((key, value))
        size += len(key) + len(value) + 3
        if size >= block_size:
            blocks.append(pending)
            pending, size = [], 0
    return blocks + [pending] if pending else blocks


def build_table(items, block_entries=None, block_size=None, restart_interval=16,
                index_restart_interval=16, compression=0, compress_index=False,
                max_literal=60, tamper=None):
    """A whole table file of sorted (key, value) byte pairs; returns (bytes, Layout).

    `block_entries` splits the data into blocks of that many entries, `block_size` into
    blocks of about that many bytes; `restart_interval` and `index_restart_interval` space
    the restart points of the data blocks and of the index block (TF's table_builder: 16 and
    1). `compression` is the type of the data blocks: 1 stores them as (literal) snappy, see
    snappy_literal for `max_literal`, any other type stores them as they are;
    `compress_index` stores the metaindex and index blocks the same way, as TF's
    table_builder does. `tamper(raw_block) -> bytes` rewrites each data block before it is
    sealed, so the checksum stays right while the content lies.
    """
    items = sorted(items)
    out, layout, index = bytearray(), Layout([], (0, 0), (0, 0), 0, 0), []

    def put(block, kind, tamper=None):
        """Append `block` stored as type `kind`, sealed; returns its (offset, size)."""
        stored = snappy_literal(block, max_literal) if kind == 1 else block
        if tamper:
            stored = tamper(stored)
        where = (len(out), len(stored))
        out.extend(seal(stored, kind))
        return where

    for chunk in _data_blocks(items, block_entries, block_size):
        layout.data.append(put(build_block(chunk, restart_interval), compression, tamper))
        index.append((chunk[-1][0], b"".join(varint(x) for x in layout.data[-1])))
    kind = compression if compress_index else 0
    layout.metaindex = put(build_block([]), kind)
    layout.index = put(build_block(index, index_restart_interval), kind)
    handles = b"".join(varint(x) for x in (*layout.metaindex, *layout.index))
    layout.footer = len(out)
    out += handles.ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    layout.size = len(out)
    return bytes(out), layout


def write_table(path, items, block_size=4096, index_restart_interval=1, compress_index=True,
                max_literal=65536, **table_options):
    """A bare table of (key, value) byte pairs at `path`, for the table tests; returns its
    bytes. Unless told otherwise, laid out as TF's table_builder writes tables: data blocks
    of about 4 KiB, a restart per index entry, every block compressed alike (with
    compression=1: snappy literals as long as 64 KiB)."""
    data, _ = build_table(items, block_size=block_size,
                          index_restart_interval=index_restart_interval,
                          compress_index=compress_index, max_literal=max_literal,
                          **table_options)
    Path(path).write_bytes(data)
    return data


# ---------------------------------------------------------------- V2 bundles

def string_tensor_bytes(values):
    """V2 string layout: varint64 lengths, masked crc32c of the lengths as uint32s, the bytes.
    Returns (stored bytes, the entry's crc32c before masking)."""
    values = [bytes(v) for v in values]
    lengths = b"".join(varint(len(v)) for v in values)
    crc = 0
    for v in values:
        crc = crc32c(struct.pack("<I", len(v)), crc)
    length_check = struct.pack("<I", mask(crc))
    crc = crc32c(length_check, crc)
    for v in values:
        crc = crc32c(v, crc)
    return lengths + length_check + b"".join(values), crc


def tensor_bytes(array):
    """(stored bytes, unmasked crc32c) of one tensor in a V2 data file."""
    if tf_dtype(array) == "string":
        return string_tensor_bytes(array.reshape(-1).tolist())
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return data, crc32c(data)


def entry_proto(fields):
    """BundleEntryProto from a dict of dtype, shape, shard_id, offset, size, crc32c (masked),
    slices (raw TensorSliceProto bytes); zero fields are left out as proto3 does, `raw`
    replaces the whole message."""
    if "raw" in fields:
        return fields["raw"]
    out = pb_int(1, fields["dtype"]) if fields.get("dtype") else b""
    out += pb_bytes(2, shape_proto(fields.get("shape", ())))
    for number, key in ((3, "shard_id"), (4, "offset"), (5, "size")):
        if fields.get(key):
            out += pb_int(number, fields[key])
    if fields.get("crc32c") is not None:
        out += pb_fixed32(6, fields["crc32c"])
    for s in fields.get("slices", ()):
        out += pb_bytes(7, s)
    return out


def header_proto(num_shards=1, endianness=0, producer=1):
    out = pb_int(1, num_shards)
    if endianness:
        out += pb_int(2, endianness)
    return out + pb_bytes(3, pb_int(1, producer))


def shard_path(prefix, shard, num_shards):
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def _signed_ordered(v):
    """OrderedCode SignedNumIncreasing for the small values slice keys need."""
    if not -64 <= v < 64:
        raise ValueError("test encoder: slice bounds must lie in [-64, 64)")
    return bytes([(v & 0xFF) ^ 0x80])


def _ordered_string(s):
    """OrderedCode string: 00 -> 00 ff, ff -> ff 00, then the terminator 00 01."""
    return b"".join({0: b"\x00\xff", 0xFF: b"\xff\x00"}.get(c, bytes([c])) for c in s) + \
        b"\x00\x01"


def slice_key(name, extents):
    """checkpoint::EncodeTensorNameSlice: 0, the name, the rank, then start and length per
    dimension (length -1 for a whole dimension)."""
    key = b"\x00" + _ordered_string(name.encode("utf-8"))
    key += bytes([1, len(extents)]) if extents else b"\x00"
    return key + b"".join(_signed_ordered(s) + _signed_ordered(n) for s, n in extents)


def slice_proto(extents):
    """TensorSliceProto: an extent per dimension, empty for a whole one."""
    return b"".join(pb_bytes(1, b"" if (s, n) == (0, -1) else
                             (pb_int(1, s) if s else b"") + pb_int(2, n))
                    for s, n in extents)


@dataclass
class Bundle:
    """A V2 bundle this module writes: entry fields and stored bytes per key, and where the
    files are. Keys are tensor names (str) or slice keys (bytes)."""
    prefix: Path                                  # or a str, kept as given: it may end in "/"
    num_shards: int = 1
    entries: dict = field(default_factory=dict)   # key -> entry fields (see entry_proto)
    blobs: dict = field(default_factory=dict)     # key -> stored bytes
    layout: Layout = None

    @property
    def index(self):
        return Path(f"{self.prefix}.index")

    def data(self, shard=0):
        return shard_path(self.prefix, shard, self.num_shards)

    def put(self, key, array, shard=0):
        array = np.asarray(array)
        data, crc = tensor_bytes(array)
        self.entries[key] = {"dtype": TF_ENUM[tf_dtype(array)], "shape": array.shape,
                             "shard_id": shard}
        self.store(key, data, crc)

    def store(self, key, data, crc=None):
        """Set the stored bytes of `key`; size and crc32c follow them honestly (crc32c of
        the bytes unless given), so only what the bytes themselves say can lie."""
        self.blobs[key] = bytes(data)
        self.entries[key].update(size=len(data), crc32c=mask(crc32c(data) if crc is None
                                                             else crc))

    def put_partitioned(self, name, shape, pieces):
        """A partitioned variable: full entry with `slices`, each piece (extents, array)
        stored under its slice key; extents use length -1 for a whole dimension."""
        for extents, array in pieces:
            self.put(slice_key(name, extents), array)
        self.entries[name] = {"dtype": TF_ENUM[tf_dtype(np.asarray(pieces[0][1]))],
                              "shape": tuple(shape),
                              "slices": [slice_proto(e) for e, _ in pieces]}

    def write(self, **index_options):
        """Lay the stored bytes out shard by shard in key order, write every file."""
        shards = [bytearray() for _ in range(self.num_shards)]
        for key in sorted(self.blobs, key=_key_bytes):
            fields = self.entries[key]
            fields["offset"] = len(shards[fields["shard_id"]])
            shards[fields["shard_id"]] += self.blobs[key]
        for i, data in enumerate(shards):
            self.data(i).write_bytes(bytes(data))
        return self.write_index(**index_options)

    def write_index(self, overrides=None, header=None, **table_options):
        """(Re)write the .index only, some entries' fields overridden ({key: {field: value}}):
        a lying index over an honest data file. `header` replaces the BundleHeaderProto
        bytes (False: no header entry at all)."""
        items = [] if header is False else \
            [(b"", header if header is not None else header_proto(self.num_shards))]
        for key, fields in self.entries.items():
            fields = {**fields, **(overrides or {}).get(key, {})}
            items.append((_key_bytes(key), entry_proto(fields)))
        data, self.layout = build_table(items, **table_options)
        self.index.write_bytes(data)
        return self


def _key_bytes(key):
    return key.encode("utf-8") if isinstance(key, str) else key


def write_bundle(prefix, tensors, num_shards=1, **table_options):
    """Write `tensors` (name -> numpy array; object/bytes arrays are tf.string) as a V2
    bundle at `prefix`, making its directory; tensor i (in name order) goes to shard
    i % num_shards. Returns the Bundle, whose `prefix` is `prefix` as given."""
    os.makedirs(os.path.dirname(str(prefix)) or ".", exist_ok=True)
    bundle = Bundle(prefix, num_shards)
    for i, name in enumerate(sorted(tensors)):
        bundle.put(name, tensors[name], shard=i % num_shards)
    return bundle.write(**table_options)


# ---------------------------------------------------------------- V1 files

# dtype -> (TensorProto field, how its values are packed) as TF's V1 writer fills them
_V1_FIELDS = {"float32": (5, "<f4"), "float64": (6, "<f8"), "int32": (7, "varint"),
              "int16": (7, "varint"), "int8": (7, "varint"), "uint8": (7, "varint"),
              "int64": (10, "varint"), "bool": (11, "varint"), "complex64": (9, "<f4"),
              "complex128": (12, "<f8")}


def tensor_proto(array):
    """TensorProto as TF's V1 writer saves a slice: only the typed value field (packed), or
    `string_val` once per element; dtype and shape live in the meta entry."""
    dtype = tf_dtype(array)
    flat = array.reshape(-1)
    if dtype == "string":
        return b"".join(pb_bytes(8, bytes(v)) for v in flat.tolist())
    number, packing = _V1_FIELDS[dtype]
    if packing == "varint":
        return pb_bytes(number, b"".join(varint(int(v)) for v in flat))
    return pb_bytes(number, flat.view(flat.real.dtype).astype(packing).tobytes()
                    if flat.dtype.kind == "c" else flat.astype(packing).tobytes())


def write_v1(path, tensors, shapes=None, **table_options):
    """Write `tensors` as a V1 (TensorSlice) checkpoint file; returns its Layout. `shapes`
    (name -> shape) makes the tensor list lie about some shapes."""
    metas, items = b"", []
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        shape = (shapes or {}).get(name, array.shape)
        whole = slice_proto([(0, -1)] * len(shape))
        metas += pb_bytes(1, pb_bytes(1, name.encode()) + pb_bytes(2, shape_proto(shape))
                          + pb_int(3, TF_ENUM[tf_dtype(array)]) + pb_bytes(4, whole))
        saved = pb_bytes(1, name.encode()) + pb_bytes(2, whole) + \
            pb_bytes(3, tensor_proto(array))
        items.append((slice_key(name, [(0, -1)] * len(shape)), pb_bytes(2, saved)))
    meta = pb_bytes(1, metas + pb_bytes(2, pb_int(1, 1)))
    data, layout = build_table([(b"", meta)] + items, **table_options)
    Path(path).write_bytes(data)
    return layout
