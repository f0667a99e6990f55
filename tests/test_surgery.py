"""surgery.py: the pure plan (name tables and errors), the streaming run (raw copies, input
untouched, atomic output, no temp files), SIGKILL at random moments, and round trips with
TensorFlow as the oracle (marked tf)."""
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ckptkit
from ckptkit.errors import CkptError, NotFound, PlanError
from ckptkit.surgery import plan_surgery, run_surgery
from ckptkit.variable import Variable
from helpers.bundle_writer import write_bundle
from conftest import CORPUS, CORPUS_MISSING, corpus_cases

F32 = "float32"


def var(name, shape=(2,), dtype=F32):
    return Variable(name, tuple(shape), dtype, 8)


TRAINED = [var("net/conv/weights", (3, 3)), var("net/conv/weights/Adam", (3, 3)),
           var("net/conv/weights/Adam_1", (3, 3)),
           var("net/conv/weights/ExponentialMovingAverage", (3, 3)),
           var("net/Logits/weights", (4, 1001)), var("net/Logits/biases", (1001,)),
           var("net/AuxLogits/biases", (1001,)), var("global_step", (), "int64"),
           var("net/count", (3,), "int32")]


def table(plan):
    """{new name: (old name, shape, dtype)} and {dropped name: reason}."""
    return ({e.name: (e.var.name, e.shape, e.dtype) for e in plan.entries},
            {d[1]: d[4] for d in plan.dropped})


# --- the plan ---------------------------------------------------------------------------------

def test_strip_optimizer_drops_slots_step_and_ema():
    kept, dropped = table(plan_surgery(TRAINED, strip_optimizer=True))
    assert sorted(kept) == ["net/AuxLogits/biases", "net/Logits/biases", "net/Logits/weights",
                            "net/conv/weights", "net/count"]
    assert dropped == {
        "global_step": "--strip-optimizer (step)",
        "net/conv/weights/Adam": "--strip-optimizer (optimizer slot)",
        "net/conv/weights/Adam_1": "--strip-optimizer (optimizer slot)",
        "net/conv/weights/ExponentialMovingAverage": "--strip-optimizer (ema)"}


def test_keep_ema_and_use_moving_averages():
    kept, _ = table(plan_surgery(TRAINED, strip_optimizer=True, keep_ema=True))
    assert "net/conv/weights/ExponentialMovingAverage" in kept
    kept, dropped = table(plan_surgery(TRAINED, use_moving_averages=True, strip_optimizer=True))
    assert kept["net/conv/weights"][0] == "net/conv/weights/ExponentialMovingAverage"
    assert dropped["net/conv/weights"].startswith("replaced by its moving average")
    with pytest.raises(PlanError, match="no ExponentialMovingAverage"):
        plan_surgery([var("a/b")], use_moving_averages=True)


def test_renames_apply_in_order_after_prefixes():
    plan = plan_surgery(TRAINED, keep=["conv"], strip_optimizer=True, strip_prefix="net",
                        renames=["conv=backbone/conv", "re:weights$=kernel"], add_prefix="m")
    assert table(plan)[0] == {"m/backbone/conv/kernel": ("net/conv/weights", (3, 3), F32)}
    assert plan.lines()[0] == "  net/conv/weights -> m/backbone/conv/kernel  [3,3] float32" \
                              "  (renamed)"


