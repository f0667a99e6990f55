"""Normal use of `ckptkit inspect`, `verify` and `diff` on small bundles written by the test
encoder (tests/helpers/bundle_writer.py): exact output, exact exit codes, the JSON contracts of
DESIGN.md."""
import json
import math
import os
import re
import shlex
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from ckptkit import __version__
from ckptkit.cli import COMMANDS
from helpers.bundle_writer import string_tensor_bytes, write_bundle, write_v1
from helpers.commands import parse_command
from helpers.hostile import flip

MODEL = {
    "beta1_power": np.array(0.9, np.float32),
    "global_step": np.array(7, np.int64),
    "half": np.array([1.5, -2], ml_dtypes.bfloat16),
    "ids": np.array([3, 1, 2], np.int32),
    "net/conv1/biases": np.array([0.5, -0.5], np.float32),
    "net/conv1/weights": (np.arange(18, dtype=np.float32) / 10).reshape(3, 3, 1, 2),
    "net/conv1/weights/Adam": np.zeros((3, 3, 1, 2), np.float32),
    "net/conv1/weights/Adam_1": np.ones((3, 3, 1, 2), np.float32),
    "net/logits/biases": np.zeros(5, np.float32),
    "net/logits/biases/ExponentialMovingAverage": np.zeros(5, np.float32),
    "net/logits/weights": np.arange(10, dtype=np.float32).reshape(2, 5),
    "odd": np.array([1, np.nan, np.inf, -np.inf, 3, -2], np.float32),
    "vocab": np.array([b"a", b"bc"], dtype=object),
}
NOT_MODEL = {"beta1_power", "global_step", "net/conv1/weights/Adam",
             "net/conv1/weights/Adam_1", "net/logits/biases/ExponentialMovingAverage"}


def _changed(changes):
    """MODEL with some tensors replaced or added (an array), or removed (None)."""
    return {k: v for k, v in {**MODEL, **changes}.items() if v is not None}


VARIANTS = {   # name -> tensors; each is written as <tmp>/<name>/model.ckpt
    "model": MODEL,
    "same": dict(MODEL),
    "edited": _changed({"net/conv1/biases": None, "net/extra": np.zeros(3, np.float32),
                        "net/logits/biases": np.array([0, 0, 0.5, 0, 0], np.float32),
                        "net/logits/weights": MODEL["net/logits/weights"].reshape(5, 2),
                        "ids": MODEL["ids"].astype(np.int64)}),
    "nudged": _changed({"net/logits/weights": MODEL["net/logits/weights"]
                        + np.float32(1e-6) * (np.arange(10) == 0).reshape(2, 5)}),
    "scoped": {"model/" + k: v for k, v in MODEL.items()},
    "model-only": {k: v for k, v in MODEL.items() if k not in NOT_MODEL},
    "v1-subset": {k: v for k, v in MODEL.items() if v.dtype.kind in "fO" and k != "half"},
}


