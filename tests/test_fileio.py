"""fileio: files ckptkit opens are regular files, temp files name their writer so the dead
ones can be cleaned, and one writer holds an output at a time."""
import os
import subprocess
import sys

import pytest

from ckptkit import fileio
from ckptkit.errors import CkptError, FormatError


@pytest.fixture
def dead_pid():
    """The pid of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FormatError, match=r"pipe is not a regular file \(a FIFO"):
        fileio.map_file(tmp_path / "pipe")
    (tmp_path / "empty").write_bytes(b"")
    assert fileio.map_file(tmp_path / "empty") == b""
    (tmp_path / "data").write_bytes(b"abc")
    assert fileio.map_file(tmp_path / "data")[:] == b"abc"


def test_temp_names_carry_their_writer_and_only_dead_ones_are_stale(tmp_path, dead_pid):
    with fileio.AtomicFiles() as files:
        files.temp(tmp_path / "out.npz").write(b"x")
        (mine,) = [n for n in os.listdir(tmp_path) if fileio.TEMP_MARK in n]
        assert mine.startswith(".out.npz" + fileio.TEMP_MARK)
        assert f"-{os.getpid()}-" in mine
        assert fileio.stale_temps(tmp_path) == []        # its writer is alive
    host = mine.split(fileio.TEMP_MARK)[1].split("-")[0]
    names = {f".a{fileio.TEMP_MARK}{host}-{dead_pid}-0123abcd": True,     # dead, this host
             f".b{fileio.TEMP_MARK}0000beef-{dead_pid}-0123abcd": False,  # another machine
             f".c{fileio.TEMP_MARK}0123abcd": False,                     # an older ckptkit
             f".d{fileio.TEMP_MARK}{host}-1-0123abcd": False}             # init: alive
    for name in names:
        (tmp_path / name).write_bytes(b"")
    stale = [str(tmp_path / n) for n, is_stale in names.items() if is_stale]
    assert fileio.stale_temps(tmp_path) == stale
    fileio.write_atomic(tmp_path / "run.json", "{}")     # a write into the folder cleans up
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["run.json"] + [n for n, is_stale in names.items() if not is_stale])


def test_one_writer_per_output(tmp_path):
    out = tmp_path / "m.ckpt"
    with fileio.output_lock(out):
        lock = tmp_path / f".m.ckpt{fileio.LOCK_MARK}"
        assert lock.read_text() == f"{os.getpid()}\n"
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from ckptkit import fileio\n"
             "with fileio.output_lock(sys.argv[1]): pass", str(out)],
            capture_output=True, text=True)
        assert other.returncode == 1
        assert f"{out} is being written by another ckptkit process (pid {os.getpid()})" \
            in other.stderr
        with pytest.raises(CkptError, match="being written by another ckptkit process"):
            with fileio.output_lock(out):
                pass
    assert os.listdir(tmp_path) == []                    # the lock file goes with the lock
    with fileio.output_lock(out):                        # and can be taken again
        pass


def test_a_lock_file_left_by_a_killed_writer_does_not_block(tmp_path, dead_pid):
    out = tmp_path / "x.npz"
    (tmp_path / f".x.npz{fileio.LOCK_MARK}").write_text(f"{dead_pid}\n")
    with fileio.output_lock(out):
        pass
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_temp_folders_get_mkdirs_permissions_not_mkdtemps(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        with fileio.temp_folder(str(tmp_path), ".out.tmp-") as folder:
            assert os.path.dirname(folder) == str(tmp_path)
            assert os.path.basename(folder).startswith(".out.tmp-")
            assert os.listdir(folder) == []
            assert os.stat(folder).st_mode & 0o777 == mode
    finally:
        os.umask(old)


@pytest.mark.parametrize("renamed", [True, False])
def test_a_temp_folder_is_gone_unless_renamed_into_place(tmp_path, renamed):
    with pytest.raises(KeyboardInterrupt):
        with fileio.temp_folder(str(tmp_path), ".out.tmp-") as folder:
            open(os.path.join(folder, "part"), "w").close()
            if renamed:
                os.rename(folder, tmp_path / "out")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == (["out"] if renamed else [])
    if renamed:
        assert os.listdir(tmp_path / "out") == ["part"]