@pytest.mark.parametrize("ops,message", [
    ({"renames": ["nett=a"]}, "rename 'nett=a' matches no tensor; closest: net"),
    ({"renames": ["re:Adam(_1)?$=x"]}, "renames map both 'net/conv/weights/Adam' and "
                                        "'net/conv/weights/Adam_1' to 'net/conv/weights/x'"),
    ({"renames": ["net/count=global_step", "re:^net/count=global_step"]}, None),
    ({"drop": ["Logitz"]}, "--drop 'Logitz' matches no tensor; closest: net/Logits"),
    ({"keep": ["nope"]}, "--keep 'nope' matches no tensor"),
    ({"cast": ["net/count=float16"]}, "'net/count' is int32, not a floating tensor"),
    ({"cast": ["int8"]}, "cast to one of float16, bfloat16, float32"),
    ({"slice_classes": ["1"]}, "expected \\[SCOPE=\\]START:STOP"),
    ({"slice_classes": ["conv=5:"]}, "leaves nothing of 'net/conv/weights'"),
    ({"keep_ema": True}, "--keep-ema goes with --strip-optimizer"),
    ({"prefer": "other"}, "--prefer needs --merge"),
])
def test_plan_errors(ops, message):
    if message is None:   # a rename onto an existing name is a collision
        with pytest.raises(PlanError, match="renames map both 'global_step' and 'net/count'"):
            plan_surgery(TRAINED, renames=ops["renames"][:1])
        return
    with pytest.raises(PlanError, match=message):
        plan_surgery(TRAINED, **ops)


def test_cast_floats_only_and_slice_classes():
    kept, _ = table(plan_surgery(TRAINED, cast=["bfloat16"], slice_classes=["1:"]))
    assert kept["net/Logits/weights"] == ("net/Logits/weights", (4, 1000), "bfloat16")
    assert kept["net/AuxLogits/biases"][1:] == ((1000,), "bfloat16")
    assert kept["net/count"][2] == "int32" and kept["global_step"][2] == "int64"
    kept, _ = table(plan_surgery(TRAINED, slice_classes=["net/Logits=:-1"]))
    assert kept["net/Logits/biases"][1] == (1000,) and kept["net/AuxLogits/biases"][1] == (1001,)


def test_merge_conflicts_and_prefer():
    other = [var("net/count", (5,), "int64"), var("head/w")]
    with pytest.raises(PlanError, match="1 names are in both checkpoints \\(net/count\\)"):
        plan_surgery(TRAINED, other=other)
    kept, dropped = table(plan_surgery(TRAINED, other=other, prefer="other"))
    assert kept["net/count"][1:] == ((5,), "int64") and "head/w" in kept
    assert dropped["net/count"] == "--prefer other"
    plan = plan_surgery(TRAINED, other=other, prefer="input")
    assert table(plan)[0]["net/count"][1:] == ((3,), "int32")


def test_set_replaces_or_adds():
    plan = plan_surgery(TRAINED, set_values={"net/count": ("x.npy", (7,), "int64"),
                                             "new/t": ("y.npy", (), F32)})
    kept, _ = table(plan)
    assert kept["net/count"][1:] == ((7,), "int64") and kept["new/t"][1:] == ((), F32)


def test_object_graph_dropped_once_names_change():
    names = [var("_CHECKPOINTABLE_OBJECT_GRAPH", (), "string"),
             var("model/w/.ATTRIBUTES/VARIABLE_VALUE")]
    assert len(plan_surgery(names).entries) == 2
    _, dropped = table(plan_surgery(names, add_prefix="x"))
    assert "stale" in dropped["_CHECKPOINTABLE_OBJECT_GRAPH"]


# --- running it -------------------------------------------------------------------------------

TENSORS = {
    "net/conv/weights": np.arange(12, dtype=np.float32).reshape(3, 4),
    "net/conv/weights/Adam": np.ones((3, 4), np.float32),
    "net/conv/weights/ExponentialMovingAverage": np.full((3, 4), 2, np.float32),
    "net/Logits/biases": np.arange(11, dtype=np.float32),
    "net/names": np.array([b"a", b"\x00"], dtype=object),
    "global_step": np.array(9, np.int64),
}


def checksums(folder):
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
            for n in sorted(os.listdir(folder))}


@pytest.fixture
def ckpt(tmp_path):
    folder = tmp_path / "in"
    write_bundle(str(folder / "model.ckpt-5"), TENSORS)
    return folder


