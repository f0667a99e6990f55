"""Fetching pretrained checkpoints: downloads that resume, archives checked and unpacked safely
(a download, `get --from` a file already here, or `add` of the user's own checkpoint), and
which entries of the registry are here.

On disk, under the download directory (zoo.pretrained.directory_path):
- `.download/FILE.part`: an archive being downloaded; a later `get` resumes it with an HTTP
  Range request (If-Range on the validator in `FILE.part.json`, so a changed file restarts).
- `NAME/`: the unpacked archive (or the added checkpoint's files), renamed into place only
  once complete and verified, with its SHA256 record (zoo/pretrained.py says what it holds).
- `added.json`: the entries `add` made, merged into the registry (zoo.pretrained.load_registry).

Notes
- The archive is checked before anything is unpacked: a size or sha256 that disagrees with the
  registry removes the download and leaves nothing behind (Corrupt).
- Members are unpacked into a temporary folder in the download directory, never through a
  link: the standard library's `data` extraction filter refuses absolute names, `..`
  components, links that leave the archive and special files; links inside it become copies
  of files unpacked before them. A first pass lists the members: an archive that would
  unpack to more than MAX_EXPANSION times its size (a bomb), or to more than the disk has
  free, is refused before anything is written.
- One `get` of a name at a time: a second one waits for the first, then finds it there.
- The unpacked checkpoint must pass ckptkit.checks.verify before it is renamed into place.
- No printing and no TensorFlow: `get` reports progress through a `progress(total, done)`
  callback (total None when the server does not say) and returns what happened in `Fetched`.
"""
import errno
import hashlib
import http.client
import json
import os
import posixpath
import re
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass

from .checks import verify
from .errors import CkptError, Corrupt, FormatError, NotFound
from .fileio import output_lock, temp_folder, write_atomic
from .paths import open_checkpoint, resolve, resolve_pretrained
from .zoo.nets import get_net
from .zoo.pretrained import (ADDED, CHUNK, GET_COMMAND, MANIFEST, NAME, check_folder,
                             directory_path, entry, inside, load_registry, member_path,
                             sha256_file)

DOWNLOADS = ".download"
TIMEOUT = 30.0                       # seconds, for connecting and for each read
MAX_EXPANSION = 10                   # checkpoints barely compress: more is an archive bomb


@dataclass(frozen=True)
class Fetched:
    """What `get` did: the checkpoint `path` (a V2 prefix or V1 file; os.fspath gives it),
    whether it was `downloaded` now, the archive's sha256 and where that trust comes from
    ("registry", "first-use" or "local"), and a `note` worth showing the user (or "")."""

    name: str
    path: str
    downloaded: bool
    sha256: str = None
    trust: str = ""
    note: str = ""
    net: str = ""

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path


# ---------------------------------------------------------------- what is here

def installed(name, directory=None, registry=None):
    """The checkpoint path of `name` if it is in `directory` (not checked), else None."""
    item = entry(name, registry, directory)
    if item.local:
        try:
            return resolve_pretrained(name, directory, registry, verify=False).path
        except CkptError:
            return None
    folder = os.path.join(directory_path(directory), item.name)
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        return None
    return member_path(item, folder)


def listing(directory=None, registry=None):
    """Every entry with its facts (the net's record where the entry has none) and where it is
    in `directory` (None: not there): what `pretrained list` shows."""
    known = load_registry(registry, directory) if not isinstance(registry, dict) else registry
    items = []
    for item in known.values():
        record = item.record
        items.append({"name": item.name, "net": item.net, "num_classes": record.num_classes,
                      "image_size": record.image_size, "url": item.url, "size": item.size,
                      "sha256": item.sha256, "added": item.added,
                      "exclude": list(item.exclude_scopes),
                      "path": installed(item.name, directory, known)})
    return items


# ---------------------------------------------------------------- get

