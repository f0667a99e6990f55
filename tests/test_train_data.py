"""ckptkit.train.data: the three kinds of --data, their splits, fingerprints and errors
(without TensorFlow), then drop_corrupt and the Input pipelines on real images.

Images are scikit-learn's digits (8x8, values 0..16), scaled to 0..255 and upscaled 4x to
32x32 (cropped to 28x28 for LeNet); PNG and JPEG come from TF's encoders, BMP and GIF from
the small writers below (TF has no encoder for them).
"""
import os
import struct
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from ckptkit.errors import CkptError, NotFound
from ckptkit.train.data import (Input, Split, drop_corrupt, load_dataset, skip_warnings,
                                undecodable, without)


@pytest.fixture(scope="module")
def digits():
    """(uint8 images [n, 32, 32], labels) from sklearn's digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    return np.kron(images, np.ones((4, 4), np.uint8)), bunch.target


def _fake_folder(root, counts, ext=".png"):
    """Class folders of placeholder files (load_dataset never opens them)."""
    for name, n in counts.items():
        os.makedirs(root / name, exist_ok=True)
        for i in range(n):
            (root / name / f"img{i:03d}{ext}").write_bytes(b"x" * (i + 1))
    return root


def _relative(split, root):
    return [os.path.relpath(p, root) for p in split.items]


# --- folders ---------------------------------------------------------------------------------

def test_folder_with_train_and_val(tmp_path):
    _fake_folder(tmp_path / "train", {"cat": 2, "dog": 3})
    _fake_folder(tmp_path / "val", {"dog": 1})
    (tmp_path / "train" / "cat" / "UPPER.JPG").write_bytes(b"j")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "cat" / ".hidden.png").write_bytes(b"h")
    os.makedirs(tmp_path / "train" / ".cache")
    data = load_dataset(tmp_path)
    assert (data.kind, data.classes, data.source) == ("folder", ("cat", "dog"), str(tmp_path))
    assert data.train.kind == "files" and data.train.count == 6
    assert _relative(data.train, tmp_path / "train") == [
        "cat/UPPER.JPG", "cat/img000.png", "cat/img001.png",
        "dog/img000.png", "dog/img001.png", "dog/img002.png"]
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.train.labels.dtype == np.int64
    assert _relative(data.val, tmp_path / "val") == ["dog/img000.png"]
    assert data.val.labels.tolist() == [1] and data.val.count == 1
    assert load_dataset(tmp_path, num_classes=2).classes == ("cat", "dog")


def test_folder_named_validation_and_no_val(tmp_path):
    _fake_folder(tmp_path / "a" / "train", {"x": 1, "y": 1})
    _fake_folder(tmp_path / "a" / "validation", {"x": 1, "y": 2})
    assert load_dataset(tmp_path / "a").val.labels.tolist() == [0, 1, 1]
    flat = _fake_folder(tmp_path / "b", {"x": 1, "y": 1})
    assert load_dataset(flat).val is None


def test_val_split_is_stratified_and_seeded(tmp_path):
    root = _fake_folder(tmp_path, {"a": 10, "b": 5, "c": 2, "d": 1})
    data = load_dataset(root, val_split=0.2, seed=3)
    # per class round(n * 0.2), at least 1 from 2 images up, none from 1
    assert Counter(data.val.labels.tolist()) == {0: 2, 1: 1, 2: 1}
    assert Counter(data.train.labels.tolist()) == {0: 8, 1: 4, 2: 1, 3: 1}
    assert sorted(list(data.train.items) + list(data.val.items)) == \
        sorted(load_dataset(root).train.items)
    again = load_dataset(root, val_split=0.2, seed=3)
    assert list(again.val.items) == list(data.val.items)
    other = load_dataset(root, val_split=0.2, seed=4)
    assert list(other.val.items) != list(data.val.items)
    assert other.fingerprint != data.fingerprint
    # never all of a class
    assert Counter(load_dataset(root, val_split=0.99).train.labels.tolist()) == \
        {0: 1, 1: 1, 2: 1, 3: 1}


# --- .npz ------------------------------------------------------------------------------------

def test_npz_digits_flat_floats(tmp_path):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    path = tmp_path / "digits.npz"
    np.savez(path, X=bunch.data, y=bunch.target)
    data = load_dataset(path)
    assert (data.kind, data.classes) == ("npz", tuple("0123456789"))
    assert data.train.kind == "arrays" and data.train.count == 1797
    images = data.train.items
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    expected = np.round(bunch.data.reshape(-1, 8, 8, 1) * (255 / 16)).astype(np.uint8)
    np.testing.assert_array_equal(images, expected)
    assert images.max() == 255 and images[0, 0, 2, 0] == 80    # 5 * 255 / 16 = 79.69
    np.testing.assert_array_equal(data.train.labels, bunch.target)


def test_npz_layouts_labels_and_names(tmp_path):
    unit = np.linspace(0, 1, 4 * 3 * 3).reshape(4, 3, 3)           # [n, h, w] in [0, 1]
    np.savez(tmp_path / "a.npz", images=unit, labels=np.array(["dog", "cat", "dog", "cow"]))
    data = load_dataset(tmp_path / "a.npz")
    assert data.classes == ("cat", "cow", "dog")
    assert data.train.labels.tolist() == [2, 0, 2, 1]
    np.testing.assert_array_equal(data.train.items[..., 0],
                                  np.round(unit * 255).astype(np.uint8))
    rgba = np.arange(2 * 2 * 2 * 4, dtype=np.uint8).reshape(2, 2, 2, 4)
    np.savez(tmp_path / "b.npz", x=rgba, target=np.array([[1.0], [0.0]]),
             class_names=np.array(["no", "yes"]))
    data = load_dataset(tmp_path / "b.npz")
    assert data.classes == ("no", "yes") and data.train.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(data.train.items, rgba)


def test_npz_val_split_and_val_data(tmp_path):
    images = np.zeros((12, 4, 4), np.uint8)
    np.savez(tmp_path / "train.npz", X=images, y=np.repeat([5, 7, 9], 4))
    data = load_dataset(tmp_path / "train.npz", val_split=0.25)
    assert Counter(data.val.labels.tolist()) == {0: 1, 1: 1, 2: 1}
    assert data.train.count == 9 and data.train.items.shape == (9, 4, 4, 1)
    np.savez(tmp_path / "val.npz", X=images[:3], y=np.array([9, 9, 7]))
    data = load_dataset(tmp_path / "train.npz", val_data=tmp_path / "val.npz")
    assert data.classes == ("5", "7", "9") and data.val.labels.tolist() == [2, 2, 1]
    folder = _fake_folder(tmp_path / "val", {"7": 1, "9": 2})
    data = load_dataset(tmp_path / "train.npz", val_data=folder)
    assert data.val.kind == "files" and data.val.labels.tolist() == [1, 2, 2]


# --- fingerprints and the TF-free promise ----------------------------------------------------

def test_fingerprint_tracks_files(tmp_path):
    root = _fake_folder(tmp_path / "data", {"a": 2, "b": 2})
    first = load_dataset(root).fingerprint
    assert len(first) == 64 and load_dataset(root).fingerprint == first
    image = root / "a" / "img000.png"
    stat = image.stat()
    image.write_bytes(b"y")                         # same size, new mtime
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_dataset(root).fingerprint
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert second != first and load_dataset(root).fingerprint == first
    (root / "b" / "img001.png").write_bytes(b"longer")
    assert load_dataset(root).fingerprint not in (first, second)
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 4)), y=[0, 1])
    npz = load_dataset(tmp_path / "d.npz").fingerprint
    np.savez(tmp_path / "d.npz", X=np.ones((2, 4)), y=[0, 1])
    assert load_dataset(tmp_path / "d.npz").fingerprint != npz


def test_loading_needs_no_tensorflow(tmp_path):
    _fake_folder(tmp_path / "f", {"a": 2, "b": 2})
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 4)), y=[0, 1])
    code = ("import sys\nfrom ckptkit.train.data import load_dataset\n"
            f"load_dataset({str(tmp_path / 'f')!r}, val_split=0.5)\n"
            f"load_dataset({str(tmp_path / 'd.npz')!r})\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_slim', 'tf_keras', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.split() == ["[]"]


# --- errors ----------------------------------------------------------------------------------

def _error(path, **kwargs):
    with pytest.raises(CkptError) as info:
        load_dataset(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return info.type, message


def test_folder_errors(tmp_path):
    root = _fake_folder(tmp_path / "data", {"cat": 1, "dog": 1})
    os.makedirs(root / "emu")
    (root / "emu" / "readme.txt").write_text("no images")
    assert _error(root)[1] == \
        f"class folder {str(root / 'emu')!r} has no images (.jpg .jpeg .png .bmp .gif)"
    one = _fake_folder(tmp_path / "one", {"cat": 3})
    assert "at least 2 classes, found 1 (cat)" in _error(one)[1]
    kind, message = _error(tmp_path / "nowhere")
    assert kind is NotFound and message == f"no data at {tmp_path / 'nowhere'}"
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"x")
    assert "expected one sub-folder of images per class" in _error(tmp_path / "flat")[1]
    root = _fake_folder(tmp_path / "five", {c: 1 for c in "abcde"})
    assert _error(root, num_classes=7)[1] == \
        "--num-classes 7 but the data has 5 classes (a, b, c, d, e)"
    _fake_folder(tmp_path / "tv" / "train", {"cat": 1, "dog": 1})
    _fake_folder(tmp_path / "tv" / "val", {"cat": 1, "fox": 1})
    assert _error(tmp_path / "tv")[1] == \
        "validation class 'fox' is not a training class (cat, dog)"
    (tmp_path / "tv" / "val" / "fox" / "img000.png").unlink()
    (tmp_path / "tv" / "val" / "fox").rmdir()
    assert "already has a validation split" in _error(tmp_path / "tv", val_split=0.2)[1]
    assert "fraction between 0 and 1" in _error(tmp_path / "five", val_split=1.5)[1]


def test_npz_errors(tmp_path):
    cases = {
        "shape": (dict(X=np.zeros((3, 5)), y=[0, 1, 2]), "have shape [3, 5]; expected"),
        "count": (dict(X=np.zeros((3, 4)), y=[0, 1]), "have shape [2], expected [3]"),
        "empty": (dict(X=np.zeros((0, 4)), y=np.zeros(0)), "are empty"),
        "keys": (dict(pixels=np.zeros((2, 4)), y=[0, 1]), "it has pixels, y"),
        "names": (dict(X=np.zeros((2, 4)), y=[0, 2], classes=["a", "b"]), "must be 0..1"),
    }
    for name, (arrays, expected) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        assert expected in _error(tmp_path / f"{name}.npz")[1], name
    np.savez(tmp_path / "one.npz", X=np.zeros((2, 4)), y=[3, 3])
    assert "found 1 (3)" in _error(tmp_path / "one.npz")[1]
    (tmp_path / "junk.npz").write_text("not a zip")
    assert "not an .npz file (not a zip archive)" in _error(tmp_path / "junk.npz")[1]
    np.savez(tmp_path / "ok.npz", X=np.zeros((2, 4)), y=[0, 1])
    (tmp_path / "x.tfrecord").write_bytes(b"")
    assert "is tfrecord data but --data is npz data" in \
        _error(tmp_path / "ok.npz", val_data=tmp_path / "x.tfrecord")[1]


# --- TFRecords -------------------------------------------------------------------------------

def _write_records(tf, path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for encoded, label in examples:
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"png"])),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[label]))}
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def encode(tf):
    """encode(uint8 [h, w, c] image, "png" | "jpeg" | "bmp" | "gif") -> bytes."""
    graph = tf.Graph()
    with graph.as_default():
        image = tf.placeholder(tf.uint8, [None, None, None])
        ops = {"png": tf.io.encode_png(image), "jpeg": tf.io.encode_jpeg(image, quality=95)}
    session = tf.Session(graph=graph)

    def run(array, fmt):
        array = np.asarray(array, np.uint8)
        if fmt == "bmp":
            return _bmp(array)
        if fmt == "gif":
            return _gif(array)
        return session.run(ops[fmt], {image: array if array.ndim == 3 else array[..., None]})
    yield run
    session.close()


def _bmp(image):
    """A 24-bit BMP of a grey [h, w] image (rows bottom-up, padded to 4 bytes)."""
    h, w = image.shape
    rows = b"".join(np.repeat(image[y], 3).tobytes() + b"\0" * (-3 * w % 4)
                    for y in range(h - 1, -1, -1))
    return (struct.pack("<2sIHHI", b"BM", 54 + len(rows), 0, 0, 54) +
            struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows), 2835, 2835, 0, 0) +
            rows)


def _gif(image):
    """A GIF of a grey [h, w] image: a 256-grey palette and 9-bit LZW codes with a clear
    code every 128 pixels, so the code width never grows (no compression needed)."""
    h, w = image.shape
    pixels = image.reshape(-1).tolist()
    codes = [c for start in range(0, len(pixels), 128)
             for c in [256] + pixels[start:start + 128]] + [257]
    packed = sum(c << (9 * i) for i, c in enumerate(codes))
    data = packed.to_bytes((9 * len(codes) + 7) // 8, "little")
    blocks = b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255]
                      for i in range(0, len(data), 255))
    palette = bytes(v for g in range(256) for v in (g, g, g))
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF7, 0, 0) + palette +
            b"," + struct.pack("<HHHHB", 0, 0, w, h, 0) + b"\x08" + blocks + b"\x00;")


@pytest.mark.tf
def test_tfrecord_directory_glob_and_counting(tf, encode, digits, tmp_path):
    images, labels = digits
    png = [encode(images[i], "png") for i in range(10)]
    _write_records(tf, tmp_path / "flowers_train_00000-of-00002.tfrecord",
                   [(png[i], int(labels[i]) % 3) for i in range(4)])
    _write_records(tf, tmp_path / "flowers_train_00001-of-00002.tfrecord",
                   [(png[i], int(labels[i]) % 3) for i in range(4, 7)])
    _write_records(tf, tmp_path / "flowers_validation_00000-of-00001.tfrecord",
                   [(png[i], int(labels[i]) % 3) for i in range(7, 10)])
    (tmp_path / "notes.txt").write_text("ignored")
    data = load_dataset(tmp_path)                    # no labels.txt: 0..max label
    assert (data.kind, data.classes) == ("tfrecord", ("0", "1", "2"))
    assert data.train == Split("tfrecord", (
        str(tmp_path / "flowers_train_00000-of-00002.tfrecord"),
        str(tmp_path / "flowers_train_00001-of-00002.tfrecord")), None, 7)
    assert data.val.count == 3 and data.val.labels is None
    (tmp_path / "labels.txt").write_text("0:daisy\n1:rose\n2:tulip\n")
    named = load_dataset(tmp_path)
    assert named.classes == ("daisy", "rose", "tulip")
    assert named.fingerprint != data.fingerprint
    matched = load_dataset(str(tmp_path / "flowers_train_*"), num_classes=3)
    assert matched.train.count == 7 and matched.val is None
    val = load_dataset(str(tmp_path / "flowers_train_*"),
                       val_data=tmp_path / "flowers_validation_00000-of-00001.tfrecord")
    assert val.val.count == 3
    assert "does not apply to TFRecord" in \
        _error(str(tmp_path / "flowers_train_*"), val_split=0.1)[1]
    assert _error(str(tmp_path / "nothing_*"))[0] is NotFound
    broken = tmp_path / "bad" / "x_train.tfrecord"
    broken.parent.mkdir()
    broken.write_bytes((tmp_path / "flowers_train_00000-of-00002.tfrecord").read_bytes()[:-9])
    assert "record 3 (byte" in _error(broken)[1] and "is truncated" in _error(broken)[1]
    broken.write_bytes(b"\1" * 40)
    assert "bad length checksum" in _error(broken)[1]


# --- drop_corrupt ----------------------------------------------------------------------------

@pytest.mark.tf
def test_drop_corrupt_names_the_bad_files(encode, digits, tmp_path):
    images, _ = digits
    root = tmp_path / "train"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i, fmt in enumerate(["png", "jpeg", "gif"]):
        (root / "a" / f"ok{i}.{fmt}").write_bytes(encode(images[i], fmt))
    (root / "b" / "ok.bmp").write_bytes(encode(images[3], "bmp"))
    jpeg = encode(images[4], "jpeg")
    (root / "a" / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("this is not a JPEG\n")
    data = load_dataset(tmp_path)
    assert data.train.count == 7
    clean, bad = drop_corrupt(data)
    assert sorted(bad) == sorted(str(root / p) for p in
                                 ("a/truncated.jpg", "b/empty.png", "b/text.jpg"))
    assert _relative(clean.train, root) == ["a/ok0.png", "a/ok1.jpeg", "a/ok2.gif", "b/ok.bmp"]
    assert clean.train.labels.tolist() == [0, 0, 0, 1] and clean.train.count == 4
    assert clean.fingerprint == data.fingerprint
    assert sorted(skip_warnings(bad)) == [
        f"warning: skipping unreadable image {root / path} ({why})" for path, why in (
            ("a/truncated.jpg", "truncated JPEG"), ("b/empty.png", "empty file"),
            ("b/text.jpg", "not an image (text)"))]
    (root / "b" / "ok.bmp").unlink()
    with pytest.raises(CkptError, match=r"class folder '.*b' has no readable images"):
        drop_corrupt(load_dataset(tmp_path))
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 4)), y=[0, 1])
    npz = load_dataset(tmp_path / "d.npz")
    assert drop_corrupt(npz) == (npz, [])


PNG_END = b"\0\0\0\0IEND\xaeB`\x82"


@pytest.mark.parametrize("contents, why", [
    (b"", "empty file"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "truncated PNG"),
    (b"\x89PNG\r\n\x1a\n garbage" + PNG_END, "corrupt PNG (Invalid PNG data)"),
    (b"\xff\xd8\xff\xe0\0\x10JFIF", "truncated JPEG"),
    (b"GIF89a\x01\0", "truncated GIF"),
    (b"RIFF\x10\0\0\0WEBPVP8 ", "corrupt WebP (Invalid PNG data)"),
    (b"II*\0\x08\0\0\0", "a TIFF file; images are read as JPEG, PNG, GIF, BMP or WebP"),
    (b"\0\0\0\x18ftypheic", "a HEIC file; images are read as JPEG, PNG, GIF, BMP or WebP"),
    (b"hello,world\n1,2\n", "not an image (text)"),
    (bytes(range(256)), "not an image (no JPEG, PNG, GIF, BMP or WebP signature)"),
], ids=["empty", "png-cut", "png-bad", "jpeg-cut", "gif-cut", "webp", "tiff", "heic", "text",
        "binary"])
def test_undecodable_says_why_from_the_bytes(contents, why):
    assert undecodable(contents, "Invalid PNG data") == why


def test_without_removes_the_named_files_from_both_splits(tmp_path):
    _fake_folder(tmp_path / "train", {"a": 3, "b": 2})
    _fake_folder(tmp_path / "val", {"a": 1, "b": 2})
    data = load_dataset(tmp_path)
    gone = [str(tmp_path / "train" / "a" / "img001.png"), str(tmp_path / "val" / "b" /
                                                             "img000.png")]
    kept = without(data, gone)
    assert _relative(kept.train, tmp_path / "train") == [
        "a/img000.png", "a/img002.png", "b/img000.png", "b/img001.png"]
    assert kept.train.labels.tolist() == [0, 0, 1, 1] and kept.train.count == 4
    assert _relative(kept.val, tmp_path / "val") == ["a/img000.png", "b/img001.png"]
    assert kept.fingerprint == data.fingerprint
    assert without(data, []) is data


# --- Input -----------------------------------------------------------------------------------

def _passes(tf, inputs, epochs):
    """{epoch: (images, labels)} of one pass of each Input (a list) per epoch, in a fresh
    session of the current graph."""
    out = []
    with tf.Session() as session:
        for epoch in epochs:
            row = []
            for pipe in inputs:
                pipe.start(session, epoch)
                batches = [session.run([pipe.images, pipe.labels]) for _ in range(pipe.steps)]
                with pytest.raises(tf.errors.OutOfRangeError):
                    session.run(pipe.labels)
                row.append((np.concatenate([b[0] for b in batches]),
                            np.concatenate([b[1] for b in batches]),
                            [len(b[1]) for b in batches]))
            out.append(row)
    return out


def _order(found, expected):
    """Index into `expected` of each image of `found` (exact matches)."""
    flat = expected.reshape(len(expected), -1)
    hits = [np.flatnonzero((flat == image.reshape(-1)).all(axis=1)) for image in found]
    assert all(len(h) == 1 for h in hits)
    return [int(h[0]) for h in hits]


@pytest.mark.tf
def test_input_files_lenet_order_and_values(tf, encode, digits, tmp_path):
    images, labels = digits
    small = images[:21, 2:30, 2:30]                      # 28x28: LeNet's size, 3 classes x 7
    for i in range(21):
        os.makedirs(tmp_path / f"c{i % 3}", exist_ok=True)
        (tmp_path / f"c{i % 3}" / f"{i:02d}.png").write_bytes(encode(small[i], "png"))
    data = load_dataset(tmp_path)
    by_item = np.stack([small[int(os.path.basename(p)[:2])] for p in data.train.items])
    expected = (by_item[..., None].astype(np.float32) - 128) / 128
    with tf.Graph().as_default():
        train = Input(data.train, "lenet", batch_size=4, training=True, augment=False, seed=5)
        evaluate = Input(data.train, "lenet", batch_size=4, training=False, name="eval")
        assert train.images.shape.as_list() == [None, 28, 28, 1]
        assert train.images.dtype == tf.float32 and train.labels.dtype == tf.int64
        first, again = _passes(tf, [train, evaluate], [1, 2]), _passes(tf, [train], [1])
    (e1, e1_labels, sizes), (ev, ev_labels, _) = first[0]
    assert train.steps == 6 and sizes == [4, 4, 4, 4, 4, 1]
    # eval: the split's order. A decoded file's channel count is unknown to the graph, so
    # nets.preprocess takes grey through RGB and back (luma weights sum to 0.9999)
    np.testing.assert_allclose(ev, expected, rtol=0, atol=255e-4 / 128)
    assert ev_labels.tolist() == data.train.labels.tolist()
    order = np.random.default_rng([5, 1]).permutation(21).tolist()
    assert _order(e1, ev) == order
    assert e1_labels.tolist() == data.train.labels[order].tolist()
    np.testing.assert_array_equal(again[0][0][0], e1)    # same (seed, epoch): same order
    e2, e2_labels, _ = first[1][0]
    assert _order(e2, ev) == np.random.default_rng([5, 2]).permutation(21).tolist()
    assert _order(e2, ev) != order and sorted(e2_labels) == sorted(e1_labels)
    np.testing.assert_array_equal(first[1][1][0], ev)   # eval order stays put


@pytest.mark.tf
def test_input_arrays_per_net(tf, digits, tmp_path):
    images, labels = digits
    np.savez(tmp_path / "d.npz", X=images[:10, 2:30, 2:30], y=labels[:10] % 2)
    data = load_dataset(tmp_path / "d.npz")
    with tf.Graph().as_default():
        lenet = Input(data.train, "lenet", batch_size=3, training=False)
        cifar = Input(data.train, "cifarnet", batch_size=8, training=True, name="cifar")
        assert cifar.images.shape.as_list() == [None, 32, 32, 3]
        (lenet_out, cifar_out), = _passes(tf, [lenet, cifar], [0])
    np.testing.assert_array_equal(
        lenet_out[0], (data.train.items.astype(np.float32) - 128) / 128)
    assert lenet_out[1].tolist() == (labels[:10] % 2).tolist()
    assert cifar_out[0].shape == (10, 32, 32, 3) and cifar_out[0].dtype == np.float32
    assert Counter(cifar_out[1].tolist()) == Counter((labels[:10] % 2).tolist())
    assert np.isfinite(cifar_out[0]).all()


@pytest.mark.tf
def test_gif_bmp_and_grey_png_feed_a_colour_net(tf, encode, digits, tmp_path):
    images, _ = digits
    image = images[7]                                    # 32x32: cifarnet's size
    for fmt, label in (("png", "a"), ("gif", "b"), ("bmp", "c")):
        os.makedirs(tmp_path / label)
        (tmp_path / label / f"x.{fmt}").write_bytes(encode(image, fmt))
    data = load_dataset(tmp_path)
    with tf.Graph().as_default():
        pipe = Input(data.train, "cifarnet", batch_size=3, training=False)
        (out,), = _passes(tf, [pipe], [0])
    grey, gif, bmp = out[0]
    assert out[1].tolist() == [0, 1, 2] and grey.shape == (32, 32, 3)
    assert np.array_equal(grey[..., 0], grey[..., 2]) and grey.std() > 0.5
    np.testing.assert_allclose(gif, grey, atol=1e-5)
    np.testing.assert_allclose(bmp, grey, atol=1e-5)


@pytest.mark.tf
def test_input_tfrecords_shuffle_per_epoch(tf, encode, digits, tmp_path):
    images, labels = digits
    for part, rows in enumerate((range(0, 12), range(12, 20))):
        _write_records(tf, tmp_path / f"train-0000{part}-of-00002",
                       [(encode(images[i], "png"), int(labels[i])) for i in rows])
    data = load_dataset(tmp_path)
    assert data.train.count == 20 and data.classes == tuple("0123456789")
    with tf.Graph().as_default():
        train = Input(data.train, "cifarnet", batch_size=6, training=True, augment=False,
                      seed=1)
        evaluate = Input(data.train, "lenet", batch_size=6, training=False, name="eval")
        first = _passes(tf, [train, evaluate], [0, 1])
        again = _passes(tf, [train, evaluate], [0])
    (t0, t0_labels, sizes), (v0, v0_labels, _) = first[0]
    assert train.steps == 4 and sizes == [6, 6, 6, 2] and t0.shape == (20, 32, 32, 3)
    assert sorted(t0_labels) == sorted(labels[:20]) == sorted(first[1][0][1])
    assert sorted(v0_labels) == sorted(labels[:20])
    np.testing.assert_array_equal(again[0][0][0], t0)
    np.testing.assert_array_equal(again[0][1][1], v0_labels)
    assert first[1][0][1].tolist() != t0_labels.tolist()
    np.testing.assert_array_equal(first[1][1][1], v0_labels)
