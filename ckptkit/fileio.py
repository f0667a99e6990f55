"""Files ckptkit writes and maps, below every format: never half a file, never a resident copy
of what a map already holds.

- AtomicFiles: every file goes to a temp name in its target folder (marked TEMP_MARK, so no
  reader takes it for a checkpoint); commit fsyncs them, renames them into place in the order
  they were made (the file that makes a result visible last) and fsyncs the folders; abort,
  also on leaving a `with` block by an exception, removes them.
- A temp name carries its writer (this machine's host id and the process id): a process
  killed mid-write (SIGKILL, power loss) leaves its temp files, and the next write into that
  folder removes those of dead writers on this machine (stale_temps lists them).
- output_lock: one writer per output at a time (an flock on a lock file beside it that names
  the holder's pid; the file goes when the lock does).
- atomic_file / write_atomic: one file replaced that way (run.json, metrics, plots, caches);
  link_or_copy: one file put in place as a hard link to another (best/, a run's onnx/).
- map_file / unmap / release_maps: read-only memory maps of whole files, and giving their
  resident pages back while the map stays usable.
- The `checkpoint` state file TF's Saver keeps beside V2 prefixes: read_state, write_state.
- quiet_stderr: file descriptor 2 held while TensorFlow's C++ code logs to it.
"""
import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time

from .errors import CkptError, FormatError

# in the names of files a writer has not finished: never a checkpoint
TEMP_MARK = ".ckptkit-tmp-"
LOCK_MARK = ".ckptkit-lock"
STATE_FILE = "checkpoint"
# .NAME.ckptkit-tmp-HOST-PID-TOKEN: HOST a hash of this machine's name
_TEMP = re.compile(r"\.ckptkit-tmp-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}$")
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

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
        """A new temp file for `final`, in its folder, open for writing in binary; the first
        one in a folder removes the temp files dead writers left there."""
        folder, base = os.path.split(os.path.abspath(final))
        os.makedirs(folder, exist_ok=True)
        if not any(os.path.dirname(t) == folder for t, _ in self.order):
            remove_stale_temps(folder)
        temp = _temp_name(final)
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


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # another user's process
        return True
    return True


def stale_temps(folder):
    """Temp files in `folder` whose writer is gone: a dead process of this machine. Temp
    files of live writers, of other machines (a shared folder) and of older ckptkit versions
    (no writer in the name) are not listed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    stale = []
    for name in sorted(names):
        m = _TEMP.search(name) if TEMP_MARK in name else None
        if m and m.group(1) == _HOST and not _alive(int(m.group(2))):
            stale.append(os.path.join(folder, name))
    return stale


def remove_stale_temps(folder):
    for path in stale_temps(folder):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def output_lock(path, wait=False):
    """Hold the one writer's lock on output `path` (a file, a V2 prefix, a folder) for the
    block; when another process holds it: CkptError naming that process, or with `wait`,
    wait for it to finish."""
    folder, base = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, f".{base}{LOCK_MARK}")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _lock_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f" (pid {holder})" if holder else ""
            raise CkptError(f"{path} is being written by another ckptkit process{who}; "
                            "wait for it to finish, or write elsewhere") from None
        try:   # the file may have been unlinked by its last holder between open and flock
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _lock_holder(fd):
    """The pid the lock's holder wrote, or "" when it has not yet written it: it takes the
    lock first and writes its pid just after, so a loser may look in between."""
    for _ in range(20):
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if holder:
            return holder
        time.sleep(0.005)
    return ""


def fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(final):
    """A new temp name beside `final`, marked with its writer (see the module notes)."""
    folder, base = os.path.split(os.path.abspath(final))
    return os.path.join(folder, f".{base}{TEMP_MARK}{_HOST}-{os.getpid()}-"
                                f"{secrets.token_hex(4)}")


@contextlib.contextmanager
def temp_folder(parent, prefix, suffix=""):
    """A new empty folder in `parent` for the block to fill and rename into place, removed
    when the block leaves it there (an error, an interrupt). Its permissions are those mkdir
    gives (mkdtemp's are 0700: a folder renamed from it would be its owner's alone)."""
    folder = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)
    mask = os.umask(0o22)
    os.umask(mask)
    try:
        os.chmod(folder, 0o777 & ~mask)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def is_one_of(path, files):
    """Whether `path` is one of `files`, by name or as the same file (a link, a hard link)."""
    for f in files:
        if os.path.abspath(path) == os.path.abspath(f):
            return True
        with contextlib.suppress(OSError):
            if os.path.samefile(path, f):
                return True
    return False


def new_output(path, inputs=(), *, overwrite=False):
    """Refuse to write `path` when it is one of `inputs` (the files a command reads) or,
    without `overwrite`, when it exists: one rule for every single-file output."""
    if os.path.exists(path):
        if is_one_of(path, inputs):
            raise CkptError(f"{path} is a file this command reads; write elsewhere")
        if not overwrite:
            raise CkptError(f"{path} exists; add --overwrite to replace it")


def link_or_copy(source, target):
    """`target` as a hard link to `source` (a copy where the file system refuses links),
    replacing what is there in one rename: the same bytes without writing them again."""
    temp = _temp_name(target)
    try:
        try:
            os.link(source, temp)
        except OSError:
            shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@contextlib.contextmanager
def quiet_stderr():
    """Hold file descriptor 2 in a temporary file; replay it if the block fails. TF's C++
    logs print there before (or outside) its logging setup: importing it, tf2onnx's import
    and conversion (export.py)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


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


def open_regular(path):
    """A read-only fd of `path`, which must be a regular file: a FIFO or a device named as a
    checkpoint file would block a read for ever or never end (opened without blocking, then
    checked)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FormatError(f"{path} is not a regular file (a FIFO, device or socket); "
                              "refused")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def map_file(path):
    """Read-only memory map of a whole regular file (an empty bytes object for an empty
    file)."""
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return b""
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


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
    """A state file's quoted path, unescaped; as written when its escapes are broken (a
    path that then names nothing here, so the caller falls back with a note)."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        return text


def read_state(directory):
    """The checkpoint path the `checkpoint` state file of `directory` names (as written:
    relative or absolute), or None when there is no usable one."""
    text = _read_state_text(os.path.join(directory, STATE_FILE))
    m = _STATE_PATH.search(text) if text else None
    return _unquote(m.group(1)) if m else None


def write_state(directory, prefix, keep_listed=True):
    """Point `directory/checkpoint` at `prefix` (a basename there), keeping the paths it
    already lists (unless not keep_listed); written atomically, after the checkpoint."""
    state = os.path.join(directory, STATE_FILE)
    text = _read_state_text(state) if keep_listed and os.path.isfile(state) else None
    old = []
    if text:
        old = _STATE_PATHS.findall(text) or _STATE_PATH.findall(text)[:1]
    quoted = prefix.replace("\\", "\\\\").replace('"', '\\"')
    paths = [p for p in old if p != quoted] + [quoted]
    write_atomic(state, f'model_checkpoint_path: "{quoted}"\n' + "".join(
        f'all_model_checkpoint_paths: "{p}"\n' for p in paths))
