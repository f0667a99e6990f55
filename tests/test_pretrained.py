"""Pretrained checkpoints: the shipped registry, and `get`/`resolve` against a local HTTP server
(Range requests, dropped connections, wrong checksums, hostile archives), all without TF.

The archives hold tiny real checkpoints from bundle_writer: a V1 file like the tf-slim
ImageNet archives, or a V2 bundle.
"""
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import ckptkit
from ckptkit import download, paths
from ckptkit.errors import CkptError, Corrupt, FormatError, NotFound
from ckptkit.zoo import pretrained
from helpers.bundle_writer import write_bundle, write_v1
from helpers.hostile import flip

TENSORS = {"net/conv1/weights": np.random.default_rng(0).standard_normal((64, 64, 4), "f4"),
           "net/logits/biases": np.arange(5, dtype="f4")}


# ---------------------------------------------------------------- a small HTTP server

class Server:
    """Serves `files` (URL path -> bytes) on 127.0.0.1 with Range support. `drop_after[path]`
    sends that many bytes of the file once, then drops the connection; paths in
    `ignore_range` answer every request with the whole file. `requests` logs
    (path, Range header, If-Range header, status)."""

    def __init__(self):
        self.files, self.drop_after, self.ignore_range, self.requests = {}, {}, set(), []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,),
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def ranges(self):
        return [r[1] for r in self.requests if r[1]]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                data = server.files.get(self.path)
                asked = self.headers.get("Range")
                log = [self.path, asked, self.headers.get("If-Range")]
                if data is None:
                    server.requests.append((*log, 404))
                    self.send_error(404, "Not Found")
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", asked or "")
                if m and self.path not in server.ignore_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        server.requests.append((*log, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                status = 206 if start else 200
                server.requests.append((*log, status))
                self.send_response(status)
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                cut = server.drop_after.pop(self.path, None)
                if cut is None:
                    self.wfile.write(data[start:])
                    return
                self.wfile.write(data[start:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

        return Handler

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """127.0.0.1 directly, whatever proxy the environment names."""
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(pretrained.DIR_ENV, raising=False)
    monkeypatch.delenv(pretrained.REGISTRY_ENV, raising=False)


# ---------------------------------------------------------------- archives and registries

def tar_gz(members):
    """A .tar.gz of `members`: (name, bytes) for files, or a TarInfo for anything else."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def v1_bytes(tmp_path):
    path = tmp_path / "src.ckpt"
    write_v1(path, TENSORS)
    return path.read_bytes()


def v2_files(tmp_path):
    prefix = tmp_path / "src" / "model.ckpt"
    write_bundle(prefix, TENSORS)
    return {p.name: p.read_bytes() for p in prefix.parent.iterdir()}


def write_registry(path, *items):
    path.write_text(json.dumps({"entries": list(items)}))
    return path


def item(name, url, member="slim_net.ckpt", **fields):
    return {"name": name, "net": "resnet_v1_50", "url": url, "member": member,
            "num_classes": 1000, "image_size": 224, "preprocessing": "vgg",
            "exclude": ["resnet_v1_50/logits"], "sha256": None, "size": None, **fields}


@pytest.fixture
def hosted(tmp_path, server):
    """host(archive bytes, **entry fields) -> (registry path, download dir, URL path): the
    archive on the server and a registry entry "tiny" for it."""
    def host(archive, name="tiny", **fields):
        path = f"/models/{name}_2016_08_28.tar.gz"
        server.files[path] = archive
        registry = write_registry(tmp_path / "registry.json",
                                  item(name, server.url(path), **fields))
        return registry, tmp_path / "pretrain", path
    return host


def slim_archive(tmp_path):
    """A tar.gz like tf-slim's: one V1 checkpoint file at the top."""
    return tar_gz([("slim_net.ckpt", v1_bytes(tmp_path))])


def listing(directory):
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*"))


def one_line(error):
    text = str(error.value)
    assert text and "\n" not in text, text
    return text


# ---------------------------------------------------------------- the shipped registry

def test_shipped_registry_entries_agree_with_the_nets_registry():
    from ckptkit.zoo.nets import NETS, PREPROCESSING

    data = json.loads(pretrained.registry_path().read_text())
    found = pretrained.load_registry()
    assert len(found) == len(data["entries"])              # names are unique
    archives = [e.archive for e in found.values() if e.url]
    assert len(set(archives)) == len(archives)
    imagenet = {"resnet_v1_50", "resnet_v1_101", "resnet_v1_152", "resnet_v2_50",
                "resnet_v2_101", "resnet_v2_152", "inception_v1", "inception_v2",
                "inception_v3", "vgg_16", "vgg_19"}
    assert imagenet <= set(found)
    for entry in found.values():
        assert entry.net in NETS, entry.name
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        assert all(s in data["sources"] for s in entry.source), entry.name
        if entry.url:
            assert re.fullmatch(r"https?://\S+\.(tar\.gz|tgz)", entry.url), entry.name
            assert entry.member.endswith(".ckpt") and entry.source, entry.name
            assert (entry.size is None) == (entry.sha256 is None), entry.name
            net = NETS[entry.net]
            assert (entry.num_classes, entry.label_offset, entry.exclude) == \
                (net.num_classes, net.label_offset, net.classifier_scopes), entry.name
        if entry.name in imagenet:
            net = NETS[entry.net]
            assert entry.url and entry.net == entry.name
            assert entry.preprocessing in PREPROCESSING
            assert (entry.num_classes, entry.label_offset, entry.image_size,
                    entry.preprocessing, entry.exclude) == \
                (net.num_classes, net.label_offset, net.image_size, net.preprocessing,
                 net.classifier_scopes), entry.name
    demo = found["lenet_mnist_0to4"]
    assert (demo.net, demo.url, demo.local) == ("lenet", None, "lenet_mnist_0to4")
    assert (demo.num_classes, demo.image_size, demo.exclude) == (10, 28, ("LeNet/fc4",))
    assert "tools/make_demo_data.py" in demo.made_by


BAD_ENTRIES = [   # (entry fields changed, message)
    ({"name": "../x"}, "name must be"),
    ({"net": None}, "net is required"),
    ({"url": "http://example.org/x.zip"}, "url must be an http"),
    ({"url": "ftp://example.org/x.tar.gz"}, "url must be an http"),
    ({"local": "here"}, "either url .with member. or local, not both"),
    ({"url": None}, "either url .with member. or local, not neither"),
    ({"member": None}, "member is required with url"),
    ({"member": "../x.ckpt"}, "member must be a relative path"),
    ({"member": "/x.ckpt"}, "member must be a relative path"),
    ({"sha256": "ABC"}, "sha256 must be 64 lowercase hex"),
    ({"size": -1}, "size must be a byte count"),
    ({"num_classes": True}, "num_classes must be a positive integer"),
    ({"label_offset": 2}, "label_offset must be 0 or 1"),
    ({"exclude": "Logits"}, "exclude must be a list"),
    ({"sha265": None}, "unknown field 'sha265'"),
]


@pytest.mark.parametrize("change, message", BAD_ENTRIES)
def test_registry_validation_names_entry_and_field(tmp_path, change, message):
    fields = {**item("tiny", "http://example.org/m/tiny.tar.gz"), **change}
    path = write_registry(tmp_path / "registry.json", fields)
    with pytest.raises(FormatError, match=message) as e:
        pretrained.load_registry(path)
    assert "entry 0" in one_line(e)


def test_registry_rejects_duplicates_and_allows_comments(tmp_path):
    one = item("tiny", "http://example.org/m/tiny.tar.gz", _note="a comment")
    assert pretrained.entries(write_registry(tmp_path / "r.json", one))[0].name == "tiny"
    with pytest.raises(FormatError, match="two entries are named 'tiny'"):
        pretrained.load_registry(write_registry(tmp_path / "r.json", one, one))
    with pytest.raises(NotFound, match="no pretrained registry at .*CKPTKIT_PRETRAIN"):
        pretrained.load_registry(tmp_path / "absent.json")


def test_unknown_name_lists_the_known_and_the_closest():
    with pytest.raises(NotFound, match=r"unknown pretrained checkpoint 'resnet_v1_05'; "
                                       r"known: .*vgg_19; closest: resnet_v1_50") as e:
        paths.resolve_pretrained("resnet_v1_05", "somewhere").path
    one_line(e)


# ---------------------------------------------------------------- get and resolve

def test_get_verifies_unpacks_and_resolves(tmp_path, hosted, server):
    archive = slim_archive(tmp_path)
    registry, directory, url = hosted(archive, sha256=hashlib.sha256(archive).hexdigest(),
                                      size=len(archive))
    calls = []
    got = download.get("tiny", directory, lambda total, done: calls.append((total, done)),
                         registry=registry)
    expected = str(directory / "tiny" / "slim_net.ckpt")
    assert (got.path, os.fspath(got), got.downloaded, got.trust, got.note) == \
        (expected, expected, True, "registry", "")
    assert calls[0] == (len(archive), 0) and calls[-1] == (len(archive), len(archive))
    assert [done for _, done in calls] == sorted(done for _, done in calls)
    assert listing(directory) == ["tiny", "tiny/SHA256", "tiny/slim_net.ckpt"]
    record = (directory / "tiny" / "SHA256").read_text()
    checkpoint_sha = hashlib.sha256(Path(expected).read_bytes()).hexdigest()
    assert f"{checkpoint_sha}  slim_net.ckpt\n" in record
    assert f"# archive {url.rsplit('/', 1)[1]} sha256 {got.sha256} registry\n" in record
    with ckptkit.open_checkpoint(got) as reader:
        np.testing.assert_array_equal(reader.read("net/logits/biases"),
                                      TENSORS["net/logits/biases"])
    assert paths.resolve_pretrained("tiny", directory, registry).path == expected
    assert download.installed("tiny", directory, registry) == expected

    before = len(server.requests)
    again = download.get("tiny", directory, registry=registry)
    assert (again.path, again.downloaded, len(server.requests)) == (expected, False, before)


def test_a_v2_prefix_in_a_subfolder(tmp_path, hosted):
    archive = tar_gz([(f"tiny/{name}", data) for name, data in v2_files(tmp_path).items()])
    registry, directory, _ = hosted(archive, member="tiny/model.ckpt")
    got = download.get("tiny", directory, registry=registry)
    assert got.path == str(directory / "tiny" / "tiny" / "model.ckpt")
    assert paths.resolve(got.path).kind == "tf-v2"


def test_pretrained_name_as_a_path(tmp_path, hosted, monkeypatch):
    registry, directory, _ = hosted(slim_archive(tmp_path))
    monkeypatch.setenv(pretrained.REGISTRY_ENV, str(registry))
    monkeypatch.setenv(pretrained.DIR_ENV, str(directory))
    with pytest.raises(NotFound) as e:
        paths.resolve("pretrained:tiny")
    assert one_line(e).endswith("not downloaded yet (looked in "
                                f"{directory / 'tiny'}); run: ckptkit pretrained get tiny")
    with pytest.raises(NotFound, match=r"run: ckptkit pretrained get tiny --dir elsewhere$"):
        paths.resolve_pretrained("tiny", "elsewhere").path

    download.get("tiny")
    found = paths.resolve("pretrained:tiny")
    path = str(directory / "tiny" / "slim_net.ckpt")
    assert found == paths.Resolved("tf-v1", path, f"pretrained:tiny is {path}")
    with ckptkit.open_checkpoint("pretrained:tiny") as reader:
        assert reader.path == path and len(reader) == len(TENSORS)


# ---------------------------------------------------------------- interrupted and restarted

def test_an_interrupted_download_resumes_with_a_range_request(tmp_path, hosted, server):
    archive = slim_archive(tmp_path)
    registry, directory, url = hosted(archive, sha256=hashlib.sha256(archive).hexdigest())
    half = len(archive) // 2
    server.drop_after[url] = half
    with pytest.raises(CkptError) as e:
        download.get("tiny", directory, registry=registry)
    assert re.fullmatch(rf"download of tiny interrupted after {half} of {len(archive)} "
                        r"bytes \(.*\); run the same command again to resume it", one_line(e))
    part = directory / ".download" / (url.rsplit("/", 1)[1] + ".part")
    assert part.read_bytes() == archive[:half]

    calls = []
    got = download.get("tiny", directory, lambda *a: calls.append(a), registry=registry)
    assert server.ranges() == [f"bytes={half}-"]
    assert server.requests[-1][2:] == ('"v1"', 206)          # If-Range: the recorded ETag
    assert calls[0] == (len(archive), half)
    assert got.downloaded and listing(directory) == ["tiny", "tiny/SHA256",
                                                     "tiny/slim_net.ckpt"]


def test_a_server_that_ignores_range_restarts_cleanly(tmp_path, hosted, server):
    archive = slim_archive(tmp_path)
    registry, directory, url = hosted(archive, sha256=hashlib.sha256(archive).hexdigest())
    server.drop_after[url] = 100
    with pytest.raises(CkptError, match="interrupted after 100 of"):
        download.get("tiny", directory, registry=registry)
    server.ignore_range.add(url)
    got = download.get("tiny", directory, registry=registry)
    assert server.requests[-1][1] == "bytes=100-" and server.requests[-1][3] == 200
    assert got.sha256 == hashlib.sha256(archive).hexdigest()
    assert listing(directory) == ["tiny", "tiny/SHA256", "tiny/slim_net.ckpt"]


def test_a_part_without_its_record_is_not_trusted(tmp_path, hosted, server):
    archive = slim_archive(tmp_path)
    registry, directory, url = hosted(archive)
    part = directory / ".download" / (url.rsplit("/", 1)[1] + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes of some other download")
    got = download.get("tiny", directory, registry=registry)
    assert server.ranges() == [] and got.sha256 == hashlib.sha256(archive).hexdigest()


def test_a_complete_part_is_not_fetched_again(tmp_path, hosted, server):
    archive = slim_archive(tmp_path)
    registry, directory, url = hosted(archive)
    part = directory / ".download" / (url.rsplit("/", 1)[1] + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(archive)
    (part.parent / (part.name + ".json")).write_text(json.dumps({"url": server.url(url)}))
    got = download.get("tiny", directory, registry=registry)
    assert [r[1:] for r in server.requests] == [(f"bytes={len(archive)}-", None, 416)]
    assert got.sha256 == hashlib.sha256(archive).hexdigest()


# ---------------------------------------------------------------- checksums

@pytest.mark.parametrize("fields, message", [
    ({"sha256": "0" * 64}, (r"sha256 of downloaded tiny_2016_08_28.tar.gz is [0-9a-f]{64}, "
                            r"the registry says 0{64}; removed the download")),
    ({"size": 10}, (r"downloaded tiny_2016_08_28.tar.gz is \d+ bytes, the registry says 10; "
                    r"removed the download")),
])
def test_a_wrong_archive_is_rejected_and_nothing_is_left(tmp_path, hosted, fields, message):
    registry, directory, _ = hosted(slim_archive(tmp_path), **fields)
    with pytest.raises(Corrupt) as e:
        download.get("tiny", directory, registry=registry)
    assert re.fullmatch(message, one_line(e))
    assert listing(directory) == []


def test_trust_on_first_use_then_a_changed_file_is_caught(tmp_path, hosted, monkeypatch):
    archive = slim_archive(tmp_path)
    registry, directory, _ = hosted(archive)
    monkeypatch.setenv(pretrained.REGISTRY_ENV, str(registry))
    monkeypatch.setenv(pretrained.DIR_ENV, str(directory))
    got = download.get("tiny")
    digest = hashlib.sha256(archive).hexdigest()
    assert (got.trust, got.sha256) == ("first-use", digest)
    assert got.note.startswith("trust on first use:") and digest in got.note
    assert f"sha256 {digest} first-use" in (directory / "tiny" / "SHA256").read_text()

    flip(got.path, -100)
    changed = (rf"{re.escape(got.path)} has changed since it was downloaded \(sha256 "
               rf"[0-9a-f]{{64}}, recorded [0-9a-f]{{64}}\); delete "
               rf"{re.escape(str(directory / 'tiny'))} and run ckptkit pretrained get tiny")
    for call in (lambda: paths.resolve_pretrained("tiny").path, lambda: download.get("tiny"),
                 lambda: paths.resolve("pretrained:tiny")):
        with pytest.raises(Corrupt) as e:
            call()
        assert re.fullmatch(changed, one_line(e))
    assert paths.resolve_pretrained("tiny", verify=False).path == got.path

    fixed = download.get("tiny", force=True)
    assert fixed.downloaded and paths.resolve_pretrained("tiny").path == got.path


def test_a_registry_sha256_that_changed_later_is_caught(tmp_path, hosted):
    registry, directory, _ = hosted(slim_archive(tmp_path))
    download.get("tiny", directory, registry=registry)
    data = json.loads(registry.read_text())
    data["entries"][0]["sha256"] = "1" * 64
    registry.write_text(json.dumps(data))
    with pytest.raises(Corrupt, match=r"unpacked from an archive with sha256 [0-9a-f]{64}, "
                                      r"but the registry says 1{64}"):
        paths.resolve_pretrained("tiny", directory, registry).path


def test_a_checkpoint_failing_its_own_checks_is_not_installed(tmp_path, hosted):
    files = v2_files(tmp_path)
    data = bytearray(files["model.ckpt.data-00000-of-00001"])
    data[10] ^= 0xFF
    files["model.ckpt.data-00000-of-00001"] = bytes(data)
    registry, directory, _ = hosted(tar_gz(list(files.items())), member="model.ckpt")
    with pytest.raises(Corrupt, match="fails its own checks: .*removed the download") as e:
        download.get("tiny", directory, registry=registry)
    one_line(e)
    assert listing(directory) == []


def test_an_archive_without_the_member_names_what_it_holds(tmp_path, hosted):
    registry, directory, _ = hosted(tar_gz([("other.ckpt", v1_bytes(tmp_path))]))
    with pytest.raises(FormatError, match=r"has no checkpoint 'slim_net.ckpt'; it holds: "
                                          r"other.ckpt$"):
        download.get("tiny", directory, registry=registry)
    assert listing(directory) == []


# ---------------------------------------------------------------- hostile archives

def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def device(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize("member, message", [
    (("../escaped.ckpt", b"x"), r"member '../escaped.ckpt' leaves the archive"),
    (("sub/../../escaped.ckpt", b"x"), r"member 'sub/../../escaped.ckpt' leaves the archive"),
    (("/tmp/escaped.ckpt", b"x"), r"member '/tmp/escaped.ckpt' has an absolute path"),
    (link("slim_link", "../../escaped.ckpt"), r"links to '../../escaped.ckpt', outside"),
    (link("slim_link", "/etc/passwd"), r"links to '/etc/passwd', outside"),
    (link("slim_link", "../escaped.ckpt", tarfile.LNKTYPE),
     r"links to '../escaped.ckpt', outside"),
    (device("slim_dev"), r"member 'slim_dev' is a special file"),
    (("./SHA256", b"0" * 64 + b"  slim_net.ckpt\n"), r"member './SHA256' would overwrite"),
])
def test_unsafe_archives_are_refused_and_nothing_is_written(tmp_path, hosted, member,
                                                            message):
    archive = tar_gz([("slim_net.ckpt", v1_bytes(tmp_path)), member])
    registry, directory, _ = hosted(archive)
    before = listing(tmp_path)
    with pytest.raises(FormatError, match=message + ".*; refused") as e:
        download.get("tiny", directory, registry=registry)
    one_line(e)
    assert listing(directory) == []
    assert [p for p in listing(tmp_path) if p not in before and
            not p.startswith("pretrain")] == []
    assert not (tmp_path / "escaped.ckpt").exists()


def test_an_archive_bomb_is_refused_before_anything_is_unpacked(tmp_path, hosted):
    """200 MB of zeros in a ~200 KB archive: unpacking would take 1,000 times its size."""
    archive = tar_gz([("slim_net.ckpt", v1_bytes(tmp_path)), ("zeros.bin", bytes(200 << 20))])
    assert len(archive) < 400_000
    registry, directory, _ = hosted(archive)
    with pytest.raises(FormatError, match=r"would unpack to 2097\d+ bytes, more than 10 times "
                                          r"its own size \(\d+ bytes\).*; refused") as e:
        download.get("tiny", directory, registry=registry)
    one_line(e)
    assert listing(directory) == []


def test_links_that_copy_a_file_past_the_cap_are_refused(tmp_path, hosted):
    data = np.random.default_rng(0).bytes(100_000)        # does not compress
    archive = tar_gz([("slim_net.ckpt", v1_bytes(tmp_path)), ("big.bin", data)]
                     + [link(f"copy{i}", "big.bin", tarfile.LNKTYPE) for i in range(20)])
    registry, directory, _ = hosted(archive)
    with pytest.raises(FormatError, match=r"its links would unpack to more than 10 times"):
        download.get("tiny", directory, registry=registry)
    assert listing(directory) == []


def test_free_space_is_checked_before_unpacking(tmp_path, hosted, monkeypatch):
    registry, directory, _ = hosted(slim_archive(tmp_path))
    real = download.shutil.disk_usage
    monkeypatch.setattr(download.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=100))
    with pytest.raises(CkptError, match=r"tiny_2016_08_28\.tar\.gz unpacks to \d+ bytes and "
                                        r"\S+ has 100 free; free some space"):
        download.get("tiny", directory, registry=registry)
    # nothing unpacked; the archive stays, so freeing space and rerunning needs no download
    assert [p for p in listing(directory) if not p.startswith(".download")] == []


def test_two_gets_of_one_name_share_one_download(tmp_path, hosted, server):
    registry, directory, path = hosted(slim_archive(tmp_path))
    results, errors = [], []

    def get():
        try:
            results.append(download.get("tiny", directory, registry=registry))
        except Exception as e:          # reported below
            errors.append(e)

    threads = [threading.Thread(target=get) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(r.downloaded for r in results) == [False, True]
    assert len({r.path for r in results}) == 1
    assert [r for r in server.requests if r[0] == path and r[3] == 200] == \
        [r for r in server.requests if r[0] == path][:1]


def test_links_inside_the_archive_become_copies(tmp_path, hosted):
    checkpoint = v1_bytes(tmp_path)
    archive = tar_gz([("real/net.ckpt", checkpoint), link("slim_net.ckpt", "real/net.ckpt")])
    registry, directory, _ = hosted(archive)
    got = download.get("tiny", directory, registry=registry)
    assert not os.path.islink(got.path) and Path(got.path).read_bytes() == checkpoint


# ---------------------------------------------------------------- network and disk errors

def test_http_404_is_one_line(tmp_path, hosted, server):
    registry, directory, url = hosted(b"")
    del server.files[url]
    with pytest.raises(CkptError) as e:
        download.get("tiny", directory, registry=registry)
    assert one_line(e) == f"cannot download tiny: HTTP 404 Not Found from {server.url(url)}"


def test_a_server_that_is_down_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models/tiny.tar.gz"
    registry = write_registry(tmp_path / "registry.json", item("tiny", url))
    with pytest.raises(CkptError) as e:
        download.get("tiny", tmp_path / "pretrain", registry=registry)
    assert one_line(e) == f"cannot download tiny from {url}: connection refused"


def test_a_failed_first_get_leaves_no_folder_behind(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = write_registry(tmp_path / "registry.json",
                              item("tiny", f"http://127.0.0.1:{port}/tiny.tar.gz"))
    with pytest.raises(CkptError):
        download.get("tiny", tmp_path / "new" / "pretrain", registry=registry)
    assert not (tmp_path / "new").exists()


def test_a_silent_server_times_out(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/models/tiny.tar.gz"
        registry = write_registry(tmp_path / "registry.json", item("tiny", url))
        with pytest.raises(CkptError) as e:
            download.get("tiny", tmp_path / "pretrain", registry=registry, timeout=0.3)
    assert one_line(e) == f"cannot download tiny from {url}: timed out after 0.3 s"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line(tmp_path, hosted):
    registry, directory, url = hosted(slim_archive(tmp_path))
    part = directory / ".download" / (url.rsplit("/", 1)[1] + ".part")
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")           # every write: ENOSPC
    with pytest.raises(CkptError) as e:
        download.get("tiny", directory, registry=registry)
    assert one_line(e).startswith(f"disk full while writing {part}; free some space")


# ---------------------------------------------------------------- where files live

def test_the_download_folder_is_per_user_and_any_working_directory_finds_it(
        tmp_path, hosted, monkeypatch):
    """No --dir, no $CKPTKIT_PRETRAIN_DIR: $CKPTKIT_HOME/pretrained (else platformdirs' user
    data folder); `pretrained:NAME` resolves the same from anywhere; folders get the
    umask's permissions, not mkdtemp's 0700."""
    registry, _, _ = hosted(slim_archive(tmp_path))
    monkeypatch.setenv(pretrained.REGISTRY_ENV, str(registry))
    monkeypatch.setenv(pretrained.HOME_ENV, str(tmp_path / "home"))
    old = os.umask(0o022)
    try:
        got = download.get("tiny")
    finally:
        os.umask(old)
    folder = tmp_path / "home" / "pretrained" / "tiny"
    assert got.path == str(folder / "slim_net.ckpt")
    assert folder.stat().st_mode & 0o777 == 0o755
    for cwd in (tmp_path, tmp_path / "home", Path("/")):
        monkeypatch.chdir(cwd)
        assert paths.resolve("pretrained:tiny").path == got.path
    monkeypatch.delenv(pretrained.HOME_ENV)
    import platformdirs
    assert pretrained.directory_path() == os.path.join(
        platformdirs.user_data_dir("ckptkit", appauthor=False), "pretrained")


def test_get_dir_elsewhere_prints_a_command_that_works(tmp_path, hosted, monkeypatch,
                                                       ckptkit):
    registry, _, _ = hosted(slim_archive(tmp_path))
    monkeypatch.setenv(pretrained.REGISTRY_ENV, str(registry))
    monkeypatch.setenv(pretrained.HOME_ENV, str(tmp_path / "home"))
    code, out, _ = ckptkit("pretrained", "get", "tiny", "--dir", tmp_path / "elsewhere")
    path = tmp_path / "elsewhere" / "tiny" / "slim_net.ckpt"
    assert code == 0 and f"--checkpoint {path} " in out
    code, out, _ = ckptkit("pretrained", "get", "tiny")
    assert code == 0 and "--checkpoint pretrained:tiny " in out


# ---------------------------------------------------------------- get --from

def test_get_from_an_archive_already_here(tmp_path, hosted, server):
    archive = slim_archive(tmp_path)
    registry, directory, _ = hosted(archive, sha256=hashlib.sha256(archive).hexdigest())
    source = tmp_path / "downloads" / "tiny_2016_08_28.tar.gz"
    source.parent.mkdir()
    source.write_bytes(archive)
    got = download.get("tiny", directory, registry=registry, source=str(source))
    assert (got.downloaded, got.trust, server.requests) == (True, "registry", [])
    assert listing(directory) == ["tiny", "tiny/SHA256", "tiny/slim_net.ckpt"]
    assert f"from {source}\n" in (directory / "tiny" / "SHA256").read_text()
    assert paths.resolve_pretrained("tiny", directory, registry).path == got.path
    assert source.read_bytes() == archive                 # the user's file is left alone


@pytest.mark.parametrize("archive, message", [
    (b"not an archive", r"sha256 of \S+tiny\.tar\.gz is [0-9a-f]{64}, the registry says "
     r"[0-9a-f]{64} for tiny_2016_08_28\.tar\.gz$"),
    (None, r"member '\.\./escaped\.ckpt'.*; refused"),
])
def test_get_from_a_wrong_or_hostile_archive_installs_nothing(tmp_path, hosted, archive,
                                                             message):
    evil = tar_gz([("slim_net.ckpt", v1_bytes(tmp_path)), ("../escaped.ckpt", b"x")])
    good = slim_archive(tmp_path)
    pinned = {} if archive is None else {"sha256": hashlib.sha256(good).hexdigest()}
    registry, directory, _ = hosted(good, **pinned)
    source = tmp_path / "tiny.tar.gz"
    source.write_bytes(evil if archive is None else archive)
    before = source.read_bytes()
    with pytest.raises(CkptError, match=message) as e:
        download.get("tiny", directory, registry=registry, source=str(source))
    one_line(e)
    assert source.read_bytes() == before and not directory.exists()
    assert not (tmp_path / "escaped.ckpt").exists()


# ---------------------------------------------------------------- pretrained add

def _sha_tree(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind", ["prefix", "folder", "archive"])
def test_add_registers_a_checkpoint_you_already_have(tmp_path, monkeypatch, kind):
    src = tmp_path / "src"
    prefix = write_bundle(src / "run" / "model.ckpt", TENSORS).prefix
    archive = tmp_path / "mine.tar.gz"
    archive.write_bytes(tar_gz([(f"run/{p.name}", p.read_bytes())
                                for p in (src / "run").iterdir()]))
    path = {"prefix": prefix, "folder": src / "run", "archive": archive}[kind]
    before = _sha_tree(tmp_path)
    monkeypatch.setenv(pretrained.HOME_ENV, str(tmp_path / "home"))
    got = download.add("mine", path, "resnet_v1_50")
    assert _sha_tree(tmp_path) == {**before, **_sha_tree(tmp_path / "home")}   # input as is
    folder = tmp_path / "home" / "pretrained" / "mine"
    member = "run/model.ckpt" if kind == "archive" else "model.ckpt"
    assert (got.path, got.trust, got.net) == (str(folder / member), "added", "resnet_v1_50")
    record = (folder / "SHA256").read_text()
    assert f" added from {os.path.abspath(path)}\n" in record and record.count("  ") == 2
    monkeypatch.chdir(tmp_path / "src")
    with ckptkit.open_checkpoint("pretrained:mine") as reader:
        np.testing.assert_array_equal(reader.read("net/logits/biases"),
                                      TENSORS["net/logits/biases"])
    (item,) = [i for i in download.listing() if i["name"] == "mine"]
    assert (item["added"], item["path"]) == (os.path.abspath(path), got.path)
    again = download.get("mine")
    assert (again.path, again.downloaded) == (got.path, False)

    (folder / Path(member).parent / "model.ckpt.index").write_bytes(b"changed")
    with pytest.raises(Corrupt, match=r"has changed since it was downloaded"):
        paths.resolve("pretrained:mine")


def test_add_refuses_taken_names_bad_nets_and_hostile_archives(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.HOME_ENV, str(tmp_path / "home"))
    prefix = write_bundle(tmp_path / "src" / "model.ckpt", TENSORS).prefix
    with pytest.raises(CkptError, match=r"^'resnet_v1_50' is already a pretrained name; "):
        download.add("resnet_v1_50", prefix, "resnet_v1_50")
    with pytest.raises(CkptError, match=r"^unknown net 'resnet_v9'"):
        download.add("mine", prefix, "resnet_v9")
    with pytest.raises(CkptError, match=r"^name must be letters"):
        download.add("../up", prefix, "lenet")
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(tar_gz([("model.ckpt", v1_bytes(tmp_path)), ("../escaped", b"x")]))
    with pytest.raises(FormatError, match=r"'\.\./escaped'.*; refused"):
        download.add("mine", evil, "lenet")
    assert not (tmp_path / "home").exists() and not (tmp_path / "escaped").exists()
    download.add("mine", prefix, "lenet")
    with pytest.raises(CkptError, match=r"--force replaces an added one"):
        download.add("mine", prefix, "lenet")
    assert download.add("mine", prefix, "lenet", force=True).trust == "added"
    shutil.rmtree(tmp_path / "home" / "pretrained" / "mine")
    with pytest.raises(NotFound, match=r"was added from \S+model\.ckpt and is not in "):
        paths.resolve("pretrained:mine")


# ---------------------------------------------------------------- local entries

def test_a_local_entry_is_found_not_downloaded(tmp_path):
    local = {"name": "demo", "net": "lenet", "url": None, "local": "lenet_demo",
             "made_by": "python tools/make_demo_data.py pretrain", "sha256": None}
    registry = write_registry(tmp_path / "registry.json", local)
    directory = tmp_path / "pretrain"
    with pytest.raises(NotFound, match=r"demo is made locally and is not at .*lenet_demo; "
                                       r"make it with: python tools/make_demo_data.py"):
        download.get("demo", directory, registry=registry)
    prefix = write_bundle(directory / "lenet_demo" / "model.ckpt", TENSORS).prefix
    got = download.get("demo", directory, registry=registry)
    assert (got.path, got.downloaded, got.trust) == (str(prefix), False, "local")
    assert paths.resolve_pretrained("demo", directory, registry).path == str(prefix)

    local["sha256"] = hashlib.sha256(Path(f"{prefix}.index").read_bytes()).hexdigest()
    write_registry(registry, local)
    assert paths.resolve_pretrained("demo", directory, registry).path == str(prefix)
    local["sha256"] = "2" * 64
    write_registry(registry, local)
    with pytest.raises(Corrupt, match=r"model.ckpt.index is [0-9a-f]{64}, the registry says"):
        paths.resolve_pretrained("demo", directory, registry).path


def test_a_local_entry_is_also_found_beside_its_registry(tmp_path, monkeypatch):
    """The demo's checkpoint sits in the repository's pretrain/, beside the registry source
    the package links to: found whatever the working directory and download folder."""
    local = {"name": "demo", "net": "lenet", "url": None, "local": "lenet_demo"}
    (tmp_path / "repo").mkdir()
    registry = write_registry(tmp_path / "repo" / "registry.json", local)
    prefix = write_bundle(tmp_path / "repo" / "lenet_demo" / "model.ckpt", TENSORS).prefix
    link = tmp_path / "package" / "registry.json"
    link.parent.mkdir()
    link.symlink_to(registry)
    monkeypatch.setenv(pretrained.REGISTRY_ENV, str(link))
    monkeypatch.setenv(pretrained.HOME_ENV, str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "package")
    assert paths.resolve("pretrained:demo").path == str(prefix)


def test_a_pretrained_path_loads_no_numpy_tf_or_train(tmp_path, hosted):
    """`ckptkit inspect pretrained:NAME` stays as lean as any inspect (test_layers.py)."""
    import subprocess
    import sys

    registry, directory, _ = hosted(slim_archive(tmp_path))
    download.get("tiny", directory, registry=registry)
    probe = ("import sys, ckptkit.paths as p; print(p.resolve('pretrained:tiny').kind); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('numpy', 'tensorflow', 'tf_slim') or m.startswith('ckptkit.train')))")
    env = {**os.environ, pretrained.REGISTRY_ENV: str(registry),
           pretrained.DIR_ENV: str(directory)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out == "tf-v1\n[]\n"
