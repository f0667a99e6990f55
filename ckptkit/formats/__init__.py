"""One module per on-disk format; open_reader picks the reader of a resolved format
(paths.open_checkpoint resolves a user's path first), open_writer the writer of a target."""
from .base import Reader, Writer
from .detect import open_reader, open_writer

__all__ = ["Reader", "Writer", "open_reader", "open_writer"]
