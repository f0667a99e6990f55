"""Pretrained checkpoints by name: the registry, downloads that resume, archives unpacked safely,
and `pretrained:NAME` paths.

The registry (pretrain/registry.json next to the package, or $CKPTKIT_PRETRAIN_REGISTRY) lists
entries; each names a net (a ckptkit.train.nets name), either an archive (`url` of a .tar.gz and
the `member` inside it: the .ckpt file or V2 prefix) or a `local` checkpoint (a path under the
download directory, made by the command in `made_by`), and what fine-tuning needs to know
(num_classes, label_offset, image_size, preprocessing, exclude; null: the net record's).

On disk, under the download directory (default: $CKPTKIT_PRETRAIN_DIR or ./pretrain):
- `.download/FILE.part`: an archive being downloaded; a later `get` resumes it with an HTTP
  Range request (If-Range on the validator in `FILE.part.json`, so a changed file restarts).
- `NAME/`: the unpacked archive, renamed into place only once complete and verified, with
  `NAME/SHA256`: the sha256 of every unpacked file (`sha256sum -c SHA256` checks it) and, in a
  comment, the archive's sha256 and whether the registry vouched for it or it was trusted on
  first use (the registry has no sha256: the first download's is recorded, and `get`/`resolve`
  check the unpacked files against this record every time).

Notes
- The archive is checked before anything is unpacked: a size or sha256 that disagrees with the
  registry removes the download and leaves nothing behind (Corrupt).
- Members are unpacked into a temporary folder in the download directory, never through a
  link: absolute names, `..` components, links that leave the archive and special files are
  refused; links inside it become copies of files unpacked before them.
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
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from .errors import CkptError, Corrupt, FormatError, NotFound
from .paths import resolve as resolve_path

REGISTRY_ENV = "CKPTKIT_PRETRAIN_REGISTRY"
DIR_ENV = "CKPTKIT_PRETRAIN_DIR"
DEFAULT_DIR = "pretrain"
GET_COMMAND = "ckptkit pretrained get"
DIR_OPTION = "--dir"                 # how the CLI names the download directory
MANIFEST = "SHA256"
DOWNLOADS = ".download"
TIMEOUT = 30.0                       # seconds, for connecting and for each read
CHUNK = 1 << 20

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^https?://[^\s/]+/\S*\.tar\.gz$")
_FIELDS = {"name", "net", "url", "member", "local", "made_by", "num_classes", "label_offset",
           "image_size", "preprocessing", "exclude", "sha256", "size", "source"}
_ARCHIVE_LINE = re.compile(r"^# archive (\S+) sha256 ([0-9a-f]{64}) (registry|first-use)$")
_FILE_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


@dataclass(frozen=True)
class Entry:
    """One registry entry; see the module notes. Unknown facts are None."""

    name: str
    net: str
    url: str = None
    member: str = None
    local: str = None
    made_by: str = None
    num_classes: int = None
    label_offset: int = None
    image_size: int = None
    preprocessing: str = None
    exclude: tuple = None
    sha256: str = None
    size: int = None
    source: tuple = ()

    @property
    def archive(self):
        """The archive's file name (the last component of the URL), or None."""
        if not self.url:
            return None
        return posixpath.basename(urllib.parse.urlsplit(self.url).path)


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

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path


# ---------------------------------------------------------------- the registry

def registry_path(path=None):
    """The registry file: `path`, else $CKPTKIT_PRETRAIN_REGISTRY, else pretrain/registry.json
    in the source tree this package sits in."""
    if path is not None:
        return Path(path)
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV])
    return Path(__file__).resolve().parent.parent / DEFAULT_DIR / "registry.json"


def load_registry(path=None):
    """{name: Entry} from the registry at `path` (see registry_path), every field checked; a
    CkptError names the entry, the field and what is allowed."""
    where = registry_path(path)
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no pretrained registry at {where} (set ${REGISTRY_ENV})") from None
    except OSError as e:
        raise CkptError(f"cannot read the pretrained registry {where}: {e.strerror}") from None
    except ValueError as e:
        raise FormatError(f"pretrained registry {where} is not valid JSON: {e}") from None
    items = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise FormatError(f"pretrained registry {where} needs an \"entries\" list")
    registry = {}
    for i, item in enumerate(items):
        entry = _entry(item, f"{where}: entry {i}")
        if entry.name in registry:
            raise FormatError(f"{where}: two entries are named {entry.name!r}")
        registry[entry.name] = entry
    return registry


def entries(registry=None):
    """The registry's entries, in file order (`registry`: a path, or None for the default)."""
    return list(load_registry(registry).values())


