"""The datasets of `ckptkit finetune` and their tf.data input pipelines.

Three kinds of --data:
  folder    one sub-folder of images per class (the dogs-vs-cats / hotdog layout), or
            train/<class>/ with val/<class>/ or validation/<class>/ beside it
  npz       images under X (x, images, data) and labels under y (labels, target)
  tfrecord  tf-slim's tf.train.Example records (`image/encoded`, `image/class/label`): a glob
            pattern, one file, or a directory (train files name "train", validation files
            "val"), with slim's labels.txt beside them when there is one

load_dataset reads only names, sizes and labels, without TensorFlow, so a bad --data fails
in a second, before TF loads. Its fingerprint (recorded in run.json) is made from file names,
sizes and mtimes, never image contents, so checking it on resume is cheap. drop_corrupt
decodes every image of a folder once; Input turns a split into batches in the current graph.
"""
import hashlib
import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass, replace
from glob import glob
from math import isqrt

import google_crc32c
import numpy as np

from ..errors import CkptError, Corrupt, FormatError, NotFound
from ..formats.protos import decode, message, repeated_array
from ..formats.sstable import mask_crc
from ..images import IMAGE_EXTENSIONS, is_image

VAL_FOLDERS = ("val", "validation")
LABELS_FILE = "labels.txt"
ENCODED, LABEL = "image/encoded", "image/class/label"
_X_KEYS, _Y_KEYS, _NAME_KEYS = ("X", "x", "images", "data"), ("y", "labels", "target"), \
    ("classes", "class_names")
_RECORD_NAME = re.compile(r"\.tfrecord|\d+-of-\d+")

# tf.train.Example, just enough to find one int64 feature
_INT64_FEATURE = message({3: ("int64_list", message({1: ("value", "varints")}))})
_EXAMPLE = message({1: ("features", message({
    1: ("feature[]", message({1: ("key", "str"), 2: ("value", "bytes")}))}))})


@dataclass(frozen=True)
class Split:
    """The examples of one split."""

    kind: str       # "files" (image paths), "arrays" (uint8 images), "tfrecord" (record files)
    items: object   # files: np.ndarray of str paths; arrays: uint8 [n, h, w, c]; tfrecord: paths
    labels: object  # np.int64 [n] for files and arrays; None for tfrecord
    count: int


@dataclass(frozen=True)
class Dataset:
    """A loaded --data: its classes (label i is classes[i]) and splits."""

    source: str         # the --data argument
    kind: str           # "folder" | "npz" | "tfrecord"
    classes: tuple
    train: Split
    val: object         # Split or None
    fingerprint: str    # sha256 hex of the data's identity (see the module notes)


def load_dataset(data, *, val_data=None, val_split=None, seed=0, num_classes=None,
                 min_classes=2):
    """The Dataset at `data`. Its validation split comes from one of: a val/ folder or
    validation records beside the training data; `val_data` (more data with the training
    classes, a folder or .npz for either, records for records); `val_split`, a stratified,
    seeded fraction of the training examples (not for TFRecords, whose examples are only
    reachable by reading the files). Two of them at once is an error; none gives val None."""
    source = os.fspath(data)
    if val_split is not None and (isinstance(val_split, bool) or
                                  not isinstance(val_split, (int, float)) or
                                  not 0 < val_split < 1):
        raise CkptError(f"--val-split is a fraction between 0 and 1, got {val_split!r}")
    kind = _kind(source)
    if kind == "folder":
        classes, (train, train_id), (val, val_id) = _folder(source)
    elif kind == "npz":
        classes, images, labels = _read_npz(source)
        (train, train_id), (val, val_id) = _arrays(images, labels, source), (None, None)
    else:
        classes, (train, train_id), (val, val_id) = _records(source, *_record_files(source))
    if val_data is not None:
        if val is not None:
            raise CkptError(f"{source} has its own validation split; drop --val-data")
        val, val_id = _validation(os.fspath(val_data), kind, classes)
    rule = None
    if val_split is not None:
        if val is not None:
            raise CkptError(f"--val-split {val_split} but {source} already has a validation "
                            f"split")
        if kind == "tfrecord":
            raise CkptError("--val-split does not apply to TFRecord data; name validation "
                            "records with --val-data")
        train, val = _stratified(train, val_split, seed, source)
        rule = [val_split, seed]
    if len(classes) < min_classes:
        raise CkptError(f"{source}: a classifier needs at least 2 classes, found "
                        f"{len(classes)} ({_names(classes)})")
    if num_classes is not None and num_classes != len(classes):
        raise CkptError(f"--num-classes {num_classes} but the data has {len(classes)} classes "
                        f"({_names(classes)})")
    identity = json.dumps([kind, classes, train_id, val_id, rule])
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()
    return Dataset(source, kind, classes, train, val, fingerprint)


