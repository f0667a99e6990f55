"""The table reader, raw snappy and slice keys, without TF: against bytes TF 2.21 wrote
(tf_factories.GOLDEN_*, and slice keys captured from TF's SaveV2) and hand-built tables."""
import struct

import google_crc32c
import numpy as np
import pytest

import ckptkit
from ckptkit.formats import slices
from ckptkit.formats.sstable import (MAGIC, Table, TableWriter, _unsnappy, is_table, mask_crc,
                                     unmask_crc)
from helpers.bundle_writer import build_block, varint, write_table
from helpers.tf_factories import GOLDEN_SLICES, GOLDEN_V1, GOLDEN_VALUES, assert_same_value, write_golden

# --- slice keys: checkpoint::EncodeTensorNameSlice, as TF wrote them ------------------------

TF_SLICE_KEYS = [
    # (name, extents) -> key, from tf.raw_ops.SaveV2 with shape_and_slices / Saver on TF 2.21
    ("part", ((0, 3),), b"\x00part\x00\x01\x01\x01\x80\x83"),
    ("part", ((3, 2),), b"\x00part\x00\x01\x01\x01\x83\x82"),
    ("e", ((63, 1),), b"\x00e\x00\x01\x01\x01\xbf\x81"),
    ("f", ((64, 1),), b"\x00f\x00\x01\x01\x01\xc0@\x81"),
    ("g", ((8191, 1),), b"\x00g\x00\x01\x01\x01\xdf\xff\x81"),
    ("h", ((8192, 1),), b"\x00h\x00\x01\x01\x01\xe0 \x00\x81"),
    ("mid", ((65536, 4),), b"\x00mid\x00\x01\x01\x01\xe1\x00\x00\x84"),
    ("pbig", ((100000, 100000),), b"\x00pbig\x00\x01\x01\x01\xe1\x86\xa0\xe1\x86\xa0"),
    ("big", ((2999999996, 4),), b"\x00big\x00\x01\x01\x01\xf8\xb2\xd0]\xfc\x84"),
    ("two", ((1, 2), (0, 9)), b"\x00two\x00\x01\x01\x02\x81\x82\x80\x89"),
    ("part_axis1", ((0, 6), (1024, 1024)),
     b"\x00part_axis1\x00\x01\x01\x02\x80\x86\xc4\x00\xc4\x00"),
    ("n\x00\u00ff", ((0, 4),), b"\x00n\x00\xff\xc3\xbf\x00\x01\x01\x01\x80\x84"),
    # V1: a whole tensor is one slice of full extents (length -1); a scalar has rank 0
    ("a", ((0, -1),), b"\x00a\x00\x01\x01\x01\x80\x7f"),
    ("big", ((0, -1), (0, -1)), b"\x00big\x00\x01\x01\x02\x80\x7f\x80\x7f"),
    ("s", (), b"\x00s\x00\x01\x00"),
]


@pytest.mark.parametrize("name, extents, key", TF_SLICE_KEYS)
def test_slice_key_is_the_key_tf_wrote(name, extents, key):
    assert slices.slice_key(name, extents) == key
    assert key.startswith(slices.name_prefix(name))


def test_slice_keys_sort_before_every_tensor_name():
    keys = [k for _, _, k in TF_SLICE_KEYS]
    assert all(k < b"\x01" for k in keys)
    starts = [slices.slice_key("x", ((s, 1),)) for s in (0, 1, 63, 64, 8191, 8192, 65536, 2**40)]
    assert starts == sorted(starts)   # OrderedCode keeps numeric order


# --- the golden files ------------------------------------------------------------------------

def test_golden_v2_index_keys(tmp_path):
    prefix = write_golden(tmp_path)
    table = Table(prefix + ".index")
    keys = [k for k, _ in table.items()]
    part = [slices.slice_key("part", ext) for ext in GOLDEN_SLICES["part"]]
    assert keys == [b""] + part + [b"a", b"part", b"s"]
    assert [k for k, _ in table.items(start=b"part")] == [b"part", b"s"]
    assert [k for k, _ in table.items(start=slices.name_prefix("part"))] == keys[1:]
    table.close()


@pytest.mark.parametrize("version", ["V2", "V1"])
def test_golden_checkpoint_values(tmp_path, version):
    with ckptkit.open_checkpoint(write_golden(tmp_path, version)) as reader:
        assert reader.format == f"tf-{version.lower()}"
        assert [(v.name, v.shape, v.dtype) for v in reader] == \
            [("a", (2,), "float32"), ("part", (5,), "int32"), ("s", (), "string")]
        assert reader.variables["part"].slices == GOLDEN_SLICES["part"]
        for name, value in GOLDEN_VALUES.items():
            assert_same_value(reader.read(name), value, name)
        assert list(reader.problems()) == []


