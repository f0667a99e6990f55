"""Path resolution: every way a user names a checkpoint, without TF.

Bundles come from the pure writer in bundle_writer (TF reads them too: test_formats_tf_v2) and
the V1 file is bytes TF 2.21 wrote (tf_factories.GOLDEN_V1); sharded V1 saves are V1 files
from the pure writer named as TF's sharded Saver names them (TF writes them in
test_formats_tf_v1).
"""
import os
import re
from pathlib import Path

import numpy as np
import pytest

import ckptkit
from ckptkit.paths import Resolved, resolve
from helpers.bundle_writer import write_bundle, write_v1
from helpers.tf_factories import GOLDEN_VALUES, assert_same_value, write_golden


def bundle(prefix, step=0):
    """A one-shard V2 bundle at `prefix` holding `step`, so tests can tell bundles apart."""
    return write_bundle(str(prefix), {"step": np.int64(step),
                                      "w": np.arange(3, dtype="f4")}).prefix


def state(directory, path, *others):
    """A `checkpoint` state file as tf.train.Saver writes it."""
    lines = [f'model_checkpoint_path: "{path}"'] + \
        [f'all_model_checkpoint_paths: "{p}"' for p in (*others, path)]
    (Path(directory) / "checkpoint").write_text("\n".join(lines) + "\n")


def opened(path):
    """(resolved path, note, step value) of what open_checkpoint makes of `path`."""
    with ckptkit.open_checkpoint(path) as reader:
        return reader.path, reader.note, int(reader.read("step"))


@pytest.fixture
def run(tmp_path):
    """A train dir with model.ckpt-9 (newer on disk) and model.ckpt-10 (larger step)."""
    bundle(tmp_path / "model.ckpt-10", 10)
    bundle(tmp_path / "model.ckpt-9", 9)
    later = os.path.getmtime(tmp_path / "model.ckpt-10.index") + 100
    os.utime(tmp_path / "model.ckpt-9.index", (later, later))
    return tmp_path


@pytest.mark.parametrize("member", ["", ".index", ".data-00000-of-00001", ".meta"])
def test_prefix_and_its_files_resolve_to_the_prefix(run, member):
    prefix = str(run / "model.ckpt-10")
    (run / "model.ckpt-10.meta").write_bytes(b"")
    assert resolve(prefix + member).kind == "tf-v2"
    assert opened(prefix + member) == (prefix, "", 10)


def test_pathlib_paths_work(run):
    assert opened(run / "model.ckpt-10") == (str(run / "model.ckpt-10"), "", 10)


def test_directory_uses_its_state_file_first(run):
    state(run, "model.ckpt-9")
    assert opened(run) == (str(run / "model.ckpt-9"), "", 9)
    state(run, str(run / "model.ckpt-9"))   # an absolute path that is here
    assert opened(run) == (str(run / "model.ckpt-9"), "", 9)


@pytest.mark.parametrize("foreign", [
    "/home/someone/runs/flowers/model.ckpt-9",
    pytest.param("C:\\\\Users\\\\someone\\\\runs\\\\model.ckpt-9", id="windows"),
    "../elsewhere/model.ckpt-9"])
def test_state_path_from_another_machine_falls_back_to_the_same_basename(run, foreign):
    state(run, foreign)   # (written as text proto: backslashes doubled)
    path, note, step = opened(run)
    assert (path, step) == (str(run / "model.ckpt-9"), 9)
    shown = foreign.replace("\\\\", "\\")
    assert note == f"the checkpoint state names {shown!r}; using {path} in this directory"


@pytest.mark.parametrize("named, where", [("sub/model.ckpt-3", "sub/model.ckpt-3"),
                                          ("./model.ckpt-9", "model.ckpt-9")])
def test_relative_state_path_that_exists_is_used_without_a_note(run, named, where):
    bundle(run / "sub" / "model.ckpt-3", 3)
    state(run, named)
    path, note, _ = opened(run)
    assert os.path.normpath(path) == str(run / where)
    assert note == ""


