"""One module per on-disk format; open_checkpoint picks the right reader, open_writer the
right writer."""
from .base import Reader, Writer
from .detect import open_checkpoint, open_writer

__all__ = ["Reader", "Writer", "open_checkpoint", "open_writer"]
