"""Files ckptkit writes and maps, below every format: never half a file, never a resident copy
of what a map already holds.

- AtomicFiles: every file goes to a temp name in its target folder (marked TEMP_MARK, so no
  reader takes it for a checkpoint); commit fsyncs them, renames them into place in the order
  they were made (the file that makes a result visible last) and fsyncs the folders; abort,
  also on leaving a `with` block by an exception, removes them.
- atomic_file / write_atomic: one file replaced that way (run.json, metrics, plots, caches).
- map_file / unmap / release_maps: read-only memory maps of whole files, and giving their
  resident pages back while the map stays usable.
- The `checkpoint` state file TF's Saver keeps beside V2 prefixes: read_state, write_state.
"""
import contextlib
import mmap
import os
import re
import secrets

# in the names of files a writer has not finished: never a checkpoint
TEMP_MARK = ".ckptkit-tmp-"
STATE_FILE = "checkpoint"

_STATE_PATH = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', re.M)
_STATE_PATHS = re.compile(r'^all_model_checkpoint_paths:\s*"((?:[^"\\]|\\.)*)"', re.M)
_STATE_LIMIT = 1 << 20      # bytes of a state file worth reading


class AtomicFiles:
    """Files that appear at their final names only together, once complete; see the module
    notes."""

    def __init__(self):
        self.order = []      # [(temp path, final path)], renamed in this order on commit
        self._open = []      # file objects to close before renaming
        self._done = False

    def temp(self, final, buffering=-1):
        """A new temp file for `final`, in its folder, open for writing in binary."""
        folder, base = os.path.split(os.path.abspath(final))
        os.makedirs(folder, exist_ok=True)
        temp = os.path.join(folder, f".{base}{TEMP_MARK}{secrets.token_hex(4)}")
        f = open(temp, "xb", buffering=buffering)
        self.order.append((temp, final))
        self._open.append(f)
        return f

    def commit(self):
        """fsync every temp file, rename them in order, fsync their folders; the final paths."""
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
            with contextlib.suppress(OSError):
                f.close()
        if not self._done:
            for temp, _ in self.order:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
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
    with AtomicFiles() as files:
        yield files.temp(path)
        files.commit()


def write_atomic(path, data):
    """Replace `path` by `data` (bytes, or text written as UTF-8) atomically."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def map_file(path):
    """Read-only memory map of a whole file (an empty bytes object for an empty file)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def unmap(buf):
    """Close a map from map_file; one that arrays still view closes when they go."""
    if isinstance(buf, mmap.mmap):
        with contextlib.suppress(BufferError):
            buf.close()


def release_maps(*maps):
    """madvise(DONTNEED) on read-only file maps: resident pages go, contents stay."""
    for buf in maps:
        if isinstance(buf, mmap.mmap) and not buf.closed and hasattr(mmap, "MADV_DONTNEED"):
            buf.madvise(mmap.MADV_DONTNEED)


def _read_state_text(state):
    try:
        with open(state, encoding="utf-8", errors="replace") as f:
            return f.read(_STATE_LIMIT)
    except OSError:
        return None


def _unquote(text):
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def read_state(directory):
    """The checkpoint path the `checkpoint` state file of `directory` names (as written:
    relative or absolute), or None when there is no usable one."""
    text = _read_state_text(os.path.join(directory, STATE_FILE))
    m = _STATE_PATH.search(text) if text else None
    return _unquote(m.group(1)) if m else None


def write_state(directory, prefix):
    """Point `directory/checkpoint` at `prefix` (a basename there), keeping the paths it
    already lists; written atomically, after the checkpoint itself."""
    state = os.path.join(directory, STATE_FILE)
    text = _read_state_text(state) if os.path.isfile(state) else None
    old = []
    if text:
        old = _STATE_PATHS.findall(text) or _STATE_PATH.findall(text)[:1]
    quoted = prefix.replace("\\", "\\\\").replace('"', '\\"')
    paths = [p for p in old if p != quoted] + [quoted]
    write_atomic(state, f'model_checkpoint_path: "{quoted}"\n' + "".join(
        f'all_model_checkpoint_paths: "{p}"\n' for p in paths))