def _nbytes(value):
    return len(string_tensor_bytes(value.reshape(-1).tolist())[0]) if value.dtype.kind == "O" \
        else value.nbytes


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """name -> prefix of each variant (the V1 one also as a V1 file `<dir>/model.v1`)."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name, tensors in VARIANTS.items():
        (root / name).mkdir()
        out[name] = write_bundle(root / name / "model.ckpt", tensors).prefix
    write_v1(root / "v1-subset" / "model.v1", VARIANTS["v1-subset"])
    return out




# ---------------------------------------------------------------- version and help

def test_version(ckptkit):
    assert ckptkit("--version") == (0, f"ckptkit, version {__version__}\n", "")


@pytest.mark.parametrize("command", [None, *sorted(COMMANDS)])
def test_help_has_an_example(ckptkit, command):
    code, out, err = ckptkit(*filter(None, [command, "--help"]))
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: ckptkit {command or ''}".rstrip())
    assert re.search(r"^  Examples?:\n    ckptkit ", out, re.M)


def test_bare_ckptkit_prints_the_help(ckptkit):
    code, out, err = ckptkit()
    assert (code, err) == (0, "")
    assert out == ckptkit("--help")[1] and out.startswith("Usage: ckptkit [OPTIONS] COMMAND")


def _examples(help_text):
    """The example commands of a --help, continuation lines joined, shell redirections cut."""
    examples, lines = [], iter(help_text.splitlines())
    for line in lines:
        if line.startswith("    ckptkit "):
            command = line.strip()
            while command.endswith("\\"):
                command = command[:-1] + next(lines).strip()
            examples.append(command.split(" > ")[0])
    return examples


@pytest.mark.parametrize("command", [None, *sorted(COMMANDS), "pretrained get",
                                     "pretrained list"])
def test_help_examples_parse_and_name_real_paths(ckptkit, command, tmp_path, monkeypatch):
    """Every example a --help shows is a command click accepts, and the main help's
    checkpoint is one a command makes (`pretrained get` puts it where pretrained:NAME finds
    it)."""
    examples = _examples(ckptkit(*(command or "").split(), "--help")[1])
    assert examples
    monkeypatch.chdir(tmp_path)
    for example in examples:
        words = shlex.split(example)[1:]
        for word in words:             # scripts an example runs must exist to be parsed
            if word.endswith(".py"):
                (tmp_path / word).write_text("")
        parse_command(words)
    if command is None:
        assert examples[:2] == ["ckptkit pretrained get resnet_v1_50",
                                "ckptkit inspect pretrained:resnet_v1_50"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_readme_section(command):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"\n### {command}\n" in readme


# ---------------------------------------------------------------- inspect: text

TREE = """\
beta1_power  []         float32    1  optimizer
global_step  []         int64      1  step
half         [2]        bfloat16   2
ids          [3]        int32      3
net/         7 tensors            76
  conv1/     4 tensors            56
    biases   [2]        float32    2
    weights  [3,3,1,2]  float32   18  + Adam, Adam_1
  logits/    3 tensors            20
    biases   [5]        float32    5  + ExponentialMovingAverage
    weights  [2,5]      float32   10
odd          [6]        float32    6
vocab        [2]        string     2
13 tensors, 48 parameters, 365 B (3 optimizer, 1 ema, 1 step)
"""
FLAT = """\
beta1_power                                 []         float32    1  optimizer
global_step                                 []         int64      1  step
half                                        [2]        bfloat16   2
ids                                         [3]        int32      3
net/conv1/biases                            [2]        float32    2
net/conv1/weights                           [3,3,1,2]  float32   18
net/conv1/weights/Adam                      [3,3,1,2]  float32   18  optimizer
net/conv1/weights/Adam_1                    [3,3,1,2]  float32   18  optimizer
net/logits/biases                           [5]        float32    5
net/logits/biases/ExponentialMovingAverage  [5]        float32    5  ema
net/logits/weights                          [2,5]      float32   10
odd                                         [6]        float32    6
vocab                                       [2]        string     2
13 tensors, 48 parameters, 365 B (3 optimizer, 1 ema, 1 step)
"""
DEPTH_1 = """\
beta1_power  []         float32    1  optimizer
global_step  []         int64      1  step
half         [2]        bfloat16   2
ids          [3]        int32      3
net/         7 tensors            76
odd          [6]        float32    6
vocab        [2]        string     2
13 tensors, 48 parameters, 365 B (3 optimizer, 1 ema, 1 step)
"""
NO_OPTIMIZER = """\
half         [2]        bfloat16   2
ids          [3]        int32      3
net/         4 tensors            35
  conv1/     2 tensors            20
    biases   [2]        float32    2
    weights  [3,3,1,2]  float32   18
  logits/    2 tensors            15
    biases   [5]        float32    5
    weights  [2,5]      float32   10