def entry(name, registry=None):
    """The entry called `name` (`registry`: a path, None, or what load_registry returned);
    NotFound naming the known names and the closest otherwise."""
    known = registry if isinstance(registry, dict) else load_registry(registry)
    if name in known:
        return known[name]
    scores = sorted((-SequenceMatcher(None, str(name), k).ratio(), k) for k in known)
    hint = f"; closest: {scores[0][1]}" if scores and -scores[0][0] >= 0.5 else ""
    raise NotFound(f"unknown pretrained checkpoint {name!r}; known: "
                   f"{', '.join(sorted(known))}{hint}")


def _entry(item, where):
    if not isinstance(item, dict):
        raise FormatError(f"{where} is not an object")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise FormatError(f"{where}: name must be letters, digits, '_', '.' or '-' (not "
                          f"starting with '.' or '-'), got {name!r}")
    where = f"{where} ({name})"
    unknown = sorted(k for k in item if k not in _FIELDS and not k.startswith("_"))
    if unknown:
        raise FormatError(f"{where}: unknown field {unknown[0]!r}; known: "
                          f"{', '.join(sorted(_FIELDS))} (keys starting with _ are comments)")

    def field(key, kinds, check=None, what=""):
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, kinds) or isinstance(value, bool) or \
                (check and not check(value)):
            raise FormatError(f"{where}: {key} must be {what}, got {value!r}")
        return value

    net = field("net", str, bool, "a ckptkit net name")
    if net is None:
        raise FormatError(f"{where}: net is required (a ckptkit.train.nets name)")
    url = field("url", str, _URL.match, "an http(s) URL of a .tar.gz")
    member = field("member", str, _relative, "a relative path inside the archive")
    local = field("local", str, bool, "a path")
    if (url is None) == (local is None):
        raise FormatError(f"{where}: give either url (with member) or local, not "
                          f"{'both' if url else 'neither'}")
    if url and member is None:
        raise FormatError(f"{where}: member is required with url (the .ckpt file or prefix "
                          "inside the archive)")
    if local and (member is not None or item.get("size") is not None):
        raise FormatError(f"{where}: member and size belong to url entries, not local ones")
    exclude = field("exclude", list, lambda v: all(isinstance(s, str) and s for s in v),
                    "a list of scope names")
    source = field("source", (str, list), lambda v: isinstance(v, str) or
                   all(isinstance(s, str) for s in v), "a string or a list of strings")
    return Entry(
        name=name, net=net, url=url, member=member, local=local,
        made_by=field("made_by", str, None, "a command"),
        num_classes=field("num_classes", int, lambda v: v >= 1, "a positive integer"),
        label_offset=field("label_offset", int, lambda v: v in (0, 1), "0 or 1"),
        image_size=field("image_size", int, lambda v: v >= 1, "a positive integer"),
        preprocessing=field("preprocessing", str, bool, "a preprocessing name"),
        exclude=tuple(exclude) if exclude is not None else None,
        sha256=field("sha256", str, _SHA256.match, "64 lowercase hex digits or null"),
        size=field("size", int, lambda v: v >= 0, "a byte count or null"),
        source=(source,) if isinstance(source, str) else tuple(source or ()))


def _relative(path):
    parts = path.replace("\\", "/").split("/")
    return bool(path) and not path.startswith(("/", "\\")) and ".." not in parts \
        and not re.match(r"^[A-Za-z]:", path)


# ---------------------------------------------------------------- where things are

def directory_path(directory=None):
    """The download directory: `directory`, else $CKPTKIT_PRETRAIN_DIR, else ./pretrain."""
    if directory is not None:
        return os.fspath(directory)
    return os.environ.get(DIR_ENV) or DEFAULT_DIR


def get_command(name, directory=None):
    """The exact command that downloads `name` into `directory`."""
    command = f"{GET_COMMAND} {name}"
    if directory is not None and os.path.normpath(os.fspath(directory)) != \
            os.path.normpath(directory_path()):
        command += f" {DIR_OPTION} {_quote(os.fspath(directory))}"
    return command


def installed(name, directory=None, registry=None):
    """The checkpoint path of `name` if it is in `directory` (not checked), else None."""
    item = entry(name, registry)
    base = directory_path(directory)
    if item.local:
        try:
            return resolve_path(_local_path(item, base)).path
        except CkptError:
            return None
    folder = os.path.join(base, item.name)
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        return None
    return _member_path(item, folder)


def resolve(name, directory=None, registry=None, verify=True):
    """The checkpoint path (V2 prefix or file) of pretrained `name` in `directory`.

    Downloaded entries are checked against their SHA256 record (and the registry's archive
    sha256) unless verify=False: Corrupt when a file changed. NotFound with the command to run
    when it is not there yet.
    """
    item = entry(name, registry)
    base = directory_path(directory)
    if item.local:
        return _local(item, base, sha=verify)
    folder = os.path.join(base, item.name)
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        raise NotFound(f"pretrained checkpoint {name} is not downloaded yet (looked in "
                       f"{folder}); run: {get_command(name, directory)}")
    if verify:
        _check_folder(item, folder, directory)
    return _member_path(item, folder)