def _names(classes, most=10):
    shown = ", ".join(classes[:most])
    return shown + ", ..." if len(classes) > most else shown


def _kind(path):
    """"folder", "npz" or "tfrecord" by the path's shape; NotFound when nothing is there."""
    if os.path.isfile(path):
        return "npz" if path.lower().endswith(".npz") else "tfrecord"
    if os.path.isdir(path):
        has_train = os.path.isdir(os.path.join(path, "train"))
        return "folder" if has_train or not _record_names(path) else "tfrecord"
    if any(c in path for c in "*?["):
        return "tfrecord"
    raise NotFound(f"no data at {path}")


# --- image folders ----------------------------------------------------------------------

def _folder(root):
    """(classes, train part, val part); a part is (Split, identity), (None, None) when
    there is no such split."""
    train_root = os.path.join(root, "train")
    if not os.path.isdir(train_root):
        classes, split, identity = _read_folder(root)
        return classes, (split, identity), (None, None)
    classes, split, identity = _read_folder(train_root)
    for name in VAL_FOLDERS:
        if os.path.isdir(os.path.join(root, name)):
            return classes, (split, identity), \
                _aligned(_read_folder(os.path.join(root, name)), classes)
    return classes, (split, identity), (None, None)


def _read_folder(root):
    """(classes, Split of kind "files", identity) of a folder of class folders. Items are in
    class order, then by name, so a seeded split is the same on every machine."""
    with os.scandir(root) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise CkptError(f"{root}: expected one sub-folder of images per class "
                        f"({os.path.join(root, '<class>', '*.jpg')}), or train/<class>/ with "
                        f"val/<class>/ beside it, or TFRecord files")
    paths, labels, identity = [], [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        with os.scandir(folder) as entries:
            images = sorted(e.name for e in entries if is_image(e.name) and e.is_file())
        if not images:
            raise CkptError(f"class folder {folder!r} has no images "
                            f"({' '.join(IMAGE_EXTENSIONS)})")
        for image in images:
            path = os.path.join(folder, image)
            stat = os.stat(path)
            paths.append(path)
            identity.append([f"{name}/{image}", stat.st_size, stat.st_mtime_ns])
        labels += [label] * len(images)
    split = Split("files", np.array(paths, dtype=str), np.array(labels, np.int64), len(paths))
    return tuple(classes), split, sorted(identity)


def _aligned(loaded, classes):
    """A validation part whose labels index the training classes (it may lack some)."""
    val_classes, split, identity = loaded
    unknown = [c for c in val_classes if c not in classes]
    if unknown:
        raise CkptError(f"validation class {unknown[0]!r} is not a training class "
                        f"({_names(classes)})")
    if split.labels is not None:
        index = np.array([classes.index(c) for c in val_classes], np.int64)
        split = replace(split, labels=index[split.labels])
    return split, identity


def _validation(path, kind, classes):
    """The part of --val-data: records for records, a folder or .npz otherwise."""
    val_kind = _kind(path)
    if "tfrecord" in (kind, val_kind) and val_kind != kind:
        raise CkptError(f"--val-data {path} is {val_kind} data but --data is {kind} data")
    if val_kind == "folder":
        return _aligned(_read_folder(path), classes)
    if val_kind == "npz":
        names, images, labels = _read_npz(path)
        return _aligned((names, *_arrays(images, labels, path)), classes)
    train_files, val_files = _record_files(path)
    return _record_part(val_files or train_files, False)[0]


def _stratified(split, fraction, seed, source):
    """(train, val): per class round(n * fraction) examples drawn with
    np.random.default_rng(seed) go to val, at least 1 when a class has 2, never all."""
    rng = np.random.default_rng(seed)
    val = np.zeros(split.count, bool)
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        n = len(members)
        take = min(max(int(round(n * fraction)), 1), n - 1)
        val[members[rng.permutation(n)[:take]]] = True
    if not val.any():
        raise CkptError(f"--val-split {fraction} leaves no validation examples in {source} "
                        f"(no class has 2)")
    return _subset(split, ~val), _subset(split, val)


def _subset(split, mask):
    return Split(split.kind, split.items[mask], split.labels[mask], int(mask.sum()))


# --- .npz -------------------------------------------------------------------------------

def _read_npz(path):
    """(classes, uint8 images [n, h, w, c], int64 labels) of an .npz file."""
    if not zipfile.is_zipfile(path):
        raise FormatError(f"{path}: not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = archive.files
            x_key = next((k for k in _X_KEYS if k in keys), None)
            y_key = next((k for k in _Y_KEYS if k in keys), None)
            if x_key is None or y_key is None:
                raise CkptError(f"{path}: expected images under {'/'.join(_X_KEYS)} and "
                                f"labels under {'/'.join(_Y_KEYS)}; it has {', '.join(keys)}")
            name_key = next((k for k in _NAME_KEYS if k in keys), None)
            x, y = archive[x_key], archive[y_key]
            names = None if name_key is None else archive[name_key]
    except (OSError, ValueError) as e:     # not a zip, object arrays, a bad member
        raise FormatError(f"{path}: not a readable .npz ({e})") from None
    images = _npz_images(x, f"{path}: images {x_key!r}")
    if y.ndim == 2 and y.shape[1] == 1:     # Keras' CIFAR-10 labels
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(images):
        raise CkptError(f"{path}: labels {y_key!r} have shape {list(y.shape)}, expected "
                        f"[{len(images)}] like the images")
    classes, labels = _npz_labels(y, names, f"{path}: labels {y_key!r}")
    return classes, images, labels


def _npz_images(x, what):
    """[n, h, w], [n, h, w, c] with c 1, 3 or 4, or [n, d] with d a square, as uint8
    [n, h, w, c]; other values are scaled to 0..255 (by 255 when they stay within 1)."""
    if x.ndim == 2 and x.shape[1] and isqrt(x.shape[1]) ** 2 == x.shape[1]:
        side = isqrt(x.shape[1])
        x = x.reshape(len(x), side, side, 1)
    elif x.ndim == 3:
        x = x[..., None]
    elif x.ndim != 4 or x.shape[3] not in (1, 3, 4):
        raise CkptError(f"{what} have shape {list(x.shape)}; expected [n, h, w], "
                        f"[n, h, w, c] with c 1, 3 or 4, or [n, d] with d a square (8x8: 64)")
    if x.size == 0:
        raise CkptError(f"{what} are empty (shape {list(x.shape)})")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "biuf":
        raise CkptError(f"{what} have dtype {x.dtype}; expected numbers")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise CkptError(f"{what} hold NaN or infinite values")
    top = x.max()
    return np.clip(np.round(x * (255.0 if top <= 1.0 else 255.0 / top)), 0, 255) \
        .astype(np.uint8)


def _npz_labels(y, names, what):
    """(classes, labels 0..k-1): the sorted distinct values as strings, or `names` when the
    file has them (then y must index them)."""
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise CkptError(f"{what} are fractional; expected integer or string labels")
        y = y.astype(np.int64)
    if names is not None:
        classes = tuple(str(n) for n in names.reshape(-1))
        if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= len(classes):
            raise CkptError(f"{what} must be 0..{len(classes) - 1} to index the "
                            f"{len(classes)} class names")
        return classes, y.astype(np.int64)
    if y.dtype.kind not in "biuUS":
        raise CkptError(f"{what} have dtype {y.dtype}; expected integers or strings")
    values, labels = np.unique(y, return_inverse=True)
    classes = tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                    for v in values)
    return classes, labels.reshape(-1).astype(np.int64)


def _arrays(images, labels, path):
    """The part of an .npz file: its arrays, identified by the file's bytes."""
    return Split("arrays", images, labels, len(labels)), _file_identity(path)


def _file_identity(path):
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- TFRecords --------------------------------------------------------------------------

def _record_names(folder):
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and
                  _RECORD_NAME.search(n) and os.path.isfile(os.path.join(folder, n)))