def read_all(path):
    with ckptkit.open_checkpoint(path) as r:
        assert list(r.problems()) == []
        return {v.name: r.read(v.name).copy() for v in r}


def test_run_copies_stored_bytes_and_decodes_only_changes(ckpt, tmp_path):
    before = checksums(ckpt)
    result = run_surgery(ckpt, tmp_path / "out.ckpt", strip_optimizer=True,
                         renames=["net=model"], cast=["model/Logits=float16"])
    assert (result.copied, result.decoded) == (2, 1)
    out = read_all(tmp_path / "out.ckpt")
    assert sorted(out) == ["model/Logits/biases", "model/conv/weights", "model/names"]
    assert out["model/Logits/biases"].dtype == np.float16
    assert out["model/names"].tolist() == [b"a", b"\x00"]
    assert checksums(ckpt) == before
    assert [n for n in os.listdir(tmp_path) if "tmp" in n] == []


def test_out_equal_to_in_directory_writes_a_new_prefix_and_state(ckpt):
    before = checksums(ckpt)
    result = run_surgery(ckpt, ckpt, use_moving_averages=True, strip_optimizer=True)
    assert result.target.path == str(ckpt / "model.ckpt-5-edit")
    assert {n: before[n] for n in before} == {n: checksums(ckpt)[n] for n in before}
    assert (ckpt / "checkpoint").read_text().startswith('model_checkpoint_path: '
                                                        '"model.ckpt-5-edit"\n')
    out = read_all(ckpt)   # the directory now resolves to the edit
    assert (out["net/conv/weights"] == 2).all() and "global_step" not in out


def test_existing_prefix_is_refused(ckpt):
    with pytest.raises(CkptError, match="is the input checkpoint; a V2 prefix's files"):
        run_surgery(ckpt / "model.ckpt-5", ckpt / "model.ckpt-5", strip_optimizer=True)


# --- the input is never modified; an existing output only on request ------------------------

def _single_files(tmp_path):
    """(npz, safetensors, h5) copies of a small float checkpoint, and their checksums."""
    src = tmp_path / "src"
    write_bundle(str(src / "m"), {"net/w": np.arange(6, dtype=np.float32).reshape(2, 3),
                                  "net/b": np.ones(3, np.float32)})
    files = [tmp_path / f"m.{ext}" for ext in ("npz", "safetensors", "h5")]
    for f in files:
        run_surgery(src, f)
    return files


@pytest.mark.parametrize("out", [
    "model.ckpt-5", "model.ckpt-5.index", "model.ckpt-5.data-00000-of-00001"])
def test_no_file_of_a_v2_input_is_written(ckpt, out):
    """Any of the input bundle's files as OUT (the .index form used to rewrite the input)."""
    before = checksums(ckpt)
    with pytest.raises(CkptError, match="is the input checkpoint; a V2 prefix's files"):
        run_surgery(ckpt / "model.ckpt-5", ckpt / out, cast=["float16"])
    with pytest.raises(CkptError, match="never edited in place"):
        run_surgery(ckpt / "model.ckpt-5", ckpt / out, cast=["float16"], in_place=True)
    assert checksums(ckpt) == before


def test_single_file_inputs_are_replaced_only_in_place(tmp_path):
    for f in _single_files(tmp_path):
        before = f.read_bytes()
        link = tmp_path / f"link-{f.name}"
        link.symlink_to(f)
        for out in (f, link):       # the same path, or the same file through a link
            with pytest.raises(CkptError, match=r"is a file this edit reads; write elsewhere "
                                                r"\(add --in-place to replace it\)"):
                run_surgery(f, out, renames=["net=model"])
        assert f.read_bytes() == before
        run_surgery(link, link, renames=["net=model"], in_place=True)
        assert link.is_symlink()                        # the link's target was replaced
        assert sorted(read_all(f)) == ["model/b", "model/w"]
        assert [n for n in os.listdir(tmp_path) if "ckptkit-" in n] == []