# ---------------------------------------------------------------- get

def get(name, directory=None, progress=None, *, registry=None, force=False, timeout=TIMEOUT):
    """Download, check and unpack pretrained `name` into `directory`; a Fetched (its path is
    the checkpoint prefix or file).

    Present and matching its record: nothing is downloaded. force=True downloads it again and
    replaces what is there. `progress(total, done)` is called with byte counts while
    downloading. Errors are one-line CkptErrors: HTTP errors, refused connections, timeouts,
    a full disk, an interrupted download (run `get` again: it resumes), a wrong sha256 or
    size (Corrupt; the download is removed), an unsafe or broken archive.
    """
    item = entry(name, registry)
    base = directory_path(directory)
    if item.local:
        return Fetched(item.name, _local(item, base, checksums=True), False, item.sha256,
                       "local")
    folder = os.path.join(base, item.name)
    if os.path.exists(folder) and not force:
        if not os.path.isfile(os.path.join(folder, MANIFEST)):
            raise CkptError(f"{folder} exists but was not made by `{GET_COMMAND}` (no "
                            f"{MANIFEST} file); move it away or download again with force")
        archive_sha, trust = _check_folder(item, folder, directory)
        return Fetched(item.name, _member_path(item, folder), False, archive_sha, trust)

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
    note = ""
    if trust == "first-use":
        note = (f"trust on first use: the registry has no sha256 for {item.archive}; this "
                f"download's is {digest}, recorded in {os.path.join(folder, MANIFEST)} and "
                "checked on every later use (compare it with a source you trust)")
    return Fetched(item.name, path, True, digest, trust, note)


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


def _check_archive(item, part):
    """The archive's sha256, after its size and sha256 agree with the registry's."""
    size = os.path.getsize(part)
    if item.size is not None and size != item.size:
        raise Corrupt(f"downloaded {item.archive} is {size} bytes, the registry says "
                      f"{item.size}; removed the download")
    digest = _sha256_file(part)
    if item.sha256 and digest != item.sha256:
        raise Corrupt(f"sha256 of downloaded {item.archive} is {digest}, the registry says "
                      f"{item.sha256}; removed the download")
    return digest


def _unpack(item, part, base, folder, digest, trust):
    """Unpack `part` into a temporary folder, check the checkpoint, record every file's
    sha256, then rename the folder into place; the checkpoint path."""
    from .checks import verify

    tmp = tempfile.mkdtemp(prefix=f".{item.name}.", suffix=".unpacking", dir=base)
    try:
        hashes = _extract(part, tmp, item.archive)
        try:
            checkpoint = resolve_path(_member_path(item, tmp))
        except CkptError:
            shown = ", ".join(sorted(hashes)[:8]) or "nothing"
            raise FormatError(f"{item.archive} has no checkpoint {item.member!r}; it holds: "
                              f"{shown}") from None
        report = verify(checkpoint.path)
        if not report.ok:
            raise Corrupt(f"the checkpoint in {item.archive} fails its own checks: "
                          f"{report.problems[0]}; removed the download")
        lines = [f"# ckptkit pretrained {item.name} from {item.url}",
                 f"# archive {item.archive} sha256 {digest} {trust}"]
        lines += [f"{hashes[rel]}  {rel}" for rel in sorted(hashes)]
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _member_path(item, folder)


def _extract(archive, target, label):
    """Unpack the tar.gz `archive` into the fresh folder `target`, plain files only; returns
    {relative path: sha256}. FormatError for unsafe or unreadable archives."""
    hashes = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                rel = _member_name(member.name, label)
                if rel is None:
                    continue
                dest = os.path.join(target, *rel.split("/"))
                if member.isdir():
                    os.makedirs(dest, exist_ok=True)
                elif member.isfile():
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    hashes[rel] = _copy(tar.extractfile(member), dest)
                elif member.issym() or member.islnk():
                    linked = member.linkname.replace("\\", "/")
                    if member.issym():
                        linked = posixpath.join(posixpath.dirname(rel), linked)
                    source = _inside(linked)
                    if member.linkname.startswith(("/", "\\")) or source is None:
                        raise FormatError(f"{label}: member {member.name!r} links to "
                                          f"{member.linkname!r}, outside the archive; refused")
                    if source not in hashes:
                        raise FormatError(f"{label}: member {member.name!r} links to "
                                          f"{member.linkname!r}, which is not a file unpacked "
                                          "before it; refused")
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    with open(os.path.join(target, *source.split("/")), "rb") as f:
                        hashes[rel] = _copy(f, dest)
                else:
                    raise FormatError(f"{label}: member {member.name!r} is a special file "
                                      "(device or fifo); refused")
    except (tarfile.TarError, EOFError, ValueError) as e:
        raise FormatError(f"cannot unpack {label}: {e or type(e).__name__}; removed the "
                          "download") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_error(e, target) from None
        raise FormatError(f"cannot unpack {label}: {e.strerror or e}") from None
    return hashes


