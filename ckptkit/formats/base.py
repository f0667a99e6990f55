"""What every format reader offers (its variables in name order and lazy values) and what
every writer does (temp files, fsync, rename: never a half-written checkpoint)."""
import contextlib
import difflib
import gc
from math import prod

from ..errors import CkptError, NotFound, Unsupported
from ..fileio import AtomicFiles, release_maps


class Reader:
    """A checkpoint opened for reading; values are read only when asked for, one at a time.

    Subclasses fill `variables` (name -> Variable, in name order), `files`, and implement
    `read`; `problems` (for `verify`) lists what is corrupt or missing. Where the file says
    what it was made from (a `.keras` or a PyTorch state dict that `ckptkit port` wrote),
    `origin` holds the checkpoint and net ({"checkpoint": str, "net": str}, and "class": the
    PyTorch class a state dict loads into) and `sources` maps tensor names to the checkpoint
    tensors they came from; `warnings` says, one line each, what the reader
    set aside as unusable.
    """

    format = ""

    def __init__(self, path):
        self.path = path
        self.files = []
        self.variables = {}
        self.note = ""
        self.origin = None
        self.sources = {}
        self.warnings = []

    def __iter__(self):
        return iter(self.variables.values())

    def __len__(self):
        return len(self.variables)

    def __contains__(self, name):
        return name in self.variables

    def variable(self, name):
        try:
            return self.variables[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.variables), n=3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise NotFound(f"no tensor {name!r} in {self.path}{hint}") from None

    def read(self, name):
        """The value of tensor `name` as a numpy array."""
        raise NotImplementedError

    def problems(self, progress=None):
        """Yield one line per corrupt or missing thing; `progress(nbytes)` after each tensor.

        The default reads every tensor, so every structural check a reader makes applies.
        """
        for var in self:
            try:
                self.read(var.name)
            except CkptError as e:
                yield f"{var.name}: {e}"
            if progress:
                progress(var.nbytes)

    def release(self):
        """Let go of the memory-mapped pages read so far (they count in RSS); the next read
        maps them in again. Streaming writers call it after each decoded tensor."""
        release_maps(getattr(self, "_map", None))

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Writer(AtomicFiles):
    """A checkpoint being written: never half-visible, never touching its input.

    Files come from `temp` (fileio.AtomicFiles): `commit` writes what goes after the tensors
    (`finish`), then fsyncs and renames them in `self.order` (the file that makes the
    checkpoint visible last, e.g. the V2 `.index`); `abort` (also on leaving a `with` block
    by an exception) removes them.
    Protocol: `begin(specs)` with the (name, shape, dtype) of every tensor to come, in the
    order they will come; then per tensor `copy(reader, var, name)` (True when the writer
    could copy the stored bytes as they are, no decoding) or `add(name, array)`; `commit()`.
    """

    format = ""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def begin(self, specs):
        """The tensors to come: [(name, shape, dtype name)], in the order they will come."""

    def add(self, name, array):
        raise NotImplementedError

    def copy(self, reader, var, name):
        """Store `var` of `reader` under `name` without decoding it, if this writer can."""
        return False

    def finish(self):
        """Write what goes after the tensors (indexes, headers); files stay open."""

    def commit(self):
        """Make the checkpoint visible: finish, then fsync and rename (AtomicFiles.commit)."""
        self.finish()
        return super().commit()


# a tensor decoded from fewer stored bytes (deflate; HDF5 chunks and fill values) may take
# at most EXPANSION times them + EXPANSION_SLACK bytes
EXPANSION, EXPANSION_SLACK = 64, 256 << 20


def check_expansion(where, nbytes, stored, fix):
    """Refuse to decode `nbytes` out of `stored` bytes past EXPANSION, before allocating:
    a small file must not claim gigabytes of memory, and a tensor read is held whole."""
    if nbytes > EXPANSION * stored + EXPANSION_SLACK:
        raise Unsupported(f"{where} would decode {stored} stored bytes into {nbytes}; "
                          f"ckptkit decodes at most {EXPANSION}x the stored size + "
                          f"{EXPANSION_SLACK >> 20} MiB: {fix}")


def numpy_shape(where, shape, dtype):
    """Unsupported unless numpy can make an array of `shape`: it caps the dimensions (64;
    32 before numpy 2) and the nonzero ones times the item size (63 bits), even when another
    is 0. A shape near a cap is tried on a zero-stride view, which allocates nothing."""
    if len(shape) <= 32 and prod(d for d in shape if d) * dtype.itemsize < 1 << 62:
        return
    import numpy as np

    try:
        np.broadcast_to(np.empty((), dtype), shape)
    except (ValueError, OverflowError) as e:
        raise Unsupported(f"{where} has shape {list(shape)}, which numpy cannot hold: {e}"
                          ) from None


@contextlib.contextmanager
def no_cyclic_gc():
    """No cyclic garbage collection inside the block. Making a few small acyclic objects per
    tensor (index entries, statistics, table rows) sets off full collections that rescan
    every one made so far: seconds at 300,000 tensors. Reference counting still frees
    everything (Mercurial's util.nogc). On the way out, what the block made moves to the
    oldest generation as it is (gc.freeze + gc.unfreeze, no traversal), else the first
    young-generation collection after it would walk all of it at once."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            if not gc.get_freeze_count():   # nobody else's frozen objects to thaw
                gc.freeze()
                gc.unfreeze()
            gc.enable()