def test_a_merge_source_is_never_the_output(tmp_path):
    npz, safetensors, _ = _single_files(tmp_path)
    before = safetensors.read_bytes()
    with pytest.raises(CkptError, match="is a file this edit reads; write elsewhere$"):
        run_surgery(npz, safetensors, merge=safetensors, prefer="other")
    with pytest.raises(CkptError, match="--in-place replaces the input, and .* is not "):
        run_surgery(npz, safetensors, merge=safetensors, prefer="other", in_place=True)
    assert safetensors.read_bytes() == before


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path):
    npz, safetensors, h5 = _single_files(tmp_path)
    for out in (safetensors, h5):
        before = out.read_bytes()
        with pytest.raises(CkptError, match=r"exists; add --overwrite to replace it$"):
            run_surgery(npz, out, renames=["net=other"])
        assert out.read_bytes() == before
        run_surgery(npz, out, renames=["net=other"], overwrite=True)
        assert sorted(read_all(out)) == ["other/b", "other/w"]
    with pytest.raises(CkptError, match="--in-place replaces the input, and"):
        run_surgery(npz, tmp_path / "new.npz", in_place=True)


# --- one writer per output, and what killed writers leave --------------------------------------

def test_a_second_writer_to_the_same_output_is_refused_naming_the_first(ckpt, tmp_path):
    from ckptkit.fileio import output_lock

    out = tmp_path / "out.npz"
    with output_lock(out):
        with pytest.raises(CkptError, match=rf"^{re.escape(str(out))} is being written by "
                                            rf"another ckptkit process \(pid {os.getpid()}\)"):
            run_surgery(ckpt, out, strip_optimizer=True, drop=["names"])
    assert os.listdir(tmp_path) == ["in"]      # nothing written, the lock file gone with it
    run_surgery(ckpt, out, strip_optimizer=True, drop=["names"])
    assert sorted(os.listdir(tmp_path)) == ["in", "out.npz"]


def test_temp_files_of_dead_writers_go_with_the_next_write(ckpt, tmp_path):
    from ckptkit import fileio, render
    from ckptkit.checks import verify

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = fileio.stale_temps.__globals__["_HOST"]
    out = tmp_path / "out"
    out.mkdir()
    left = out / f".m.index{fileio.TEMP_MARK}{host}-{dead}-0123abcd"
    alive = out / f".m.index{fileio.TEMP_MARK}{host}-{os.getpid()}-0123abcd"
    foreign = out / f".m.index{fileio.TEMP_MARK}ffffffff-{dead}-0123abcd"
    run_surgery(ckpt, out, strip_optimizer=True)
    for f in (left, alive, foreign):
        f.write_bytes(b"x" * 100)
    assert fileio.stale_temps(out) == [str(left)]
    report = verify(out)            # `ckptkit verify DIR` names them, and stays OK
    assert report.ok and report.leftovers == [str(left)]
    assert render.verify_lines(report)[-1] == (
        "note: 1 unfinished temp file of killed ckptkit writers beside it (the next write "
        f"there removes them): {left.name}")
    run_surgery(ckpt, out, strip_optimizer=True)
    assert not left.exists() and alive.exists() and foreign.exists()


