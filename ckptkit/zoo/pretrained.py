"""The pretrained registry: published checkpoints by name, what each differs in from its net's
record, where its files are once fetched, and whether they are still what was fetched.

The registry (registry.json in this package, whose source is pretrain/registry.json; or
$CKPTKIT_PRETRAIN_REGISTRY) lists entries; each names a net (a zoo.nets record), either an
archive (`url` of a .tar.gz or .tgz and the `member` inside it: the .ckpt file or V2 prefix) or a
`local` checkpoint (a path under the download directory, made by the command in `made_by`),
and what its checkpoint differs in from the net's record (num_classes, label_offset,
image_size, preprocessing, exclude; null: the record's): Entry.record is the one place those
overrides are applied. `ema: true` says its ExponentialMovingAverage shadows are the weights
to restore (the default of --use-moving-averages for pretrained:NAME).

On disk, under the download directory (--dir, else $CKPTKIT_PRETRAIN_DIR, else
$CKPTKIT_HOME/pretrained, else `pretrained/` in the per-user data directory platformdirs
names, e.g. ~/.local/share/ckptkit/pretrained: one place, whatever the working directory):
- `NAME/`: an unpacked archive (download.py puts it there), with `NAME/SHA256`: the sha256 of
  every unpacked file (`sha256sum -c SHA256` checks it) and, in a comment, the archive's
  sha256 and whether the registry vouched for it or it was trusted on first use (the registry
  has no sha256: the first download's is recorded). `locate` checks the files against this
  record every time.

No network, no TensorFlow: download.py fetches and unpacks, paths.py turns `pretrained:NAME`
into a checkpoint through `locate`.
"""
import dataclasses
import hashlib
import json
import os
import posixpath
import re
import urllib.parse
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

from ..errors import CkptError, Corrupt, FormatError, NotFound
from .nets import get_net

PREFIX = "pretrained:"               # pretrained:NAME, as a checkpoint path
REGISTRY_ENV = "CKPTKIT_PRETRAIN_REGISTRY"
DIR_ENV = "CKPTKIT_PRETRAIN_DIR"
HOME_ENV = "CKPTKIT_HOME"
GET_COMMAND = "ckptkit pretrained get"
DIR_OPTION = "--dir"                 # how the CLI names the download directory
MANIFEST = "SHA256"
CHUNK = 1 << 20

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")   # a pretrained name
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL = re.compile(r"^https?://[^\s/]+/\S*\.(tar\.gz|tgz)$")
_FIELDS = {"name", "net", "url", "member", "local", "made_by", "added", "num_classes",
           "label_offset", "image_size", "preprocessing", "exclude", "ema", "sha256", "size",
           "source"}
_OVERRIDES = ("num_classes", "label_offset", "image_size", "preprocessing")
_ARCHIVE_LINE = re.compile(r"^# archive (\S+) sha256 ([0-9a-f]{64}) (registry|first-use|added)$")
ADDED = "added.json"     # in the download directory: the entries `pretrained add` made
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
    added: str = None       # `pretrained add`: where the files were added from
    num_classes: int = None
    label_offset: int = None
    image_size: int = None
    preprocessing: str = None
    exclude: tuple = None
    ema: bool = None        # its ExponentialMovingAverage shadows are the weights to use
    sha256: str = None
    size: int = None
    source: tuple = ()

    @property
    def record(self):
        """The net's NetRecord with this checkpoint's facts where they differ."""
        return dataclasses.replace(get_net(self.net), **{
            key: getattr(self, key) for key in _OVERRIDES if getattr(self, key) is not None})

    @property
    def exclude_scopes(self):
        """The scopes to drop for a new head: the entry's, else the record's classifier."""
        return self.exclude if self.exclude is not None else self.record.classifier_scopes

    @property
    def archive(self):
        """The archive's file name (the last component of the URL), or None."""
        if not self.url:
            return None
        return posixpath.basename(urllib.parse.urlsplit(self.url).path)


# ---------------------------------------------------------------- the registry