def _record_files(path):
    """(train files, validation files): every match of a glob pattern or the one file; in
    a directory the record files naming "train", and those naming "val" ("validation")."""
    if any(c in path for c in "*?["):
        files = sorted(f for f in glob(path) if os.path.isfile(f))
        if not files:
            raise NotFound(f"no files match {path}")
        return files, []
    if os.path.isfile(path):
        return [path], []
    names = _record_names(path)
    train = [os.path.join(path, n) for n in names if "train" in n]
    val = [os.path.join(path, n) for n in names if "train" not in n and "val" in n]
    if not train and not val:
        raise CkptError(f"{path}: no TFRecord files naming 'train' or 'val' among "
                        f"{', '.join(names)}")
    return train, val


def _records(source, train_files, val_files):
    """(classes, train part, val part or (None, None)): classes from labels.txt beside the
    training files, else "0".."k-1" for the largest label k-1 found in the records."""
    if not train_files:
        raise CkptError(f"{source}: no training TFRecord files (names containing 'train')")
    labels_path = os.path.join(os.path.dirname(train_files[0]), LABELS_FILE)
    has_names = os.path.isfile(labels_path)
    train, labels = _record_part(train_files, not has_names)
    val, val_labels = _record_part(val_files, not has_names) if val_files \
        else ((None, None), [])
    if has_names:
        return _labels_file(labels_path), train, val
    return tuple(str(i) for i in range(max(labels + val_labels) + 1)), train, val