odd          [6]        float32    6
vocab        [2]        string     2
8 tensors, 48 parameters, 189 B
5 optimizer/EMA/step tensors hidden
"""
FILTER_FLAT = """\
net/logits/biases                           [5]    float32   5
net/logits/biases/ExponentialMovingAverage  [5]    float32   5  ema
net/logits/weights                          [2,5]  float32  10
3 tensors, 15 parameters, 80 B (1 ema)
"""


@pytest.mark.parametrize("options, expected", [
    ((), TREE),
    (("--flat",), FLAT),
    (("--depth", "1"), DEPTH_1),
    (("--depth", "3"), TREE),
    (("--no-optimizer",), NO_OPTIMIZER),
    (("--filter", "logits", "--flat"), FILTER_FLAT),
], ids=["tree", "flat", "depth-1", "depth-3", "no-optimizer", "filter"])
def test_inspect_listing(ckptkit, ckpts, options, expected):
    prefix = ckpts["model"]
    assert ckptkit("inspect", prefix, *options) == (0, f"{prefix}  (tf-v2)\n{expected}", "")


def test_inspect_filter_and_no_optimizer(ckptkit, ckpts):
    prefix = ckpts["model"]
    code, out, err = ckptkit("inspect", prefix, "--filter", "^net/logits", "--flat",
                             "--no-optimizer")
    assert (code, err) == (0, "")
    assert re.fullmatch(rf"{re.escape(str(prefix))}  \(tf-v2\)\n"
                        r"net/logits/biases   \[5\]    float32   5\n"
                        r"net/logits/weights  \[2,5\]  float32  10\n"
                        r"2 tensors, 15 parameters, 60 B\n"
                        r"1 optimizer/EMA/step tensors? hidden\n", out), out


def test_inspect_verbose_names_the_files(ckptkit, ckpts):
    prefix = ckpts["model"]
    code, out, err = ckptkit("inspect", prefix, "-v", "--filter", "^ids$")
    assert (code, out) == (0, f"{prefix}  (tf-v2)\nids  [3]  int32  3\n"
                              "1 tensor, 3 parameters, 12 B\n")
    assert err == f"resolved tf-v2: {prefix}.index, {prefix}.data-00000-of-00001\n"


def test_inspect_counts_only_model_variables_as_parameters(ckptkit, tmp_path):
    """Slots, step counters and the TF2 object graph are counted on their own, not as
    parameters (TREE: Adam slots, an EMA shadow, global_step); one parameter is singular."""
    prefix = write_bundle(tmp_path / "ckpt-1", {
        "_CHECKPOINTABLE_OBJECT_GRAPH": np.array(b"", dtype=object),
        "scale/.ATTRIBUTES/VARIABLE_VALUE": np.float32(2),
        "scale/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE": np.float32(0),
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE": np.int64(1)}).prefix
    lines = {}
    for pattern in ("", "^scale/.A", "^save_counter", "GRAPH"):
        code, out, err = ckptkit("inspect", prefix, "--flat", "--filter", pattern)
        assert (code, err) == (0, "")
        lines[pattern] = out.splitlines()[-1]
    assert lines == {"": "4 tensors, 1 parameter, 21 B (1 optimizer, 1 step, 1 meta)",
                     "^scale/.A": "1 tensor, 1 parameter, 4 B",
                     "^save_counter": "1 tensor, 0 parameters, 8 B (1 step)",
                     "GRAPH": "1 tensor, 0 parameters, 5 B (1 meta)"}
    code, out, _ = ckptkit("inspect", prefix, "--json")
    assert (code, _one_json_line(out)["total_params"]) == (0, 1)


# ---------------------------------------------------------------- inspect: JSON

def expected_listing(prefix, tensors, fmt="tf-v2"):
    """The DESIGN.md contract, computed from the tensors that were written: total_params
    counts model variables only (not NOT_MODEL's slots, EMA shadow and counters)."""
    variables = [{"name": name, "shape": list(np.shape(v)),
                  "dtype": "string" if v.dtype.kind == "O" else v.dtype.name,
                  "nbytes": _nbytes(v)} for name, v in sorted(tensors.items())]
    return {"path": str(prefix), "format": fmt, "variables": variables,
            "total_params": sum(int(np.size(v)) for name, v in tensors.items()
                                if name not in NOT_MODEL),
            "total_bytes": sum(v["nbytes"] for v in variables)}


def _one_json_line(out):
    assert out.endswith("\n") and out.count("\n") == 1
    return json.loads(out)


def test_inspect_json_contract(ckptkit, ckpts):
    code, out, err = ckptkit("inspect", ckpts["model"], "--json")
    assert (code, err) == (0, "")
    listing = _one_json_line(out)
    assert listing == expected_listing(ckpts["model"], MODEL)
    assert (listing["total_params"], listing["total_bytes"]) == (48, 365)
    assert [v["dtype"] for v in listing["variables"]][:4] == \
        ["float32", "int64", "bfloat16", "int32"]


@pytest.mark.parametrize("form", ["{p}", "{p}.index", "{p}.data-00000-of-00001", "{d}",
                                  "{d}/", "state", "moved-state", "newest"])
def test_inspect_resolves_every_path_form(ckptkit, ckpts, tmp_path, form):
    """A prefix, its files, its directory (with or without a `checkpoint` state file) all
    name the same checkpoint; a state path from another machine falls back, with a note."""
    prefix = ckpts["model"]
    d = prefix.parent
    note = ""
    if form in ("state", "moved-state", "newest"):
        d = tmp_path
        for step in (900, 1000):    # the newest is step 1000, though "-900" sorts last
            prefix = write_bundle(d / f"model.ckpt-{step}", MODEL).prefix
        if form != "newest":
            named = "model.ckpt-1000" if form == "state" else "/elsewhere/run/model.ckpt-1000"
            (d / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n'
                                          f'all_model_checkpoint_paths: "{named}"\n')
        if form == "moved-state":
            note = (f"note: the checkpoint state names '{named}'; using {prefix} in this "
                    "directory\n")
    path = form.format(p=prefix, d=d) if "{" in form else d
    code, out, err = ckptkit("inspect", path, "--json")
    assert (code, err) == (0, note)
    assert _one_json_line(out) == expected_listing(prefix, MODEL)


def test_inspect_v1_file(ckptkit, ckpts):
    v1 = ckpts["v1-subset"].parent / "model.v1"
    code, out, err = ckptkit("inspect", v1, "--json")
    assert (code, err) == (0, "")
    listing = _one_json_line(out)
    assert (listing["path"], listing["format"]) == (str(v1), "tf-v1")
    assert [(v["name"], v["shape"], v["dtype"]) for v in listing["variables"]] == \
        [(n, list(np.shape(t)), "string" if t.dtype.kind == "O" else t.dtype.name)
         for n, t in sorted(VARIANTS["v1-subset"].items())]


# ---------------------------------------------------------------- inspect: values and stats

ODD_TEXT = """\
odd  [6]  float32
[  1.  nan  inf -inf   3.  -2.]
min -2  max 3  mean 0.666667  std 2.0548  nan 1  inf 2
"""
WEIGHTS_SUMMARISED = """\
net/logits/weights  [2,5]  float32
[[0. ... 4.]
 [5. ... 9.]]
min 0  max 9  mean 4.5  std 2.87228  nan 0  inf 0
"""
VOCAB_TEXT = """\
vocab  [2]  string
array([b'a', b'bc'], dtype=object)
"""
ODD_STATS = {"min": -2.0, "max": 3.0, "mean": pytest.approx(2 / 3),
             "std": pytest.approx(math.sqrt(38 / 9)), "nan": 1, "inf": 2}   # finite: 1, 3, -2


@pytest.mark.parametrize("options, expected", [
    (("--tensor", "odd"), ODD_TEXT),
    (("--tensor", "net/logits/weights", "--printoptions", "threshold=5,edgeitems=1"),
     WEIGHTS_SUMMARISED),
    (("--tensor", "vocab"), VOCAB_TEXT),
], ids=["nan-inf", "printoptions", "strings"])
def test_inspect_tensor_text(ckptkit, ckpts, options, expected):
    assert ckptkit("inspect", ckpts["model"], *options) == (0, expected, "")


def test_inspect_tensor_json(ckptkit, ckpts):
    code, out, err = ckptkit("inspect", ckpts["model"], "--tensor", "net/logits/weights",
                             "--json")
    assert (code, err) == (0, "")
    assert _one_json_line(out) == {
        "name": "net/logits/weights", "shape": [2, 5], "dtype": "float32", "nbytes": 40,
        "stats": {"min": 0.0, "max": 9.0, "mean": 4.5, "std": pytest.approx(math.sqrt(8.25)),
                  "nan": 0, "inf": 0},
        "values": [[0.0, 1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0]]}


def test_a_tensor_with_a_flipped_byte_is_an_error_naming_crc32c(ckptkit, ckpts, tmp_path):
    """Every command that reads values checks the crc32c of what it reads (V2 -> V2 convert,
    which copies stored bytes, too); the other tensors still read."""
    portable = {k: v for k, v in MODEL.items() if k not in ("half", "vocab")}   # for .npz
    written = write_bundle(tmp_path / "model.ckpt", portable)
    flip(written.data(), written.entries["net/logits/weights"]["offset"] + 5)
    prefix = written.prefix
    error = (f"ckptkit: error: net/logits/weights: crc32c mismatch: its bytes in "
             f"{written.data()} are corrupt\n")
    assert ckptkit("inspect", prefix, "--tensor", "net/logits/weights") == (2, "", error)
    for args in (("inspect", prefix, "--stats"), ("diff", ckpts["model"], prefix),
                 ("convert", prefix, tmp_path / "out.npz"),
                 ("convert", prefix, tmp_path / "copy" / "model.ckpt")):
        code, _, err = ckptkit(*args)
        assert (code, err) == (2, error), args
    assert not (tmp_path / "out.npz").exists() and not os.listdir(tmp_path / "copy")
    assert ckptkit("inspect", prefix, "--tensor", "odd") == (0, ODD_TEXT, "")


STATS_TEXT = """\
name                                        shape      dtype      min  max    mean     std  nan  inf
beta1_power                                 []         float32    0.9  0.9     0.9       0    0    0
global_step                                 []         int64        7    7       7       0    0    0
half                                        [2]        bfloat16    -2  1.5   -0.25    1.75    0    0
ids                                         [3]        int32        1    3       2  0.8165    0    0
net/conv1/biases                            [2]        float32   -0.5  0.5       0     0.5    0    0
net/conv1/weights                           [3,3,1,2]  float32      0  1.7    0.85  0.5188    0    0
net/conv1/weights/Adam                      [3,3,1,2]  float32      0    0       0       0    0    0
net/conv1/weights/Adam_1                    [3,3,1,2]  float32      1    1       1       0    0    0
net/logits/biases                           [5]        float32      0    0       0       0    0    0
net/logits/biases/ExponentialMovingAverage  [5]        float32      0    0       0       0    0    0
net/logits/weights                          [2,5]      float32      0    9     4.5   2.872    0    0
odd                                         [6]        float32     -2    3  0.6667   2.055    1    2
vocab                                       [2]        string       -    -       -       -    -    -
"""
# extremes of the %.4g columns: NaN when nothing is finite, signed zero, subnormals, the
# largest float64, integers past 2**53
EXTREMES_TEXT = """\
name       shape  dtype           min         max        mean         std  nan  inf
big        [2]    float64     -1e+300  1.798e+308  8.988e+307  8.988e+307    0    0
huge_ints  [2]    int64            -3   4.612e+18   2.306e+18   2.306e+18    0    0
none       [2]    float32         nan         nan         nan         nan    1    1
tiny       [2]    float64  4.941e-324    1.5e-310    7.5e-311    7.5e-311    0    0
zero       [1]    float32          -0          -0          -0           0    0    0
"""


def test_inspect_stats_table(ckptkit, ckpts):
    assert ckptkit("inspect", ckpts["model"], "--stats") == (0, STATS_TEXT, "")


def test_inspect_stats_table_extremes(ckptkit, tmp_path):
    prefix = write_bundle(tmp_path / "model.ckpt", {
        "big": np.array([1.7976931348623157e308, -1e300]),
        "huge_ints": np.array([2 ** 62 + 1, -3], np.int64),
        "none": np.array([np.nan, np.inf], np.float32),
        "tiny": np.array([5e-324, 1.5e-310]),
        "zero": np.array([-0.0], np.float32),
    }).prefix
    assert ckptkit("inspect", prefix, "--stats") == (0, EXTREMES_TEXT, "")


def test_inspect_stats_json(ckptkit, ckpts):
    code, out, err = ckptkit("inspect", ckpts["model"], "--stats", "--json", "--filter",
                             "^(odd|vocab|global_step)$")
    assert (code, err) == (0, "")
    assert _one_json_line(out) == [
        {"name": "global_step", "shape": [], "dtype": "int64", "nbytes": 8,
         "stats": {"min": 7.0, "max": 7.0, "mean": 7.0, "std": 0.0, "nan": 0, "inf": 0}},
        {"name": "odd", "shape": [6], "dtype": "float32", "nbytes": 24, "stats": ODD_STATS},
        {"name": "vocab", "shape": [2], "dtype": "string", "nbytes": 9, "stats": None}]


def _reject(constant):
    raise ValueError(f"{constant} is not JSON")


DTYPES = {   # name -> (value, the JSON values expected)
    "bf16": (np.array([1.5, -2], ml_dtypes.bfloat16), [1.5, -2.0]),
    "bool": (np.array([True, False]), [True, False]),
    "f16": (np.array([0.5], np.float16), [0.5]),
    "i64": (np.array([[-(2 ** 40)], [3]], np.int64), [[-(2 ** 40)], [3]]),
    "scalar": (np.array(2.5, np.float64), 2.5),
    "str": (np.array([b"x", "é".encode()], dtype=object), ["x", "é"]),
    "u8": (np.array([255], np.uint8), [255]),
}


@pytest.fixture(scope="module")
def dtype_ckpt(tmp_path_factory):
    tensors = {name: value for name, (value, _) in DTYPES.items()}
    tensors.update(c64=np.array([1 + 2j], np.complex64), nan=MODEL["odd"])
    return write_bundle(tmp_path_factory.mktemp("dtypes") / "model.ckpt", tensors).prefix


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_inspect_tensor_json_every_dtype(ckptkit, dtype_ckpt, name):
    value, expected = DTYPES[name]
    code, out, err = ckptkit("inspect", dtype_ckpt, "--tensor", name, "--json")
    assert (code, err) == (0, "")
    shown = _one_json_line(out)
    assert (shown["name"], shown["shape"], shown["values"]) == (name, list(value.shape),
                                                                expected)


def test_inspect_tensor_json_complex(ckptkit, dtype_ckpt):
    code, out, err = ckptkit("inspect", dtype_ckpt, "--tensor", "c64", "--json")
    assert (code, err) == (0, "")
    shown = _one_json_line(out)
    assert (shown["name"], shown["dtype"], shown["values"]) == ("c64", "complex64", [[1.0, 2.0]])


def test_inspect_json_is_strict_json(ckptkit, dtype_ckpt):
    code, out, err = ckptkit("inspect", dtype_ckpt, "--tensor", "nan", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out, parse_constant=_reject)
    assert {"NaN", "Infinity", "-Infinity"} <= set(map(str, shown["values"]))


# ---------------------------------------------------------------- verify

def test_verify_ok(ckptkit, ckpts):
    prefix = ckpts["model"]
    assert ckptkit("verify", prefix) == (
        0, f"OK {prefix} (tf-v2): 13 tensors, 365 B verified\n", "")


def test_verify_json(ckptkit, ckpts):
    prefix = ckpts["model"]
    code, out, err = ckptkit("verify", prefix, "--json")
    assert (code, err) == (0, "")
    assert _one_json_line(out) == {"path": str(prefix), "format": "tf-v2", "ok": True,
                                   "tensors": 13, "bytes": 365, "problems": [], "leftovers": []}


def test_verify_v1(ckptkit, ckpts):
    v1 = ckpts["v1-subset"].parent / "model.v1"
    code, out, err = ckptkit("verify", v1)
    assert (code, err) == (0, "")
    assert re.fullmatch(rf"OK {re.escape(str(v1))} \(tf-v1\): "
                        rf"{len(VARIANTS['v1-subset'])} tensors, \d+ B verified\n", out)


# ---------------------------------------------------------------- diff

EDITED = """\
+ net/extra [3]
- net/conv1/biases [2]
! ids dtype int32 -> int64
! net/logits/biases max abs 0.5, rms 0.223607
! net/logits/weights shape [2,5] -> [5,2]
9 equal, 3 changed, 1 only in A, 1 only in B
"""
NUDGED = "! net/logits/weights max abs 1e-06, rms 3.16228e-07\n" \
         "12 equal, 1 changed, 0 only in A, 0 only in B\n"
SCOPED = "".join(f"+ model/{n} {'[' + ','.join(map(str, np.shape(v))) + ']'}\n"
                 for n, v in sorted(MODEL.items())) + \
    "".join(f"- {n} {'[' + ','.join(map(str, np.shape(v))) + ']'}\n"
            for n, v in sorted(MODEL.items())) + \
    "0 equal, 0 changed, 13 only in A, 13 only in B\n"
EQUAL = "13 equal, 0 changed, 0 only in A, 0 only in B\n"
WITHOUT_SLOTS = "".join(f"- {n} {'[' + ','.join(map(str, np.shape(MODEL[n]))) + ']'}\n"
                        for n in sorted(NOT_MODEL)) + \
    "8 equal, 0 changed, 5 only in A, 0 only in B\n"


@pytest.mark.parametrize("a, b, options, code, expected", [
    ("model", "same", (), 0, EQUAL),
    ("model", "model", (), 0, EQUAL),
    ("model", "edited", (), 1, EDITED),
    ("model", "nudged", (), 1, NUDGED),
    ("model", "nudged", ("--atol", "1e-5"), 0, EQUAL),
    ("model", "nudged", ("--rtol", "1e-5"), 1, NUDGED),    # relative to 0: still changed
    ("model", "scoped", (), 1, SCOPED),
    ("model", "scoped", ("--strip-prefix-b", "model/"), 0, EQUAL),
    ("scoped", "model", ("--strip-prefix-a", "model/"), 0, EQUAL),
    ("model", "model-only", (), 1, WITHOUT_SLOTS),
    ("model", "model-only", ("--no-optimizer",), 0,
     "8 equal, 0 changed, 0 only in A, 0 only in B\n"),
], ids=["equal", "itself", "added-removed-changed", "tiny-change", "atol", "rtol",
        "scopes-differ", "strip-prefix-b", "strip-prefix-a", "slots-missing", "no-optimizer"])
def test_diff(ckptkit, ckpts, a, b, options, code, expected):
    assert ckptkit("diff", ckpts[a], ckpts[b], *options) == (code, expected, "")


def test_diff_across_formats(ckptkit, ckpts):
    """A V2 bundle and a V1 file holding the same tensors compare equal."""
    prefix = ckpts["v1-subset"]
    assert ckptkit("diff", prefix, prefix.parent / "model.v1") == (
        0, f"{len(VARIANTS['v1-subset'])} equal, 0 changed, 0 only in A, 0 only in B\n", "")


def test_diff_json(ckptkit, ckpts):
    code, out, err = ckptkit("diff", ckpts["model"], ckpts["edited"], "--json")
    assert (code, err) == (1, "")

    def change(name, kind, shape_a, shape_b, dtype_a, dtype_b, max_abs=0.0, rms=0.0):
        return {"name": name, "kind": kind, "shape_a": shape_a, "shape_b": shape_b,
                "dtype_a": dtype_a, "dtype_b": dtype_b, "max_abs": max_abs, "rms": rms}

    assert _one_json_line(out) == {
        "only_a": [{"name": "net/conv1/biases", "shape": [2], "dtype": "float32",
                    "nbytes": 8}],
        "only_b": [{"name": "net/extra", "shape": [3], "dtype": "float32", "nbytes": 12}],
        "changed": [
            change("ids", "dtype", [3], [3], "int32", "int64"),
            change("net/logits/biases", "values", [5], [5], "float32", "float32", 0.5,
                   pytest.approx(math.sqrt(0.25 / 5))),
            change("net/logits/weights", "shape", [2, 5], [5, 2], "float32", "float32")],
        "equal": 9}