def registry_path(path=None):
    """The registry file: `path`, else $CKPTKIT_PRETRAIN_REGISTRY, else the registry.json
    shipped in this package."""
    if path is not None:
        return Path(path)
    if os.environ.get(REGISTRY_ENV):
        return Path(os.environ[REGISTRY_ENV])
    return Path(__file__).resolve().parent / "registry.json"


def load_registry(path=None, directory=None):
    """{name: Entry} from the registry at `path` (see registry_path) and the entries `pretrained
    add` made in the download `directory`, every field checked; a CkptError names the entry,
    the field and what is allowed."""
    registry = _load(registry_path(path))
    added = os.path.join(directory_path(directory), ADDED)
    if os.path.isfile(added):
        for name, item in _load(Path(added)).items():
            if name in registry:
                raise FormatError(f"{added}: {name!r} is also in the registry; rename it")
            registry[name] = item
    return registry


def _load(where):
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


def entries(registry=None, directory=None):
    """The registry's entries, in file order (`registry`: a path, or None for the default),
    then those added in `directory`."""
    return list(load_registry(registry, directory).values())


def entry(name, registry=None, directory=None):
    """The entry called `name` (`registry`: a path, None, or what load_registry returned);
    NotFound naming the known names and the closest otherwise."""
    known = registry if isinstance(registry, dict) else load_registry(registry, directory)
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
    if not isinstance(name, str) or not NAME.match(name):
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
    url = field("url", str, _URL.match, "an http(s) URL of a .tar.gz or .tgz")
    member = field("member", str, _relative, "a relative path inside the archive")
    local = field("local", str, bool, "a path")
    added = field("added", str, bool, "a path")
    given = [key for key, value in (("url", url), ("local", local), ("added", added)) if value]
    if len(given) != 1:
        raise FormatError(f"{where}: give either url (with member) or local, not "
                          f"{'both' if given else 'neither'}")
    if (url or added) and member is None:
        raise FormatError(f"{where}: member is required with {given[0]} (the .ckpt file or "
                          "prefix inside the archive)")
    if local and (member is not None or item.get("size") is not None):
        raise FormatError(f"{where}: member and size belong to url entries, not local ones")
    exclude = field("exclude", list, lambda v: all(isinstance(s, str) and s for s in v),
                    "a list of scope names")
    source = field("source", (str, list), lambda v: isinstance(v, str) or
                   all(isinstance(s, str) for s in v), "a string or a list of strings")
    return Entry(
        name=name, net=net, url=url, member=member, local=local, added=added,
        made_by=field("made_by", str, None, "a command"),
        num_classes=field("num_classes", int, lambda v: v >= 1, "a positive integer"),
        label_offset=field("label_offset", int, lambda v: v in (0, 1), "0 or 1"),
        image_size=field("image_size", int, lambda v: v >= 1, "a positive integer"),
        preprocessing=field("preprocessing", str, bool, "a preprocessing name"),
        exclude=tuple(exclude) if exclude is not None else None,
        ema=_flag(item.get("ema"), f"{where}: ema"),
        sha256=field("sha256", str, _SHA256.match, "64 lowercase hex digits or null"),
        size=field("size", int, lambda v: v >= 0, "a byte count or null"),
        source=(source,) if isinstance(source, str) else tuple(source or ()))


def _flag(value, where):
    if value is not None and not isinstance(value, bool):
        raise FormatError(f"{where} must be true, false or null, got {value!r}")
    return value


def named_entry(checkpoint):
    """The Entry a `pretrained:NAME` checkpoint path names, else None (an unknown name too:
    the path's own error comes where it is opened)."""
    text = str(checkpoint or "")
    if not text.startswith(PREFIX):
        return None
    try:
        return entry(text[len(PREFIX):])
    except CkptError:
        return None


def pretrained_ema(checkpoint):
    """Whether `checkpoint` is a pretrained:NAME whose entry says to restore its EMA shadows
    (the published MobileNet v2 checkpoints were evaluated with them)."""
    item = named_entry(checkpoint)
    return bool(item and item.ema)