def _record_part(files, read_labels):
    """((Split, identity), labels read): counting records, and reading labels if asked."""
    count, labels, identity = 0, [], []
    for path in files:
        n, found = _scan_records(path, read_labels)
        count += n
        labels += found
        stat = os.stat(path)
        identity.append([os.path.basename(path), stat.st_size, stat.st_mtime_ns])
    if not count:
        raise CkptError(f"no records in {', '.join(files)}")
    return (Split("tfrecord", tuple(files), None, count), identity), labels


def _scan_records(path, read_labels):
    """(record count, labels) of a TFRecord file: each record is a uint64 length, the masked
    crc32c of those 8 bytes (checked), the data, and the data's masked crc32c (not checked:
    that would mean reading every image). Labels are read only when asked."""
    size = os.path.getsize(path)
    count, labels = 0, []
    with open(path, "rb") as f:
        while f.tell() < size:
            start, head = f.tell(), f.read(12)
            where = f"{path}: record {count} (byte {start})"
            if len(head) < 12:
                raise Corrupt(f"{where} is truncated")
            length, crc = struct.unpack("<QI", head)
            if crc != mask_crc(google_crc32c.value(head[:8])):
                raise Corrupt(f"{where} has a bad length checksum; not a TFRecord file?")
            if start + 16 + length > size:
                raise Corrupt(f"{where} is truncated")
            if read_labels:
                labels.append(_example_label(f.read(length), where))
                f.seek(4, 1)
            else:
                f.seek(length + 4, 1)
            count += 1
    return count, labels


def _example_label(data, where):
    """The one `image/class/label` int64 of a serialized tf.train.Example."""
    example = decode(data, _EXAMPLE, where)
    for entry in example.get("features", {}).get("feature", ()):
        if entry.get("key") == LABEL:
            raw = decode(entry.get("value", b""), _INT64_FEATURE, where)
            values = repeated_array(raw.get("int64_list", {}).get("value", ()), "varints")
            if len(values) == 1 and int(values.view(np.int64)[0]) >= 0:
                return int(values[0])
    raise FormatError(f"{where}: no single non-negative int64 {LABEL!r} feature")


def _labels_file(path):
    """Class names from a tf-slim labels file: `index:name` lines, indices 0..k-1."""
    names = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            index, sep, name = line.partition(":")
            if not sep or not index.strip().isdigit():
                raise CkptError(f"{path}: expected `index:name` lines, got {line!r}")
            names[int(index)] = name
    if sorted(names) != list(range(len(names))):
        raise CkptError(f"{path}: indices must run 0..{len(names) - 1}")
    return tuple(names[i] for i in range(len(names)))


# --- why an image does not decode ------------------------------------------------------