def _member_name(name, label):
    """The safe relative POSIX path of a member name; None for the archive root."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw):
        raise FormatError(f"{label}: member {name!r} has an absolute path; refused")
    if "\n" in raw or "\0" in raw:
        raise FormatError(f"{label}: member {name!r} has a control character in its name; "
                          "refused")
    rel = _inside(raw)
    if rel is None or ".." in raw.split("/"):
        raise FormatError(f"{label}: member {name!r} leaves the archive ('..'); refused")
    if rel == MANIFEST:
        raise FormatError(f"{label}: member {name!r} would overwrite ckptkit's own record of "
                          "the files; refused")
    return rel or None


def _inside(path):
    """`path` normalized, relative and inside the archive root ("" for the root), or None."""
    if path.startswith("/"):
        return None
    norm = posixpath.normpath(path)
    if norm == ".":
        return ""
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


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


# ---------------------------------------------------------------- checking what is there

def _check_folder(item, folder, directory):
    """Check every file of a downloaded entry against its SHA256 record; (archive sha256,
    trust). Corrupt names the first file that changed and the way out."""
    manifest = os.path.join(folder, MANIFEST)
    archive_sha = trust = None
    files = []
    try:
        with open(manifest, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                head = _ARCHIVE_LINE.match(line)
                body = _FILE_LINE.match(line)
                if head:
                    archive_sha, trust = head.group(2), head.group(3)
                elif body:
                    files.append((body.group(1), body.group(2)))
                elif line and not line.startswith("#"):
                    raise Corrupt(f"{manifest} has a line ckptkit did not write: {line[:60]!r}"
                                  f"; download again: {get_command(item.name, directory)} "
                                  "with force")
    except OSError as e:
        raise CkptError(f"cannot read {manifest}: {e.strerror}") from None
    again = f"delete {folder} and run {get_command(item.name, directory)}"
    if archive_sha is None or not files:
        raise Corrupt(f"{manifest} records no archive or no files; {again}")
    if item.sha256 and archive_sha != item.sha256:
        raise Corrupt(f"{folder} was unpacked from an archive with sha256 {archive_sha}, but "
                      f"the registry says {item.sha256}; {again}")
    for expected, rel in files:
        path = os.path.join(folder, *rel.split("/"))
        if _inside(rel) != rel:
            raise Corrupt(f"{manifest} names {rel!r}, outside {folder}; {again}")
        try:
            actual = _sha256_file(path)
        except FileNotFoundError:
            raise Corrupt(f"{path} is missing (recorded in {manifest}); {again}") from None
        if actual != expected:
            raise Corrupt(f"{path} has changed since it was downloaded (sha256 {actual}, "
                          f"recorded {expected}); {again}")
    return archive_sha, trust


def _local(item, base, sha=True, checksums=False):
    """The checkpoint path of a local entry (made on this machine, never downloaded): its
    sha256 (of the .index of a V2 checkpoint, else of the file) checked when the registry
    gives one and `sha`, its own checksums (ckptkit.checks.verify) when `checksums`."""
    path = _local_path(item, base)
    try:
        found = resolve_path(path)
    except NotFound:
        made = f"; make it with: {item.made_by}" if item.made_by else ""
        raise NotFound(f"pretrained checkpoint {item.name} is made locally and is not at "
                       f"{path}{made}") from None
    if sha and item.sha256:
        pinned = found.path + ".index" if found.kind == "tf-v2" else found.path
        actual = _sha256_file(pinned)
        if actual != item.sha256:
            raise Corrupt(f"sha256 of {pinned} is {actual}, the registry says {item.sha256} "
                          f"for {item.name}")
    if checksums:
        from .checks import verify

        report = verify(found.path)
        if not report.ok:
            raise Corrupt(f"{found.path} ({item.name}) fails its checks: "
                          f"{report.problems[0]}")
    return found.path


def _local_path(item, base):
    return item.local if os.path.isabs(item.local) else os.path.join(base, item.local)


def _member_path(item, folder):
    return os.path.join(folder, *item.member.replace("\\", "/").split("/"))


# ---------------------------------------------------------------- small helpers

def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


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


def _quote(text):
    return text if re.match(r"^[\w./:-]+$", text) else "'" + text.replace("'", "'\\''") + "'"