def _relative(path):
    parts = path.replace("\\", "/").split("/")
    return bool(path) and not path.startswith(("/", "\\")) and ".." not in parts \
        and not re.match(r"^[A-Za-z]:", path)


# ---------------------------------------------------------------- where things are

def directory_path(directory=None):
    """The download directory (see the module notes)."""
    if directory is not None:
        return os.fspath(directory)
    if os.environ.get(DIR_ENV):
        return os.environ[DIR_ENV]
    return os.path.join(home(), "pretrained")


def home():
    """ckptkit's per-user data directory: $CKPTKIT_HOME, else platformdirs' user data dir."""
    if os.environ.get(HOME_ENV):
        return os.environ[HOME_ENV]
    import platformdirs

    return platformdirs.user_data_dir("ckptkit", appauthor=False)


def get_command(name, directory=None):
    """The exact command that downloads `name` into `directory`."""
    command = f"{GET_COMMAND} {name}"
    if directory is not None and os.path.normpath(os.fspath(directory)) != \
            os.path.normpath(directory_path()):
        command += f" {DIR_OPTION} {_quote(os.fspath(directory))}"
    return command


def locate(name, directory=None, registry=None, verify=True):
    """(Entry, path) of pretrained `name` in `directory`: a downloaded entry's checkpoint path
    (V2 prefix or file), checked against its SHA256 record (and the registry's archive
    sha256) unless verify=False: Corrupt when a file changed, NotFound with the command to
    run when it is not there yet; a local entry's path as the registry names it (a folder
    or prefix that paths.resolve resolves; check_pin then checks its sha256)."""
    item = entry(name, registry, directory)
    base = directory_path(directory)
    if item.local:
        return item, local_path(item, base, registry)
    folder = os.path.join(base, item.name)
    if not os.path.isfile(os.path.join(folder, MANIFEST)) and item.added:
        raise NotFound(f"pretrained checkpoint {name} was added from {item.added} and is not "
                       f"in {folder} any more; add it again with --force")
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        raise NotFound(f"pretrained checkpoint {name} is not downloaded yet (looked in "
                       f"{folder}); run: {get_command(name, directory)}")
    if verify:
        check_folder(item, folder, directory)
    return item, member_path(item, folder)


def check_pin(item, path):
    """Corrupt unless `path` (a local entry's pinned file: the .index of a V2 checkpoint,
    else the file) has the sha256 the registry gives, when it gives one."""
    if item.sha256:
        actual = sha256_file(path)
        if actual != item.sha256:
            raise Corrupt(f"sha256 of {path} is {actual}, the registry says {item.sha256} "
                          f"for {item.name}")


# ---------------------------------------------------------------- checking what is there

def check_folder(item, folder, directory):
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
        if inside(rel) != rel:
            raise Corrupt(f"{manifest} names {rel!r}, outside {folder}; {again}")
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise Corrupt(f"{path} is missing (recorded in {manifest}); {again}") from None
        if actual != expected:
            raise Corrupt(f"{path} has changed since it was downloaded (sha256 {actual}, "
                          f"recorded {expected}); {again}")
    return archive_sha, trust


def local_path(item, base, registry=None):
    """A local entry's path: absolute, else under the download directory, else beside the
    registry file that lists it (links resolved: in a checkout, pretrain/, where tools/demo
    makes the demo's), so it is found from any working directory."""
    if os.path.isabs(item.local):
        return item.local
    here = os.path.join(base, item.local)
    if os.path.exists(here):
        return here
    listed_in = registry_path(None if isinstance(registry, dict) else registry)
    beside = os.path.join(listed_in.resolve().parent, item.local)
    return beside if os.path.exists(beside) else here


def member_path(item, folder):
    return os.path.join(folder, *item.member.replace("\\", "/").split("/"))


def inside(path):
    """`path` normalized, relative and inside the archive root ("" for the root), or None."""
    if path.startswith("/"):
        return None
    norm = posixpath.normpath(path)
    if norm == ".":
        return ""
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


def _quote(text):
    return text if re.match(r"^[\w./:-]+$", text) else "'" + text.replace("'", "'\\''") + "'"