# (format, signature, end marker): what TF's decode_image reads; then formats it does not
_READABLE = (("PNG", b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"),
             ("JPEG", b"\xff\xd8\xff", b"\xff\xd9"), ("GIF", b"GIF8", b";"), ("BMP", b"BM", None))
_OTHER = (("TIFF", b"II*\0"), ("TIFF", b"MM\0*"), ("PDF", b"%PDF"))
_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIC", b"avif": "AVIF"}   # ISO `ftyp`


def undecodable(contents, detail=None):
    """Why an image file's `contents` do not decode, in a few words: an empty file, not an
    image, a format TensorFlow does not read, a truncated or a corrupt image (`detail`: the
    decoder's own words). By the file's first and last bytes: no decoder needed."""
    if not contents:
        return "empty file"
    kind, end = next(((k, e) for k, magic, e in _READABLE if contents.startswith(magic)),
                     (None, None))
    if contents[:4] == b"RIFF" and contents[8:12] == b"WEBP":
        kind = "WebP"
    if kind is None:
        other = next((k for k, magic in _OTHER if contents.startswith(magic)), None) or \
            (_BRANDS.get(contents[8:12]) if contents[4:8] == b"ftyp" else None)
        if other:
            return f"a {other} file; images are read as JPEG, PNG, GIF, BMP or WebP"
        if all(32 <= b < 127 or b in b"\t\r\n" for b in contents[:512]):
            return "not an image (text)"
        return "not an image (no JPEG, PNG, GIF, BMP or WebP signature)"
    if end and not contents.rstrip(b"\0\r\n ").endswith(end):
        return f"truncated {kind}"
    return f"corrupt {kind}" + (f" ({detail})" if detail else "")


def skip_warnings(paths):
    """The warning line of each image file drop_corrupt left out, saying why."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                why = undecodable(f.read())
        except OSError as e:
            why = f"cannot read: {e.strerror or e}"
        yield f"warning: skipping unreadable image {path} ({why})"


# --- TensorFlow -------------------------------------------------------------------------

def load_run_data(data, *, val_data=None, val_split=None, seed=0, num_classes=None):
    """(dataset, note) for a training run: the data's own validation split, or else 10% held
    out (stratified, seeded), the rule finetune and eval share; note says when it held out."""
    dataset = load_dataset(data, val_data=val_data, val_split=val_split, seed=seed,
                           num_classes=num_classes)
    if dataset.val is not None or dataset.kind == "tfrecord":
        return dataset, None
    return (load_dataset(data, val_split=0.1, seed=seed, num_classes=num_classes),
            f"no validation split in {data}: holding out 10% (--val-split 0.1, stratified)")


def drop_corrupt(dataset):
    """(dataset without the image files TF cannot decode, their paths); splits of arrays or
    records pass through. Decodes every image once, in parallel, in a graph of its own: a
    truncated JPEG or a text file named .png would otherwise stop training at the step that
    meets it."""
    (train, bad), (val, bad_val) = readable(dataset.train), readable(dataset.val)
    return replace(dataset, train=train, val=val), bad + bad_val


def readable(split):
    """(`split` without the image files TF cannot decode, their paths), as drop_corrupt."""
    if split is None or split.kind != "files":
        return split, []
    from ..tfcompat import tf

    good = _decodable(tf, split.items)
    for label in np.unique(split.labels[~good]):
        if not good[split.labels == label].any():
            folder = os.path.dirname(split.items[split.labels == label][0])
            raise CkptError(f"class folder {folder!r} has no readable images")
    return _subset(split, good), [str(path) for path in split.items[~good]]


def without(dataset, paths):
    """`dataset` without the image files `paths` (what drop_corrupt found before)."""
    if not len(paths):
        return dataset
    splits = [split if split is None or split.kind != "files" else
              _subset(split, ~np.isin(split.items.astype(str), list(paths)))
              for split in (dataset.train, dataset.val)]
    return replace(dataset, train=splits[0], val=splits[1])


def _decodable(tf, paths):
    """Boolean mask of the paths TF decodes into a non-empty image."""
    graph = tf.Graph()
    with graph.as_default():
        files = tf.placeholder(tf.string, [None])

        def size(index, path):
            return index, tf.size(_decode(tf, tf.io.read_file(path)))

        dataset = tf.data.Dataset.from_tensor_slices(
            (tf.range(tf.size(files, out_type=tf.int64)), files))
        dataset = dataset.map(size, num_parallel_calls=tf.data.experimental.AUTOTUNE)
        iterator = tf.data.make_initializable_iterator(dataset.ignore_errors().batch(1024))
        batch = iterator.get_next()
        good = np.zeros(len(paths), bool)
        with tf.Session(graph=graph) as session:
            session.run(iterator.initializer, {files: paths})
            while True:
                try:
                    index, sizes = session.run(batch)
                except tf.errors.OutOfRangeError:
                    return good
                good[index[sizes > 0]] = True


def _decode(tf, data):
    """A uint8 [h, w, c] image of known rank (the first frame of a GIF), for preprocess."""
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    image.set_shape([None, None, None])
    return image


class Input:
    """One split as a re-initialisable tf.data pipeline in the current default graph.

    images: float32 [batch, size, size, channels], through nets.preprocess (augmented when
    training and augment); labels: int64 [batch]; steps: batches per epoch (the last may be
    short). start(session, epoch) begins one pass. Training order for epoch e is
    np.random.default_rng([seed, e]).permutation(count), so a run resumed at epoch e sees
    what an uninterrupted one would; evaluation keeps the split's order. TFRecords are
    shuffled in a 1000-record buffer seeded with seed * 100003 + epoch instead.

    Paths, labels and arrays are fed at start(), not held as graph constants: 100k paths or
    a big array would otherwise be copied into every checkpoint's .meta file.
    repeat=True (evaluation only): the passes follow each other in one iterator, so it is
    started once and each pass takes `steps` batches; nothing is fed or rebuilt per pass.
    tf.data's autotuning is off: its thread sleeps in doubling periods (up to a minute) and
    re-initialising an iterator waited for it to wake (20 s at a training epoch's start);
    parallel maps still use every core and prefetching still grows its buffer.
    With a tf.distribute `strategy`, `iterator` (for strategy.experimental_run) replaces
    images and labels.
    """

    def __init__(self, split, record, *, batch_size, training, augment=True, seed=0,
                 name="input", strategy=None, repeat=False):
        from ..tfcompat import tf
        from ..zoo.nets import get_net
        from .nets import preprocess

        record = get_net(record)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise CkptError(f"batch size must be a positive integer, got {batch_size!r}")
        self.split, self.training, self.seed = split, training, seed
        self.batch_size = batch_size
        self.steps = -(-split.count // batch_size)
        distort = training and augment
        autotune = tf.data.experimental.AUTOTUNE
        with tf.name_scope(name):
            if split.kind == "tfrecord":
                dataset, load = self._records(tf, split.items)
                self._skip = tf.placeholder_with_default(tf.constant(0, tf.int64), [], "skip")
                dataset = dataset.skip(self._skip)
            else:
                self._order = tf.placeholder(tf.int64, [None], "order")
                self._labels = tf.placeholder(tf.int64, [None], "labels")
                if split.kind == "files":
                    self._items = tf.placeholder(tf.string, [None], "paths")
                else:
                    self._items = tf.placeholder(tf.uint8, [None, *split.items.shape[1:]],
                                                 "images")

                def load(i):
                    item = self._items[i]
                    image = _decode(tf, tf.io.read_file(item)) if split.kind == "files" \
                        else item
                    return image, self._labels[i]

                dataset = tf.data.Dataset.from_tensor_slices(self._order)

            def example(item):
                image, label = load(item)
                return preprocess(record, image, is_training=distort), label

            batches = dataset.map(example, num_parallel_calls=autotune).batch(batch_size)
            options = tf.data.Options()
            options.autotune.enabled = False
            batches = (batches.repeat() if repeat else batches).prefetch(autotune) \
                .with_options(options)
            if strategy is None:
                iterator = tf.data.make_initializable_iterator(batches)
                self.images, self.labels = iterator.get_next()
                self._initializer = iterator.initializer
            else:       # data-parallel: every replica takes its share of each batch
                self.iterator = strategy.make_dataset_iterator(batches)
                self._initializer = self.iterator.initialize()

    def _records(self, tf, files):
        """(dataset of serialized examples, parse function); shuffled when training."""
        dataset = tf.data.Dataset.from_tensor_slices(list(files))
        if self.training:
            self._seed = tf.placeholder(tf.int64, [], "shuffle_seed")
            dataset = dataset.shuffle(len(files), seed=self._seed)
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 4),
                                     num_parallel_calls=tf.data.experimental.AUTOTUNE)
        if self.training:
            dataset = dataset.shuffle(1000, seed=self._seed)

        def parse(serialized):
            example = tf.io.parse_single_example(serialized, {
                ENCODED: tf.io.FixedLenFeature([], tf.string),
                LABEL: tf.io.FixedLenFeature([], tf.int64)})
            return _decode(tf, example[ENCODED]), example[LABEL]

        return dataset, parse

    def start(self, session, epoch=0, skip=0):
        """(Re)initialise the iterator for one pass over the split, from batch `skip` on (a
        resumed epoch)."""
        if self.split.kind == "tfrecord":
            feed = {self._seed: self.seed * 100003 + epoch} if self.training else {}
            feed[self._skip] = skip * self.batch_size
        else:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.split.count) \
                if self.training else np.arange(self.split.count)
            feed = {self._order: order[skip * self.batch_size:], self._labels: self.split.labels,
                    self._items: self.split.items}
        session.run(self._initializer, feed)