def test_state_naming_a_missing_checkpoint_falls_back_to_the_newest(run):
    state(run, "model.ckpt-11", "model.ckpt-9", "model.ckpt-10")
    path, note, step = opened(run)
    assert (path, step) == (str(run / "model.ckpt-10"), 10)
    assert note == ("the checkpoint state names 'model.ckpt-11', which is not here; "
                    f"using the newest, {path}")


def test_without_state_the_largest_step_wins_not_the_newest_file(run):
    assert opened(run) == (str(run / "model.ckpt-10"), "", 10)


def test_unparsable_state_file_is_ignored(run):
    (run / "checkpoint").write_text("this is not a CheckpointState\n")
    assert opened(run)[0] == str(run / "model.ckpt-10")


def test_glob_characters_in_the_directory_name(tmp_path):
    d = tmp_path / "run[1]*?"
    bundle(d / "model.ckpt-3", 3)
    assert opened(d) == (str(d / "model.ckpt-3"), "", 3)


def test_empty_prefix_checkpoint(tmp_path):
    """Files literally `.index` and `.data-00000-of-00001`: the prefix is the directory + "/"."""
    d = tmp_path / "rl"
    bundle(str(d) + "/", 5)
    assert sorted(os.listdir(d)) == [".data-00000-of-00001", ".index"]
    for path in (d, str(d) + "/", d / ".index", d / ".data-00000-of-00001"):
        assert opened(path) == (str(d) + "/", "", 5), path


def test_saved_model_directory_reads_its_variables(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"")
    bundle(tmp_path / "variables" / "variables", 1)
    assert opened(tmp_path) == (str(tmp_path / "variables" / "variables"), "", 1)


@pytest.mark.parametrize("graph", ["saved_model.pb", "saved_model.pbtxt"])
def test_saved_model_graph_file_reads_its_variables(tmp_path, graph):
    (tmp_path / graph).write_bytes(b"\x08\x01")
    bundle(tmp_path / "variables" / "variables", 1)
    assert opened(tmp_path / graph) == (str(tmp_path / "variables" / "variables"), "", 1)


