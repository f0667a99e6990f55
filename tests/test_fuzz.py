"""Property-based fuzzing (Hypothesis): small generated checkpoints of every format, mutated
(bytes flipped, files cut short, huge integers written over headers), and the promise of
test_hostile.py for every reading command: `inspect`, `inspect --stats`, `verify`, `diff`
and `convert` end in one `ckptkit: error:` line and exit 2, a finding and exit 1 (verify,
diff), or exit 0 with a valid output; never a traceback, a hang or a huge allocation, and the
input never changes.

The default run is derandomized (a fixed seed) with a few examples per format; the long run,
with a fresh seed each time, is `CKPTKIT_FUZZ_LONG=500 tools/test -m fuzz`."""
import os
import re
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers.bundle_writer import write_bundle, write_v1
from helpers.hostile import run_isolated, snapshot

MEMORY_LIMIT = 1536 << 20
TIMEOUT = 20
EXAMPLES = 5                                       # per format, in the default run
LONG = int(os.environ.get("CKPTKIT_FUZZ_LONG", "0"))  # per format, in the `-m fuzz` run
TENSORS = {
    "dense/kernel": (np.arange(12, dtype=np.float32) / 7).reshape(3, 4),
    "dense/bias": np.arange(4, dtype=np.float32),
    "half": np.array([1.5, -2, 3], ml_dtypes.bfloat16),
    "global_step": np.array(42, dtype=np.int64),
    "ids": np.arange(5, dtype=np.int32),
}
ERROR = re.compile(r"ckptkit: error: [^\n]+\n\Z")
HUGE = [2 ** 31, 2 ** 32 - 1, 2 ** 62, 2 ** 63 - 1, 2 ** 64 - 1]


def _seeds(root):
    """format -> (checkpoint path, the file the mutations damage)."""
    from ckptkit.surgery import run_surgery

    v2 = write_bundle(root / "v2" / "model.ckpt", TENSORS).prefix
    (root / "v1").mkdir()
    write_v1(root / "v1" / "model.ckpt", {k: v for k, v in TENSORS.items() if k != "half"})
    floats = {k: v for k, v in TENSORS.items() if v.dtype != ml_dtypes.bfloat16}
    write_bundle(root / "src" / "m", floats)
    seeds = {"tf-v2-index": (v2, Path(f"{v2}.index")),
             "tf-v2-data": (v2, Path(f"{v2}.data-00000-of-00001")),
             "tf-v1": (root / "v1" / "model.ckpt", root / "v1" / "model.ckpt")}
    for ext in ("npz", "safetensors", "h5"):
        out = root / ext / f"model.{ext}"
        run_surgery(root / "src" / "m", out)
        seeds[ext] = (out, out)
    return seeds


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    return root, _seeds(root)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("huge"), st.floats(0, 1), st.sampled_from(HUGE)),
)


def _mutate(path, mutations):
    data = bytearray(path.read_bytes())
    for kind, where, value in mutations:
        at = min(int(where * len(data)), max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= value
        elif kind == "cut":
            del data[at:]
        elif kind == "huge":
            width = 8 if value >= 2 ** 32 else 4
            data[at:at + width] = value.to_bytes(width, "little")
    path.write_bytes(bytes(data))


def _judge(command, code, out, err, output):
    shown = f"{command}: exit {code}\n--- stdout\n{out}--- stderr\n{err}"
    assert code is not None, f"{command} hung\n{shown}"
    assert "Traceback" not in out + err and "internal error" not in err, shown
    assert "out of memory" not in err, shown
    allowed = {"verify": (0, 1, 2), "diff": (0, 1, 2)}.get(command[0], (0, 2))
    assert code in allowed, shown
    if code == 2:
        assert out == "" and ERROR.fullmatch(err), shown
    if code == 0 and command[0] == "convert":
        from ckptkit.checks import verify

        assert verify(output).ok, shown


FORMATS = ["tf-v2-index", "tf-v2-data", "tf-v1", "npz", "safetensors", "h5"]


def _fuzz(seeds, tmp_path_factory, fmt, examples, derandomize):
    root, found = seeds
    checkpoint, victim = found[fmt]

    @settings(max_examples=examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(mutation, min_size=1, max_size=3))
    def check(mutations):
        d = tmp_path_factory.mktemp("fuzz")
        folder = Path(victim).parent
        shutil.copytree(folder, d / "in")
        path = d / "in" / Path(checkpoint).relative_to(folder)
        _mutate(d / "in" / Path(victim).name, mutations)
        before = snapshot(d / "in")
        out = d / "out" / "converted.npz"
        commands = [["inspect", str(path)], ["inspect", str(path), "--stats"],
                    ["verify", str(path)], ["diff", str(checkpoint), str(path)],
                    ["convert", str(path), str(out)]]
        results = run_isolated([(c, d, TIMEOUT) for c in commands], MEMORY_LIMIT, width=2)
        for command, (code, stdout, stderr) in zip(commands, results):
            _judge(command, code, stdout, stderr, out)
        assert snapshot(d / "in") == before, "the input changed"

    check()


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_checkpoints_keep_the_contract(seeds, tmp_path_factory, fmt):
    _fuzz(seeds, tmp_path_factory, fmt, EXAMPLES, derandomize=True)


@pytest.mark.fuzz
@pytest.mark.skipif(not LONG, reason="the long fuzz run: CKPTKIT_FUZZ_LONG=500 pytest -m fuzz")
@pytest.mark.parametrize("fmt", FORMATS)
def test_long_fuzz_run(seeds, tmp_path_factory, fmt):
    _fuzz(seeds, tmp_path_factory, fmt, LONG, derandomize=False)