def get(name, directory=None, progress=None, *, registry=None, force=False, timeout=TIMEOUT,
        source=None):
    """Download, check and unpack pretrained `name` into `directory`; a Fetched (its path is
    the checkpoint prefix or file). `source`: the entry's archive as a file already here
    (`get --from`), checked and unpacked as a download would be, and never removed.

    Present and matching its record: nothing is downloaded. force=True downloads it again and
    replaces what is there. `progress(total, done)` is called with byte counts while
    downloading. Errors are one-line CkptErrors: HTTP errors, refused connections, timeouts,
    a full disk, an interrupted download (run `get` again: it resumes), a wrong sha256 or
    size (Corrupt; the download is removed), an unsafe or broken archive.
    """
    item = entry(name, registry, directory)
    base = directory_path(directory)
    if item.added:       # locate says so when its files are gone; _here checks them once
        resolve_pretrained(item.name, directory, verify=False)
        return _here(item, os.path.join(base, item.name), directory)
    if item.local:
        if source is not None:
            raise CkptError(f"{item.name} is made locally ({item.made_by}), not unpacked from "
                            "an archive")
        return Fetched(item.name, _checked_local(name, directory, registry), False,
                       item.sha256, "local", net=item.net)
    if source is not None and not os.path.isfile(source):
        raise CkptError(f"no archive file at {source}")
    folder = os.path.join(base, item.name)
    missing = _missing_parents(base)
    try:
        with output_lock(folder, wait=True):     # a second `get` of NAME waits, then finds it
            if source is not None:
                return _unpack_file(item, source, base, folder, directory, force)
            return _get(item, base, folder, directory, progress, force, timeout)
    finally:                                     # a failed first get leaves no empty folders
        for path in missing:
            _rmdir_if_empty(path)


def _here(item, folder, directory):
    """The Fetched of what is already in `folder`, checked against its record."""
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        raise CkptError(f"{folder} exists but was not made by `{GET_COMMAND}` (no "
                        f"{MANIFEST} file); move it away or download again with force")
    archive_sha, trust = check_folder(item, folder, directory)
    return Fetched(item.name, member_path(item, folder), False, archive_sha, trust,
                   net=item.net)


def _unpack_file(item, source, base, folder, directory, force):
    """`get --from`: the archive at `source` in place of the download."""
    if os.path.exists(folder) and not force:
        return _here(item, folder, directory)
    digest = _check_archive(item, source, removed=False)
    trust = "registry" if item.sha256 else "first-use"
    path = _unpack(item, source, base, folder, digest, trust, source)
    note = _first_use(item, folder, digest) if trust == "first-use" else ""
    return Fetched(item.name, path, True, digest, trust, note, net=item.net)


def _first_use(item, folder, digest):
    return (f"trust on first use: the registry has no sha256 for {item.archive}; this "
            f"archive's is {digest}, recorded in {os.path.join(folder, MANIFEST)} and "
            "checked on every later use (compare it with a source you trust)")


def _get(item, base, folder, directory, progress, force, timeout):
    if os.path.exists(folder) and not force:
        return _here(item, folder, directory)

    downloads = os.path.join(base, DOWNLOADS)
    part = os.path.join(downloads, item.archive + ".part")
    _makedirs(downloads)
    try:
        _download(item, part, progress, timeout)      # a failure keeps the part: it resumes
        try:
            digest = _check_archive(item, part)
            trust = "registry" if item.sha256 else "first-use"
            path = _unpack(item, part, base, folder, digest, trust)
        except FormatError:                           # wrong bytes: never resume from them
            _discard(part)
            raise
        _discard(part)
    finally:
        _rmdir_if_empty(downloads)
    note = _first_use(item, folder, digest) if trust == "first-use" else ""
    return Fetched(item.name, path, True, digest, trust, note, net=item.net)