def test_saved_model_without_variables_says_so(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(ckptkit.NotFound, match=r"saved_model\.pb: its SavedModel holds no "
                       r"variables \(no .*variables/variables\.index\)"):
        resolve(tmp_path / "saved_model.pb")


@pytest.fixture
def v1_dir(tmp_path):
    return write_golden(tmp_path / "v1", version="V1")


def test_v1_file_directly_and_by_directory(v1_dir):
    for path in (v1_dir, os.path.dirname(v1_dir)):
        resolved = resolve(path)
        assert (resolved.kind, resolved.path) == ("tf-v1", v1_dir)
    with ckptkit.open_checkpoint(os.path.dirname(v1_dir)) as reader:
        assert reader.format == "tf-v1"
        for name, value in GOLDEN_VALUES.items():
            assert_same_value(reader.read(name), value, name)


def test_v1_file_named_by_a_foreign_state(v1_dir):
    state(os.path.dirname(v1_dir), "/tmp/export/golden.ckpt")
    resolved = resolve(os.path.dirname(v1_dir))
    assert (resolved.kind, resolved.path) == ("tf-v1", v1_dir)
    assert "'/tmp/export/golden.ckpt'" in resolved.note


def test_missing_path_is_not_found_with_nearby_files(run):
    with pytest.raises(ckptkit.NotFound, match=r"no checkpoint at .*model\.ckpt-100 \(files "
                       r"nearby: model\.ckpt-10\.data-00000-of-00001, model\.ckpt-10\.index"):
        resolve(run / "model.ckpt-100")


def test_missing_directory_contents_is_not_found(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ckptkit.NotFound, match="no checkpoint in directory"):
        ckptkit.open_checkpoint(tmp_path)


def test_text_file_named_like_a_checkpoint_is_a_format_error(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_text("model_checkpoint_path: 'model.ckpt-1'\n" * 4)
    with pytest.raises(ckptkit.FormatError, match=r"x\.ckpt is not a checkpoint ckptkit knows"):
        ckptkit.open_checkpoint(path)


def test_data_file_without_its_index_is_an_error_naming_it(tmp_path):
    prefix = bundle(tmp_path / "m", 1)
    os.remove(prefix + ".index")
    with pytest.raises(ckptkit.CkptError, match=r"m\.data-00000-of-00001"):
        ckptkit.open_checkpoint(prefix + ".data-00000-of-00001")


# --- sharded V1 saves: NAME-00000-of-00002, NAME-00001-of-00002, named NAME-?????-of-00002

def v1_sharded(prefix, *shards):
    """The files of a sharded V1 save, one per dict of tensors; returns its pattern."""
    for k, tensors in enumerate(shards):
        write_v1(f"{prefix}-{k:05d}-of-{len(shards):05d}", tensors)
    return f"{prefix}-?????-of-{len(shards):05d}"


def save_v1_sharded(prefix, step):
    """A two-file save: `step` in one file, `w` in the other."""
    return v1_sharded(prefix, {"step": np.int64(step)}, {"w": np.arange(3, dtype="f4")})


def test_sharded_v1_by_its_pattern_or_any_of_its_files(tmp_path):
    pattern = save_v1_sharded(tmp_path / "model.ckpt-7", 7)
    files = [str(tmp_path / f"model.ckpt-7-0000{k}-of-00002") for k in range(2)]
    for path in (pattern, *files):
        assert resolve(path) == Resolved("tf-v1", pattern), path
        assert opened(path) == (pattern, "", 7)
        with ckptkit.open_checkpoint(path) as reader:
            assert reader.files == files
            assert_same_value(reader.read("w"), np.arange(3, dtype="f4"))


def test_the_file_of_a_one_shard_save_is_the_whole_checkpoint(tmp_path):
    pattern = v1_sharded(tmp_path / "export", {"step": np.int64(4)})
    file = str(tmp_path / "export-00000-of-00001")
    assert resolve(pattern) == Resolved("tf-v1", pattern)
    assert resolve(file) == resolve(tmp_path) == Resolved("tf-v1", file)
    assert opened(pattern)[2] == opened(file)[2] == 4


def test_directory_state_naming_a_sharded_v1_pattern(tmp_path):
    bundle(tmp_path / "model.ckpt-9", 9)   # an older checkpoint of another format
    pattern = save_v1_sharded(tmp_path / "model.ckpt-8", 8)
    state(tmp_path, "model.ckpt-8-?????-of-00002", "model.ckpt-9")
    assert opened(tmp_path) == (pattern, "", 8)
    state(tmp_path, "/elsewhere/model.ckpt-8-?????-of-00002")
    assert opened(tmp_path) == (pattern, "the checkpoint state names "
                                "'/elsewhere/model.ckpt-8-?????-of-00002'; using "
                                f"{pattern} in this directory", 8)


def test_newest_sharded_v1_by_step_without_state(tmp_path):
    newer = save_v1_sharded(tmp_path / "model.ckpt-10", 10)
    save_v1_sharded(tmp_path / "model.ckpt-9", 9)
    assert opened(tmp_path) == (newer, "", 10)


def test_sharded_v1_with_a_missing_file_is_not_read(tmp_path):
    pattern = v1_sharded(tmp_path / "m", {"a": np.int64(1)}, {"b": np.int64(2)},
                         {"c": np.int64(3)})
    os.remove(tmp_path / "m-00001-of-00003")
    for path in (pattern, tmp_path / "m-00002-of-00003", tmp_path):
        with pytest.raises(ckptkit.NotFound, match=re.escape(
                f"{pattern}: missing 1 of its 3 shard files ({tmp_path}/m-00001-of-00003); "
                "a tensor may be stored in any shard, so none is read")):
            ckptkit.open_checkpoint(path)


def test_sharded_v1_pattern_without_files_is_not_found(tmp_path):
    with pytest.raises(ckptkit.NotFound, match=r"no checkpoint at .*m-\?{5}-of-00002"):
        resolve(tmp_path / "m-?????-of-00002")