def test_golden_v1_keys(tmp_path):
    path = write_golden(tmp_path, "V1")
    keys = [k for k, _ in Table(path).items()]
    assert keys == [b"", slices.slice_key("a", ((0, -1),))] + \
        [slices.slice_key("part", ext) for ext in GOLDEN_SLICES["part"]] + \
        [slices.slice_key("s", ())]


# --- hand-built tables ------------------------------------------------------------------------

def _items(n=300):
    rng = np.random.default_rng(0)
    out = {b"": b"header"}
    for i in range(n):
        key = f"scope{i % 7}/layer_{i:04d}/{'kernel' if i % 2 else 'bias'}".encode()
        out[key] = bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))
    out[b"\x00slice\x00\x01\x01\x01\x80\x7f"] = b""
    out[b"\xff" * 5] = b"last"
    return sorted(out.items())


LAYOUTS = {  # id: (block_size, restart_interval, snappy)
    "one-block": (1 << 20, 16, False),
    "many-blocks": (64, 1, False),
    "prefix-compressed": (512, 16, False),
    "snappy": (256, 3, True),
    "snappy-one-block": (1 << 20, 1000, True),
}


@pytest.fixture(params=LAYOUTS.values(), ids=list(LAYOUTS))
def table(request, tmp_path):
    block_size, restart_interval, snappy = request.param
    path = str(tmp_path / "t.index")
    items = _items()
    write_table(path, items, block_size=block_size, restart_interval=restart_interval,
                compression=1 if snappy else 0)
    table = Table(path)
    yield table, items
    table.close()


def test_table_lists_every_entry_in_order(table):
    table, items = table
    assert list(table.items()) == items


@pytest.mark.parametrize("start", [b"", b"\x00", b"scope3/", b"scope3/layer_0010/kernel",
                                   b"scope3/layer_0010/kernel\x00", b"scope9", b"\xff" * 6])
def test_items_from_a_start_key(table, start):
    table, items = table
    assert list(table.items(start=start)) == [(k, v) for k, v in items if k >= start]


def test_empty_table(tmp_path):
    path = str(tmp_path / "empty")
    write_table(path, [])
    assert is_table(path)
    assert list(Table(path).items()) == []


def _corrupt(tmp_path, mutate):
    path = str(tmp_path / "t")
    data = bytearray(write_table(path, _items(40), block_size=128))
    mutate(data)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_flipped_byte_in_a_block_is_caught_by_its_checksum(tmp_path):
    path = _corrupt(tmp_path, lambda d: d.__setitem__(20, d[20] ^ 0x01))
    with pytest.raises(ckptkit.Corrupt, match="checksum mismatch in block at offset 0"):
        list(Table(path).items())


def test_bad_magic(tmp_path):
    path = _corrupt(tmp_path, lambda d: d.__setitem__(-1, 0))
    assert not is_table(path)
    with pytest.raises(ckptkit.FormatError, match="bad magic"):
        Table(path)


def test_truncated_file(tmp_path):
    path = str(tmp_path / "t")
    data = write_table(path, _items(40), block_size=128)
    with open(path, "wb") as f:
        f.write(data[:200] + data[-48:])   # blocks cut away, footer kept
    with pytest.raises(ckptkit.FormatError, match="truncated|past the end"):
        list(Table(path).items())


@pytest.mark.parametrize("size", [0, 10, 47])
def test_too_short_to_be_a_table(tmp_path, size):
    path = tmp_path / "short"
    path.write_bytes(struct.pack("<Q", MAGIC).rjust(size, b"\x00")[-size:] if size else b"")
    assert not is_table(str(path))
    with pytest.raises(ckptkit.FormatError, match="too short"):
        Table(str(path))


def test_unknown_compression_type(tmp_path):
    path = str(tmp_path / "t")
    block = b"\x00\x01\x01k" + b"v" + struct.pack("<II", 0, 1)   # one entry, one restart
    kind = bytes([2])   # 2 is not a type the table format defines
    data = block + kind + struct.pack("<I", mask_crc(google_crc32c.value(block + kind)))
    empty = struct.pack("<II", 0, 1)
    meta_at = len(data)
    data += empty + b"\x00" + struct.pack("<I", mask_crc(google_crc32c.value(empty + b"\x00")))
    index = b"\x00\x01" + bytes([2]) + b"k" + varint(0) + varint(len(block)) + \
        struct.pack("<II", 0, 1)
    index_at = len(data)
    data += index + b"\x00" + struct.pack("<I", mask_crc(google_crc32c.value(index + b"\x00")))
    handles = varint(meta_at) + varint(len(empty)) + varint(index_at) + varint(len(index))
    data += handles.ljust(40, b"\x00") + struct.pack("<Q", MAGIC)
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(ckptkit.Unsupported, match="unknown type 2"):
        list(Table(path).items())


