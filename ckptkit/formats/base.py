"""What every format reader offers (its variables in name order and lazy values) and what
every writer does (temp files, fsync, rename: never a half-written checkpoint)."""
import contextlib
import difflib
import os

from ..errors import CkptError, NotFound


class Reader:
    """A checkpoint opened for reading; values are read only when asked for, one at a time.

    Subclasses fill `variables` (name -> Variable, in name order), `files`, and implement
    `read`; `problems` (for `verify`) lists what is corrupt or missing.
    """

    format = ""

    def __init__(self, path):
        self.path = path
        self.files = []
        self.variables = {}
        self.note = ""

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


class Writer:
    """A checkpoint being written: never half-visible, never touching its input.

    Every file goes to a temp name in its target folder; `commit` fsyncs them and renames
    them into place in `self.order` (the file that makes the checkpoint visible last, e.g.
    the V2 `.index`); `abort` (also on leaving a `with` block by an exception) removes them.
    Protocol: `begin(specs)` with the (name, shape, dtype) of every tensor to come, in the
    order they will come; then per tensor `copy(reader, var, name)` (True when the writer
    could copy the stored bytes as they are, no decoding) or `add(name, array)`; `commit()`.
    """

    format = ""

    def __init__(self, path):
        self.path = path
        self.order = []      # [(temp path, final path)], renamed in this order on commit
        self._open = []      # file objects to close before renaming
        self._done = False

    def temp(self, final, buffering=-1):
        """A new temp file for `final`, in its folder, open for writing in binary."""
        import secrets

        from ..paths import TEMP_MARK

        folder, base = os.path.split(os.path.abspath(final))
        os.makedirs(folder, exist_ok=True)
        temp = os.path.join(folder, f".{base}{TEMP_MARK}{secrets.token_hex(4)}")
        f = open(temp, "xb", buffering=buffering)
        self.order.append((temp, final))
        self._open.append(f)
        return f

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
        """Make the checkpoint visible: finish, fsync, rename in order, fsync the folders."""
        self.finish()
        for f in self._open:
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        for temp, _ in self.order:   # files something else (h5py, zipfile) wrote and closed
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        folders = set()
        for temp, final in self.order:
            os.replace(temp, final)
            folders.add(os.path.dirname(os.path.abspath(final)))
        for folder in folders:
            fsync_dir(folder)
        self._done = True
        return [final for _, final in self.order]

    def abort(self):
        for f in self._open:
            try:
                f.close()
            except OSError:
                pass
        if not self._done:
            for temp, _ in self.order:
                try:
                    os.unlink(temp)
                except FileNotFoundError:
                    pass
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._done:
            self.abort()


def fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path):
    """An open binary temp file beside `path` that becomes `path` (fsynced, renamed) when the
    block ends without error and is removed when it does not: never half a file."""
    with Writer(path) as w:
        yield w.temp(path)
        w.commit()


def write_atomic(path, data):
    """Replace `path` by `data` (bytes, or text written as UTF-8) atomically."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def release_maps(*maps):
    """madvise(DONTNEED) on read-only file maps: resident pages go, contents stay."""
    import mmap

    for buf in maps:
        if isinstance(buf, mmap.mmap) and not buf.closed and hasattr(mmap, "MADV_DONTNEED"):
            buf.madvise(mmap.MADV_DONTNEED)