def _download(item, part, progress, timeout):
    """Fetch item.url into `part`, resuming what is there; returns when it is complete."""
    meta_path = part + ".json"
    meta = _read_json(meta_path)
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    if have and meta.get("url") != item.url:
        have = _restart(part)
    if have and item.size is not None and have >= item.size:
        if have == item.size:
            return
        have = _restart(part)
    headers = {"User-Agent": "ckptkit (pretrained get)", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    try:
        response = urllib.request.urlopen(urllib.request.Request(item.url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:    # the range starts at or past the end: complete already?
            total = _content_range(e.headers.get("Content-Range", ""))[2]
            if total == have:
                return
            _restart(part)
            return _download(item, part, progress, timeout)
        raise CkptError(f"cannot download {item.name}: HTTP {e.code} {e.reason} from "
                        f"{item.url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise CkptError(f"cannot download {item.name} from {item.url}: "
                        f"{_reason(e, timeout)}") from None
    with response:
        start, total = 0, None
        if have and response.status == 206:
            start, _, total = _content_range(response.headers.get("Content-Range", ""))
            if start != have:
                response.close()
                _restart(part)
                return _download(item, part, progress, timeout)
        elif response.status != 200:
            raise CkptError(f"cannot download {item.name}: HTTP {response.status} "
                            f"{response.reason} from {item.url}")
        length = response.headers.get("Content-Length")
        if total is None and length and length.isdigit():
            total = start + int(length)
        if total is None:
            total = item.size
        _write_json(meta_path, {"url": item.url, "etag": response.headers.get("ETag"),
                                "last_modified": response.headers.get("Last-Modified")})
        done = start
        try:
            out = open(part, "ab" if start else "wb")
        except OSError as e:
            raise _disk_error(e, part) from None
        with out:
            if progress:
                progress(total, done)
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _interrupted(item, done, total, _reason(e, timeout)) from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as e:
                    raise _disk_error(e, part) from None
                done += len(chunk)
                if progress:
                    progress(total, done)
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as e:
                raise _disk_error(e, part) from None
    if total is not None and done < total:
        raise _interrupted(item, done, total, "the server closed the connection")


def _interrupted(item, done, total, why):
    of = f" of {total}" if total is not None else ""
    return CkptError(f"download of {item.name} interrupted after {done}{of} bytes ({why}); "
                     "run the same command again to resume it")


def _check_archive(item, part, removed=True):
    """The archive's sha256, after its size and sha256 agree with the registry's; `removed`:
    a download, which a mismatch removes (else the user's own file, left alone)."""
    what, after = (f"downloaded {item.archive}", "; removed the download") if removed else \
        (part, f" for {item.archive}")
    size = os.path.getsize(part)
    if item.size is not None and size != item.size:
        raise Corrupt(f"{what} is {size} bytes, the registry says {item.size}{after}")
    digest = sha256_file(part)
    if item.sha256 and digest != item.sha256:
        raise Corrupt(f"sha256 of {what} is {digest}, the registry says {item.sha256}{after}")
    return digest


def _unpack(item, part, base, folder, digest, trust, source=None):
    """Unpack `part` (the download, or the user's `source` file) into place (_install); the
    checkpoint path."""
    def fill(tmp):
        return _extract(part, tmp, item.archive), item.member

    after = "; removed the download" if source is None else ""
    header = [f"# ckptkit pretrained {item.name} from {source or item.url}",
              f"# archive {item.archive} sha256 {digest} {trust}"]
    return _install(base, folder, item.name, source or item.archive, fill, header, after)


def _install(base, folder, name, label, fill, header, after=""):
    """Fill a temporary folder in `base` (fill(tmp) -> ({relative path: sha256}, the
    checkpoint's relative path, or None to find it)), check the checkpoint, record every
    file's sha256 under the `header` lines, then rename the folder to `folder`; the
    checkpoint path."""
    with temp_folder(base, f".{name}.", ".unpacking") as tmp:
        hashes, member = fill(tmp)
        shown = ", ".join(sorted(hashes)[:8]) or "nothing"
        try:
            checkpoint = resolve(os.path.join(tmp, *member.split("/"))) if member else \
                _find_checkpoint(tmp)
        except CkptError:
            what = f"no checkpoint {member!r}" if member else "no checkpoint"
            raise FormatError(f"{label} has {what}; it holds: {shown}") from None
        member = os.path.relpath(checkpoint.path, tmp).replace(os.sep, "/")
        report = verify(checkpoint.path)
        if not report.ok:
            raise Corrupt(f"the checkpoint in {label} fails its own checks: "
                          f"{report.problems[0]}{after}")
        lines = header + [f"{hashes[rel]}  {rel}" for rel in sorted(hashes)]
        try:
            with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise _disk_error(e, os.path.join(tmp, MANIFEST)) from None
        if os.path.lexists(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    return os.path.join(folder, *member.split("/"))


def _find_checkpoint(folder):
    """The checkpoint in `folder` or the first of its subfolders (name order) that has one."""
    for here, dirs, _ in os.walk(folder):
        dirs.sort()
        try:
            return resolve(here)
        except CkptError:
            continue
    raise NotFound(f"no checkpoint in {folder}")


# ---------------------------------------------------------------- add

def add(name, source, net, directory=None, *, registry=None, force=False):
    """`pretrained add`: register checkpoint files you already have as pretrained `name` of
    `net`, copied (an archive: safely unpacked) into the download directory with their
    sha256 record, listed in its added.json; a Fetched. `source`: a .tar.gz/.tgz/.tar
    archive, a folder, or any checkpoint path ckptkit reads. Never changes `source`."""
    record = get_net(net)
    if not isinstance(name, str) or not NAME.match(name):
        raise CkptError(f"name must be letters, digits, '_', '.' or '-' (not starting with "
                        f"'.' or '-'), got {name!r}")
    shipped = load_registry(registry, directory)
    if name in shipped and not (force and shipped[name].added):
        hint = " (--force replaces an added one)" if shipped[name].added else ""
        raise CkptError(f"{name!r} is already a pretrained name{hint}; choose another")
    source = os.path.abspath(os.fspath(source))
    base = directory_path(directory)
    folder = os.path.join(base, name)
    missing = _missing_parents(base)
    try:
        with output_lock(folder, wait=True):
            if os.path.isfile(source) and tarfile.is_tarfile(source):
                digest = sha256_file(source)

                def fill(tmp):
                    return _extract(source, tmp, os.path.basename(source)), None
            else:
                files = _checkpoint_files(source)
                digest = sha256_file(files[0])

                def fill(tmp):
                    return {os.path.basename(f): _copy_file(f, tmp) for f in files}, None
            header = [f"# ckptkit pretrained {name} added from {source}",
                      f"# archive {os.path.basename(source) or name} sha256 {digest} added"]
            path = _install(base, folder, name, source, fill, header)
            member = os.path.relpath(path, folder).replace(os.sep, "/")
            _register(base, {"name": name, "net": record.name, "added": source,
                             "member": member})
    finally:
        for leftover in missing:
            _rmdir_if_empty(leftover)
    return Fetched(name, path, True, digest, "added", net=record.name)


def _checkpoint_files(source):
    """Every file of the checkpoint at `source` (one folder holds them all)."""
    with open_checkpoint(source) as reader:
        files = list(reader.files)
    if len({os.path.dirname(os.path.abspath(f)) for f in files}) != 1:
        raise CkptError(f"the checkpoint at {source} spans several folders; add an archive")
    return files


def _copy_file(path, folder):
    """Copy `path` into `folder`; its sha256."""
    target = os.path.join(folder, os.path.basename(path))
    try:
        shutil.copyfile(path, target)
    except OSError as e:
        raise _disk_error(e, target) from None
    return sha256_file(target)


def _register(base, fields):
    """Add (or replace) one entry in the download directory's added.json."""
    path = os.path.join(base, ADDED)
    with output_lock(path, wait=True):
        data = _read_json(path)
        items = [e for e in data.get("entries", []) if e.get("name") != fields["name"]]
        write_atomic(path, json.dumps({"entries": items + [fields]}, indent=1) + "\n")


def _extract(archive, target, label):
    """Unpack the tar.gz `archive` into the fresh folder `target`, plain files only; returns
    {relative path: sha256}. FormatError for unsafe or unreadable archives, and for one that
    would unpack to more than MAX_EXPANSION times its size; CkptError when the disk cannot
    hold what it unpacks to (both known from a first pass that writes nothing)."""
    try:
        members = _members(archive, target, label)
        total = sum(m.size for m in members.values() if m.isfile())
        limit = MAX_EXPANSION * os.path.getsize(archive)
        if total > limit:
            raise FormatError(f"{label} would unpack to {total} bytes, more than "
                              f"{MAX_EXPANSION} times its own size ({os.path.getsize(archive)} "
                              "bytes): not a checkpoint archive; refused")
        free = shutil.disk_usage(target).free
        if total > free:
            raise CkptError(f"{label} unpacks to {total} bytes and {target} has {free} free; "
                            "free some space or choose another download directory")
        hashes, written = {}, 0
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                rel = members.get(member.name) and _member_name(member.name, label)
                if not rel:
                    continue
                dest = os.path.join(target, *rel.split("/"))
                if member.isdir():
                    os.makedirs(dest, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                if member.isfile():
                    hashes[rel] = _copy(tar.extractfile(member), dest)
                    continue
                linked = member.linkname.replace("\\", "/")
                if member.issym():
                    linked = posixpath.join(posixpath.dirname(rel), linked)
                source = inside(linked)
                if source not in hashes:
                    raise FormatError(f"{label}: member {member.name!r} links to "
                                      f"{member.linkname!r}, which is not a file unpacked "
                                      "before it; refused")
                written += os.path.getsize(os.path.join(target, *source.split("/")))
                if written + total > limit:      # links become copies: they count too
                    raise FormatError(f"{label}: its links would unpack to more than "
                                      f"{MAX_EXPANSION} times its own size; refused")
                with open(os.path.join(target, *source.split("/")), "rb") as f:
                    hashes[rel] = _copy(f, dest)
    except (tarfile.TarError, EOFError, ValueError) as e:
        raise FormatError(f"cannot unpack {label}: {e or type(e).__name__}; removed the "
                          "download") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_error(e, target) from None
        raise FormatError(f"cannot unpack {label}: {e.strerror or e}") from None
    return hashes


_REFUSED = {   # the data filter's finding -> what it means for an archive member
    tarfile.AbsolutePathError: "has an absolute path",
    tarfile.OutsideDestinationError: "leaves the archive ('..')",
    tarfile.SpecialFileError: "is a special file (device or fifo)",
}


def _members(archive, target, label):
    """{name: TarInfo} of every member, each passed through the standard library's `data`
    extraction filter (absolute names, `..`, links leaving the archive, special files) and
    ckptkit's own name checks; reads the archive once, writes nothing."""
    members = {}
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            _member_name(member.name, label)
            try:
                members[member.name] = tarfile.data_filter(member, target)
            except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
                raise FormatError(f"{label}: member {member.name!r} links to "
                                  f"{member.linkname!r}, outside the archive; refused") from None
            except tarfile.FilterError as e:
                what = next((text for kind, text in _REFUSED.items() if isinstance(e, kind)),
                            f"cannot be unpacked safely ({e})")
                raise FormatError(f"{label}: member {member.name!r} {what}; refused") from None
    return members


def _member_name(name, label):
    """The relative POSIX path of a member name (None for the archive root), after the checks
    the data filter lacks: absolute names (it strips the "/"; such an archive is refused),
    Windows drive names, control characters, ckptkit's own record."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise FormatError(f"{label}: member {name!r} has an absolute path; refused")
    if "\n" in raw or "\0" in raw:
        raise FormatError(f"{label}: member {name!r} has a control character in its name; "
                          "refused")
    rel = inside(raw)
    if rel == MANIFEST:
        raise FormatError(f"{label}: member {name!r} would overwrite ckptkit's own record of "
                          "the files; refused")
    return rel or None


def _copy(source, dest):
    """Copy a file object to the new file `dest`; its sha256."""
    digest = hashlib.sha256()
    with source, open(dest, "wb") as out:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _checked_local(name, directory, registry):
    """The checkpoint path of a local entry, after its own checksums (checks.verify)."""
    found = resolve_pretrained(name, directory, registry)
    report = verify(found.path)
    if not report.ok:
        raise Corrupt(f"{found.path} ({name}) fails its checks: {report.problems[0]}")
    return found.path


# ---------------------------------------------------------------- small helpers

def _content_range(value):
    """(start, end, total) of a Content-Range header; None for what it does not say."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None, None
    start, end, total = m.groups()
    return (int(start) if start else None, int(end) if end else None,
            int(total) if total and total != "*" else None)


def _reason(error, timeout):
    """A short human reason for a network error."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[:1].lower() + reason.strerror[1:]
    text = str(reason).strip().splitlines()
    return text[0] if text else type(reason).__name__


def _disk_error(error, path):
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "disk full" if error.errno == errno.ENOSPC else "disk quota exceeded"
        return CkptError(f"{what} while writing {path}; free some space (a partial download "
                         "resumes) or choose another download directory")
    return CkptError(f"cannot write {path}: {error.strerror or error}")


def _makedirs(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise _disk_error(e, path) from None


def _restart(part):
    _remove(part)
    return 0


def _discard(part):
    """Remove a download and its validator record."""
    _remove(part)
    _remove(part + ".json")


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _missing_parents(path):
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _rmdir_if_empty(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path, data):
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError as e:
        raise _disk_error(e, path) from None
