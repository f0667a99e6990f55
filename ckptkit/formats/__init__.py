"""One module per on-disk format; open_checkpoint picks the right one."""
from .base import Reader
from .detect import open_checkpoint

__all__ = ["Reader", "open_checkpoint"]
