"""`ckptkit surgery` and `ckptkit convert`: output, exact error lines, exit codes."""
import json
import os

import numpy as np
import pytest

import ckptkit as ckptkit_module
from helpers.bundle_writer import write_bundle

TENSORS = {
    "net/Logits/biases": np.arange(11, dtype=np.float32),
    "net/Logits/biases/Adam": np.zeros(11, np.float32),
    "net/conv/weights": np.ones((2, 2), np.float32),
    "global_step": np.array(4, np.int64),
}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    write_bundle(str(tmp_path / "in" / "m.ckpt-4"), TENSORS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


DRY = """\
  net/Logits/biases -> model/Logits/biases  [11] float32 -> [10] float16  (renamed, slice 1:, cast float16)
  net/conv/weights -> model/conv/weights  [2,2] float32 -> [2,2] float16  (renamed, cast float16)
- global_step  [] int64  (--strip-optimizer (step))
- net/Logits/biases/Adam  [11] float32  (--strip-optimizer (optimizer slot))
dry run: would write out/m.ckpt-4 (tf-v2): 2 tensors (2 transformed), 2 dropped, 28 B
"""


@pytest.mark.parametrize("args,code,out,err", [
    (["surgery", "in", "-o", "out/", "--strip-optimizer", "--rename", "net=model",
      "--slice-classes", "1:", "--cast", "float16", "--dry-run"], 0, DRY, ""),
    (["surgery", "in", "-o", "out/", "--strip-optimizer"], 0,
     "wrote out/m.ckpt-4 (tf-v2): 2 tensors (0 transformed), 2 dropped, 60 B; 2 copied as "
     "stored bytes, 0 decoded\n", ""),
    (["surgery", "in", "-o", "x", "--rename", "nett=a"], 2, "",
     "ckptkit: error: rename 'nett=a' matches no tensor; closest: net\n"),
    (["surgery", "in", "-o", "x", "--rename", "re:^net/.*=same"], 2, "",
     "ckptkit: error: renames map both 'net/Logits/biases' and 'net/Logits/biases/Adam' to "
     "'same'\n"),
    (["surgery", "in", "-o", "x", "--cast", "global_step=bfloat16"], 2, "",
     "ckptkit: error: --cast 'global_step=bfloat16': 'global_step' is int64, not a floating "
     "tensor (only floating tensors can be cast)\n"),
    (["surgery", "in", "-o", "x", "--cast", "int8"], 2, "",
     "ckptkit: error: --cast 'int8': cast to one of float16, bfloat16, float32\n"),
    (["surgery", "in", "-o", "in/m.ckpt-4"], 2, "",
     "ckptkit: error: in/m.ckpt-4 is the input checkpoint; a V2 prefix's files cannot be "
     "replaced all at once. Write to a new prefix, or to its directory (a new prefix there, "
     "then its `checkpoint` state file switches to it)\n"),
    (["surgery", "in", "-o", "x.npz", "--shards", "2"], 2, "",
     "ckptkit: error: --shards applies to V2 checkpoints only, not npz (x.npz)\n"),
    (["surgery", "nothere", "-o", "x"], 2, "", "ckptkit: error: no checkpoint at nothere\n"),
    (["convert", "in", "m.safetensors"], 0,
     "wrote m.safetensors (safetensors): 4 tensors (0 transformed), 0 dropped, 112 B; 0 copied "
     "as stored bytes, 4 decoded\n", ""),
])
def test_table(ckptkit, folder, args, code, out, err):
    assert ckptkit(*args) == (code, out, err)
    if code:
        assert sorted(os.listdir(folder)) == ["in"]   # nothing written, no temp files


def test_surgery_output_restores_values(ckptkit, folder):
    code, _, _ = ckptkit("surgery", "in", "-o", "out/", "--strip-optimizer", "--rename",
                         "net=model", "--slice-classes", "model/Logits=1:", "--shards", "2")
    assert code == 0
    with ckptkit_open("out") as r:
        assert len(r.data_paths) == 2
        np.testing.assert_array_equal(r.read("model/Logits/biases"), np.arange(1, 11))


def test_json_and_convert_round_trip(ckptkit, folder):
    code, out, _ = ckptkit("surgery", "in", "-o", "x.npz", "--drop", "Logits", "--json")
    assert code == 0
    table = json.loads(out)
    assert [t["name"] for t in table["tensors"]] == ["global_step", "net/conv/weights"]
    assert {d["name"]: d["reason"] for d in table["dropped"]} == {
        "net/Logits/biases": "--drop Logits", "net/Logits/biases/Adam": "--drop Logits"}
    assert ckptkit("convert", "x.npz", "back/")[0] == 0
    assert ckptkit("diff", "x.npz", "back")[1] == "2 equal, 0 changed, 0 only in A, 0 only in B\n"


def test_merge_needs_prefer(ckptkit, folder):
    np.savez("other.npz", global_step=np.array(9, np.int64))
    assert ckptkit("surgery", "in", "-o", "o.npz", "--merge", "other.npz") == (
        2, "", "ckptkit: error: --merge: 1 names are in both checkpoints (global_step); rename "
               "one side or pass --prefer input|other\n")
    assert ckptkit("surgery", "in", "-o", "o.npz", "--merge", "other.npz", "--prefer",
                   "other")[0] == 0
    with ckptkit_open("o.npz") as r:
        assert r.read("global_step") == 9


def ckptkit_open(path):
    """The library's open_checkpoint (the `ckptkit` fixture shadows the module in tests)."""
    return ckptkit_module.open_checkpoint(path)
