"""Real images for the training tests: scikit-learn's handwritten digits (8x8, 0..16),
scaled up and written as PNG files by a small hand encoder (no Pillow, no TF session), in the
image-folder layout `finetune` reads."""
import struct
import zlib
from pathlib import Path

import numpy as np


def png_bytes(image):
    """An 8-bit grayscale ([h, w] or [h, w, 1]) or RGB ([h, w, 3]) uint8 array as PNG."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    height, width = image.shape[:2]
    color = 0 if image.ndim == 2 else 2
    raw = b"".join(b"\0" + row.tobytes() for row in image)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def digits(size=28):
    """(images uint8 [n, size, size], labels) of scikit-learn's digits, upscaled."""
    from sklearn.datasets import load_digits

    found = load_digits()
    scale = size // 8
    images = np.kron(found.images, np.ones((scale, scale)))
    pad = size - 8 * scale
    images = np.pad(images, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))
    return np.round(images * (255 / 16)).astype(np.uint8), found.target


def digits_folder(root, classes, per_class, *, offset=0, size=28, rgb=False):
    """Write `per_class` PNGs of each digit in `classes` to root/<digit>/ (taking the digits'
    images from index `offset` of each class on); returns root."""
    root = Path(root)
    images, labels = digits(size)
    for digit in classes:
        chosen = np.flatnonzero(labels == digit)[offset:offset + per_class]
        assert len(chosen) == per_class, f"only {len(chosen)} images of digit {digit}"
        folder = root / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for i in chosen:
            image = np.repeat(images[i][:, :, None], 3, axis=2) if rgb else images[i]
            (folder / f"{i:04d}.png").write_bytes(png_bytes(image))
    return root