def test_errors_leave_no_files(ckpt, tmp_path):
    before = checksums(ckpt)
    with pytest.raises(PlanError):
        run_surgery(ckpt, tmp_path / "o", renames=["nope=x"])
    with pytest.raises(ckptkit.FormatError, match="string, which safetensors"):
        run_surgery(ckpt, tmp_path / "o.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["in"] and checksums(ckpt) == before


def test_set_and_merge_and_dry_run(ckpt, tmp_path):
    np.save(tmp_path / "b.npy", np.arange(3, dtype=np.int16))
    write_bundle(str(tmp_path / "other" / "o"), {"head/w": np.ones(2, np.float64),
                                                 "global_step": np.array(1, np.int64)})
    dry = run_surgery(ckpt, tmp_path / "x.npz", dry_run=True, strip_optimizer=True,
                      merge=tmp_path / "other" / "o", prefer="other",
                      set_values=[f"net/Logits/biases={tmp_path / 'b.npy'}"])
    assert not (tmp_path / "x.npz").exists()
    assert "  net/Logits/biases  [11] float32 -> [3] int16  (set from b.npy)" in dry.plan.lines()
    run_surgery(ckpt, tmp_path / "x.h5", merge=tmp_path / "other" / "o", prefer="other",
                drop=["names", "re:/(Adam|ExponentialMovingAverage)$"],
                set_values=[f"net/Logits/biases={tmp_path / 'b.npy'}"])
    out = read_all(tmp_path / "x.h5")
    assert out["net/Logits/biases"].tolist() == [0, 1, 2] and out["global_step"] == 1
    with pytest.raises(ckptkit.FormatError, match="'net/conv/weights' is also the scope of"):
        run_surgery(ckpt, tmp_path / "x.h5", drop=["names"], overwrite=True)
    with pytest.raises(NotFound, match="no file"):
        run_surgery(ckpt, tmp_path / "y", set_values=["a=nofile.npy"])


# --- SIGKILL ----------------------------------------------------------------------------------

KILL_SCRIPT = """
import sys
from ckptkit.surgery import run_surgery
print("ready", flush=True)
run_surgery(sys.argv[1], sys.argv[2], strip_optimizer=True, renames=["big=large"],
            cast=["large/t00=float16"], shards=2)
"""


def test_sigkill_at_random_moments_never_corrupts(tmp_path):
    """>= 20 runs killed at random delays: the input's bytes never change, and OUT is either
    absent (nothing resolves) or a complete, valid checkpoint with the right values."""
    rng = np.random.default_rng(0)
    big = {f"big/t{i:02d}": rng.standard_normal((1 << 20,), dtype=np.float32)
           for i in range(16)}                                      # 64 MB
    big.update({f"big/t{i:02d}/Adam": np.zeros(4, np.float32) for i in range(16)})
    big["global_step"] = np.array(3, np.int64)
    source = tmp_path / "in"
    write_bundle(str(source / "m"), big)
    before = checksums(source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def start(out):
        """The surgery subprocess, once its imports are done (the kill aims at the writing)."""
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(source / "m"),
                                 str(out)], env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        return proc

    for reference in ("warm", "t"):   # the second run, with a warm page cache, sets the pace
        timing = time.monotonic()
        assert start(tmp_path / reference).wait() == 0
        full = time.monotonic() - timing
    expected = read_all(tmp_path / "t")
    outcomes = {"absent": 0, "complete": 0, "mid-write": 0}
    rand = random.Random(1)
    for run in range(20):
        out = tmp_path / f"out{run}"
        proc = start(str(out) + "/")
        time.sleep(rand.uniform(0.0, 1.1) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert checksums(source) == before
        leftovers = os.listdir(out) if out.exists() else []
        outcomes["mid-write"] += any("ckptkit-tmp" in n for n in leftovers)
        try:
            ckptkit.open_checkpoint(out).close()
        except NotFound:   # nothing complete is visible (temp files may stay after a kill)
            outcomes["absent"] += 1
            continue
        outcomes["complete"] += 1
        got = read_all(out)
        assert sorted(got) == sorted(expected)
        for name in expected:
            assert got[name].tobytes() == expected[name].tobytes()
    assert outcomes["mid-write"], outcomes   # kills did land while files were being written
    for run in range(20):   # the next write into each folder removes what the killed ones left
        out = tmp_path / f"out{run}"
        if out.exists():
            assert start(str(out) + "/").wait() == 0
            assert [n for n in os.listdir(out) if ".ckptkit-" in n] == []
            assert checksums(source) == before


def test_two_writers_to_one_prefix_one_wins_and_the_output_verifies(tmp_path):
    rng = np.random.default_rng(1)
    source = tmp_path / "in"
    write_bundle(str(source / "m"), {f"big/t{i:02d}": rng.standard_normal(1 << 20, "f4")
                                     for i in range(16)})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = tmp_path / "out" / "m"
    main = "from ckptkit.cli import main; main()"
    procs = [subprocess.Popen([sys.executable, "-c", main, "convert",
                               str(source / "m"), str(out), "--shards", "2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in done) == [0, 2], done
    lost = next(err for code, err in done if code == 2)
    assert re.match(r"ckptkit: error: \S+ is (being written by another ckptkit process"
                    r"( \(pid \d+\))?;|an existing checkpoint)", lost), lost
    assert list(ckptkit.open_checkpoint(out).problems()) == []
    assert [n for n in os.listdir(out.parent) if ".ckptkit-" in n] == []


# --- TensorFlow as the oracle -----------------------------------------------------------------

def tf_values(tf, path):
    reader = tf.train.load_checkpoint(str(path))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def assert_same_tables(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert (x.tolist() == y.tolist()) if x.dtype == object else \
            x.tobytes() == y.tobytes(), name


@pytest.mark.tf
def test_round_trips_tf_sees_identical_checkpoints(tf, tmp_path):
    from helpers.tf_factories import Var, save_graph

    values = {"a/w": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
              "a/b": np.array([1.5, -0.0, np.inf], np.float64),
              "c/i": np.arange(5, dtype=np.int64), "c/h": np.ones(3, np.float16)}
    v1 = save_graph(tmp_path / "v1", [Var(n, v) for n, v in values.items()], version="V1")
    sharded = save_graph(tmp_path / "sh", [Var(n, v, device=f"/cpu:{i % 2}")
                                           for i, (n, v) in enumerate(values.items())],
                         sharded=True)
    oracle = tf_values(tf, sharded.path)
    run_surgery(v1.path, tmp_path / "from_v1")                          # V1 -> V2
    assert_same_tables(tf_values(tf, tmp_path / "from_v1"), oracle)
    for ext in ("npz", "safetensors", "h5"):                            # V2 -> file -> V2
        run_surgery(sharded.path, tmp_path / f"m.{ext}")
        run_surgery(tmp_path / f"m.{ext}", tmp_path / f"back_{ext}")
        assert_same_tables(tf_values(tf, tmp_path / f"back_{ext}"), oracle)
    run_surgery(sharded.path, tmp_path / "single")                      # sharded -> single
    run_surgery(tmp_path / "single", f"{tmp_path}/resharded/", shards=3)  # -> sharded
    assert len([n for n in os.listdir(tmp_path / "resharded") if ".data-" in n]) == 3
    assert_same_tables(tf_values(tf, tmp_path / "resharded"), oracle)


@pytest.mark.tf
def test_slim_graph_restores_renamed_stripped_result(tf, tmp_path):
    """A trained tf_slim net's checkpoint (with Momentum slots, EMA, global_step), renamed
    and stripped, restores into a net built under the new scope with a plain Saver."""
    from ckptkit.tfcompat import slim

    def net(images, scope):
        with tf.variable_scope(scope):
            x = slim.conv2d(images, 4, [3, 3], scope="conv1")
            x = slim.flatten(x)
            return slim.fully_connected(x, 5, activation_fn=None, scope="logits")

    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        images = tf.random.normal([2, 8, 8, 3], seed=1)
        loss = tf.reduce_sum(net(images, "old"))
        step = tf.train.get_or_create_global_step()
        train = tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss, global_step=step)
        ema = tf.train.ExponentialMovingAverage(0.9)
        with tf.control_dependencies([train]):
            train = ema.apply(tf.trainable_variables())
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(train)
            trained = sess.run({v.op.name: v for v in tf.trainable_variables()})
            tf.train.Saver().save(sess, str(tmp_path / "run" / "model.ckpt"), global_step=1)
    with ckptkit.open_checkpoint(tmp_path / "run") as r:
        assert any(n.endswith("/Momentum") for n in r.variables)
    run_surgery(tmp_path / "run", f"{tmp_path}/clean/", strip_optimizer=True,
                renames=["old=new"])
    graph = tf.Graph()
    with graph.as_default():
        net(tf.zeros([2, 8, 8, 3]), "new")
        made = {v.op.name: v for v in tf.global_variables()}
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, tf.train.latest_checkpoint(str(tmp_path / "clean")))
            restored = sess.run(made)
    assert sorted(restored) == sorted(n.replace("old/", "new/", 1) for n in trained)
    for name, value in trained.items():
        np.testing.assert_array_equal(restored[name.replace("old/", "new/", 1)], value)


# --- the real-checkpoint corpus ---------------------------------------------------------------

def _convertible():
    import json

    if not corpus_cases():
        return [pytest.param(None, marks=pytest.mark.skip(reason=CORPUS_MISSING),
                             id="no-corpus")]
    oracle = json.loads((CORPUS / "oracle.json").read_text())
    return [pytest.param((case, ck), id=f"{case}/{ck['prefix'] or '<empty>'}")
            for case in corpus_cases() if oracle[case]["kind"] == "tf_checkpoint"
            for ck in oracle[case]["checkpoints"] if ck["read_all_ok"]]


@pytest.mark.parametrize("case", _convertible())
def test_corpus_converts_to_v2(case, tmp_path):
    name, entry = case
    path = os.path.join(CORPUS, name, entry["prefix"]) if entry["prefix"] else \
        str(CORPUS / name) + "/"
    with ckptkit.open_checkpoint(path) as src:
        unwritable = [v.name for v in src if v.dtype in ("resource", "variant")]
        result = run_surgery(path, tmp_path / "out",
                             drop=[f"re:^{re.escape(n)}$" for n in unwritable])
        assert result.copied + result.decoded == len(src) - len(unwritable)
        with ckptkit.open_checkpoint(tmp_path / "out") as out:
            assert list(out.problems()) == []
            assert [(v.name, v.shape, v.dtype) for v in out] == \
                [(v.name, v.shape, v.dtype) for v in src if v.name not in unwritable]
            for v in out:
                a, b = out.read(v.name), src.read(v.name)
                assert (a.tolist() == b.tolist()) if a.dtype == object else \
                    a.tobytes() == np.ascontiguousarray(b).astype(a.dtype).tobytes(), v.name


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) forking parent
MEMORY_SCRIPT = """
import sys
import numpy   # in the baseline too: a dry run never needs it
from ckptkit.surgery import run_surgery
run_surgery(sys.argv[1], sys.argv[2], dry_run=sys.argv[3] == "dry", cast=["float16"],
            renames=["big=large"])
with open("/proc/self/status") as f:
    print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_stays_near_the_largest_tensor(tmp_path):
    """Peak RSS of a decode-everything run (cast) over a 64 MB checkpoint stays within a few
    of its 4 MB tensors of what planning alone costs, far below the checkpoint's size."""
    rng = np.random.default_rng(0)
    write_bundle(str(tmp_path / "m"), {f"big/t{i:02d}": rng.standard_normal(
        1 << 20, dtype=np.float32) for i in range(16)})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def peak_mb(mode, out):
        done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "m"),
                               str(tmp_path / out), mode], env=env, check=True,
                              capture_output=True, text=True)
        return int(done.stdout.split()[-1]) / 1024

    baseline, writing = peak_mb("dry", "a"), peak_mb("run", "b")
    assert writing - baseline < 3 * 4 + 16, (baseline, writing)   # not ~64 MB
    assert read_all(tmp_path / "b")["large/t03"].dtype == np.float16