def test_table_writer_shares_key_prefixes_byte_for_byte(tmp_path):
    """Keys that share prefixes of every length, one the prefix of the next, 0x00 and 0xff
    bytes where they differ: TableWriter's data block is the test encoder's, byte for byte."""
    keys = sorted({b"", b"a", b"a\x00", b"a\x00\xff", b"a\x01", b"ab", b"abc" * 30,
                   b"abc" * 30 + b"\x00", b"abc" * 29 + b"abd", b"abd", b"b", b"\xff",
                   b"\xff\xff", b"\xff\xff\x00"} | {b"k" * n for n in range(2, 40)})
    items = [(key, bytes([i])) for i, key in enumerate(keys)]
    path = tmp_path / "t"
    with open(path, "wb") as f:
        table = TableWriter(f)
        for key, value in items:
            table.add(key, value)
        table.finish()
    block = build_block(items)
    assert path.read_bytes()[:len(block)] == block
    read = Table(str(path))
    assert list(read.items()) == items
    read.close()


def test_crc_masking():
    # LevelDB's crc32c test vector: 32 zero bytes
    crc = google_crc32c.value(bytes(32))
    assert crc == 0x8A9136AA
    assert mask_crc(crc) != crc and unmask_crc(mask_crc(crc)) == crc
    assert unmask_crc(mask_crc(mask_crc(crc))) == mask_crc(crc)


# --- raw snappy -------------------------------------------------------------------------------

def _literal(data):
    n = len(data) - 1
    if n < 60:
        return bytes([n << 2]) + data
    if n < 256:
        return bytes([60 << 2, n]) + data
    return bytes([61 << 2]) + n.to_bytes(2, "little") + data


def _copy1(length, offset):   # 4..11 bytes, offset < 2048
    return bytes([((length - 4) << 2) | ((offset >> 8) << 5) | 1, offset & 0xFF])


def _copy2(length, offset):
    return bytes([((length - 1) << 2) | 2]) + offset.to_bytes(2, "little")


def _copy4(length, offset):
    return bytes([((length - 1) << 2) | 3]) + offset.to_bytes(4, "little")


SNAPPY = {
    "literal": (_literal(b"hello"), b"hello"),
    "long-literal-1-byte-length": (_literal(bytes(range(61))), bytes(range(61))),
    "long-literal-2-byte-length": (_literal(bytes(300)), bytes(300)),
    "copy-1-byte-offset": (_literal(b"abcd") + _copy1(8, 4), b"abcd" * 3),
    "copy-1-byte-offset-high-bits": (_literal(bytes(range(256)) * 2) + _copy1(11, 300),
                                     bytes(range(256)) * 2 + (bytes(range(256)) * 2)[212:223]),
    "copy-2-byte-offset": (_literal(b"abcdefgh") + _copy2(10, 8), b"abcdefghabcdefghab"),
    "copy-4-byte-offset": (_literal(b"xyz") + _copy4(3, 3), b"xyzxyz"),
    "overlapping-run": (_literal(b"a") + _copy2(64, 1), b"a" * 65),
    "empty": (b"", b""),
}


@pytest.mark.parametrize("body, expected", SNAPPY.values(), ids=list(SNAPPY))
def test_unsnappy(body, expected):
    assert _unsnappy(varint(len(expected)) + body, "t") == expected


CORRUPT_SNAPPY = {
    "offset-zero": varint(8) + _literal(b"abcd") + _copy1(4, 0),
    "offset-past-output": varint(12) + _literal(b"abcd") + _copy1(8, 5),
    "literal-past-end": varint(10) + bytes([9 << 2]) + b"abc",
    "too-short": varint(10) + _literal(b"abcd"),
    "too-long": varint(2) + _literal(b"abcd"),
    "truncated-copy": varint(8) + _literal(b"abcd") + bytes([2]),
}


@pytest.mark.parametrize("data", CORRUPT_SNAPPY.values(), ids=list(CORRUPT_SNAPPY))
def test_corrupt_snappy_is_corrupt(data):
    with pytest.raises(ckptkit.Corrupt, match="snappy"):
        _unsnappy(data, "t")


def test_absurd_snappy_length_is_refused_before_allocating():
    with pytest.raises(ckptkit.FormatError, match="claims"):
        _unsnappy(varint(1 << 40) + _literal(b"a"), "t")


def test_v1_entries_rewritten_with_snappy_blocks_read_the_same(tmp_path):
    """TF writes uncompressed blocks; other tools wrote snappy ones: same entries, same values."""
    path = str(tmp_path / "v1")
    with open(path, "wb") as f:
        f.write(GOLDEN_V1)
    items = list(Table(path).items())
    write_table(str(tmp_path / "v1s"), items, block_size=64, compression=1)
    with ckptkit.open_checkpoint(str(tmp_path / "v1s")) as reader:
        for name, value in GOLDEN_VALUES.items():
            assert_same_value(reader.read(name), value, name)
