"""`ckptkit port --to torch`: state dicts for timm's and torchvision's classes, from
random-init checkpoints TensorFlow wrote, loaded from the written file with strict=True into
the class and compared with the tf_slim graph (the oracle) on real photos; the layouts as
pure functions; a mapping broken on purpose; and the errors.

TensorFlow and torch's CUDA build crash when they share a process, so every torch side runs
in a process of its own (the oracle always does)."""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ckptkit.plan import RestoreOptions
from ckptkit.port.state_dict import TARGETS, Entry, _expand
from ckptkit.zoo.nets import get_net
from helpers.port import certificate, run

LOAD = """
import json, sys, numpy as np, torch, timm, torchvision
from safetensors import safe_open
from safetensors.torch import load_file
path, inputs = sys.argv[1], np.load(sys.argv[2])
with safe_open(path, "pt") as f:
    meta = json.loads(f.metadata()["ckptkit"])
model = eval(meta["class"]).eval()
model.load_state_dict(load_file(path), strict=True)
with torch.no_grad():
    logits = model(torch.from_numpy(inputs.transpose(0, 3, 1, 2).copy())).numpy()
print(json.dumps({"meta": meta, "logits": logits.tolist()}))
"""


def loaded(out, inputs, tmp_path):
    """(metadata, logits) of the class the file names, loaded from it with strict=True."""
    np.save(tmp_path / "inputs.npy", inputs)
    done = subprocess.run([sys.executable, "-c", LOAD, str(out), str(tmp_path / "inputs.npy")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["meta"], np.array(result["logits"], np.float32)


def oracle(net, checkpoint, photos):
    """(preprocessed photos, the tf_slim graph's logits) for the checkpoint's own
    classifier."""
    from ckptkit.images import images_in
    from ckptkit.port.certificate import oracle_outputs

    inputs, outputs = oracle_outputs(net, get_net(net).num_classes, checkpoint,
                                     RestoreOptions(), images_in(str(photos)))
    return inputs, outputs["logits"]


def assert_same(ours, theirs):
    """Within 1e-4 of the logits' own scale (not floored at 1: random nets' logits are
    small), the same top-1 everywhere."""
    scale = float(np.abs(theirs).max())
    assert float(np.abs(ours - theirs).max()) <= 1e-4 * scale
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


@pytest.mark.tf
@pytest.mark.parametrize("net", sorted(TARGETS))
def test_every_target_loads_strictly_and_agrees_with_slim(checkpoints, photos, tmp_path, net):
    """The certificate passes on real photos; the written file, loaded into the class its
    metadata names (strict=True), gives the tf_slim graph's logits; every tensor names the
    checkpoint tensor it came from."""
    ckpt = checkpoints(net)
    out = tmp_path / f"{net}.safetensors"
    done = run("port", ckpt, "--net", net, "--to", "torch", "-o", out, "--check", photos,
               check=True)
    report = certificate(out)
    assert report["passed"] and report["first_divergence"] is None
    assert report["backend"] == "torch" and report["inputs"][0] == 6
    assert report["top1_agreement"] == 1.0 and TARGETS[net].package in report["versions"]
    inputs, logits = oracle(net, ckpt, photos)
    meta, ours = loaded(out, inputs, tmp_path)
    assert f"wrote {out}: {net} for {meta['class']}" in done.stdout
    assert meta["num_classes"] == get_net(net).num_classes == ours.shape[-1]
    assert_same(ours, logits)
    from ckptkit import open_checkpoint

    with open_checkpoint(ckpt) as reader:
        names = {v.name for v in reader}
    sources = [s for s in meta["weights"].values() if s]
    assert set(sources) <= names and len(sources) == len(set(sources))
    out.unlink()        # up to 575 MB, which pytest would keep for three runs


@pytest.mark.tf
def test_drop_background_gives_the_1000_class_head(checkpoints, photos, tmp_path):
    """--drop-background: timm's 1000-class inception_v4 (its tf_in1k shape), the slim
    logits without class 0."""
    ckpt = checkpoints("inception_v4")
    out = tmp_path / "v4.safetensors"
    run("port", ckpt, "--net", "inception_v4", "--to", "torch", "-o", out,
        "--drop-background", "--no-check", check=True)
    assert not (tmp_path / "v4.safetensors.parity.json").exists()
    inputs, logits = oracle("inception_v4", ckpt, photos)
    meta, ours = loaded(out, inputs, tmp_path)
    assert meta["class"] == "timm.create_model('inception_v4', num_classes=1000)"
    assert meta["label_offset"] == 0 and ours.shape[-1] == 1000
    assert_same(ours, logits[:, 1:])


BROKEN = """
import numpy as np, sys
from ckptkit.port import state_dict
value = state_dict.Entry.value
def swapped(self, values):      # every conv kernel with its height and width swapped
    out = value(self, values)
    return np.ascontiguousarray(out.transpose(0, 1, 3, 2)) if self.layout == "conv" else out
state_dict.Entry.value = swapped
from ckptkit.cli import main
main()
"""


@pytest.mark.tf
def test_a_transposed_kernel_fails_the_certificate(checkpoints, photos, tmp_path):
    """Kernels with height and width swapped (square, so they still load): exit status 1,
    no state dict, the certificate says the logits differ."""
    out = tmp_path / "vgg.safetensors"
    done = subprocess.run([sys.executable, "-c", BROKEN, "port", str(checkpoints("vgg_16")),
                           "--net", "vgg_16", "--to", "torch", "-o", str(out), "--check",
                           str(photos / "photo0.png")], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert "ckptkit: error: the port differs from the tf_slim graph: first at logits" \
           in done.stderr
    assert not out.exists() and not certificate(out)["passed"]


@pytest.mark.tf
def test_errors_are_one_line_and_write_nothing(checkpoints, tmp_path, without):
    lenet, v4 = checkpoints("lenet"), checkpoints("inception_v4")
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"mine")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text("{}")
    for f in Path(lenet).parent.glob("model.ckpt*"):
        shutil.copy(f, run_dir)
    new = tmp_path / "n.safetensors"
    cases = [
        (lenet, "resnet_v1_50", [], "not resnet_v1_50: torchvision's ResNets put a block's "
                                    "stride in its first unit"),
        (lenet, "inception_v3", [], "count the padding in their border average pools"),
        (lenet, "inception_v3", [], "--to keras --backend torch"),
        (lenet, "vgg_16", [], "the checkpoint lacks 32 weight(s) the torchvision class needs"),
        (v4, "inception_v4", ["-o", tmp_path / "n.keras"], "written as a .safetensors file"),
        (v4, "inception_v4", ["-o", out], f"{out} exists; add --overwrite to replace it"),
        (v4, "inception_v4", ["--num-classes", "3"], "--num-classes is for --to keras"),
        (v4, "inception_v4", ["--backend", "jax"], "--backend is for --to keras"),
        (v4, "inception_v4", ["--include-preprocessing"], "--include-preprocessing is for"),
        (lenet, "vgg_16", ["--drop-background"], "vgg_16 has none"),
        (run_dir / "model.ckpt", "lenet", [], "is a fine-tuning run's: its head is ckptkit's"),
    ]
    for ckpt, net, args, message in cases:
        args = args if "-o" in args else ["-o", new, *args]
        done = run("port", ckpt, "--net", net, "--to", "torch", *map(str, args), "--no-check")
        assert done.returncode == 2 and done.stdout == "", done.stderr
        lines = [l for l in done.stderr.splitlines() if l.startswith("ckptkit: error: ")]
        assert len(lines) == 1 and message in lines[0], done.stderr
    assert out.read_bytes() == b"mine" and not new.exists()
    assert not (tmp_path / "n.keras").exists()
    args = ["port", checkpoints("vgg_16"), "--net", "vgg_16", "--to", "torch", "-o", new]
    asked = without(["torchvision"], *args, "--check")
    assert (asked.returncode, asked.stdout, asked.stderr.splitlines()[-1:]) == (
        2, "", ["ckptkit: error: checking the vgg_16 state dict needs torch and torchvision "
                "(pip install torch torchvision): no torchvision"])
    assert not new.exists()
    default = without(["torchvision"], *args)
    assert default.returncode == 0, default.stderr
    assert "note: no parity certificate: checking the vgg_16 state dict needs" \
           in default.stderr
    assert new.exists() and not (tmp_path / "n.safetensors.parity.json").exists()


# --- layouts and pairing, pure -----------------------------------------------------------

def test_conv_kernels_become_oihw():
    kernel = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)    # HWIO
    out = Entry("c.weight", "k", "conv").value({"k": kernel}.get)
    assert out.shape == (5, 4, 2, 3) == Entry("c.weight", "k", "conv").shape(kernel.shape)
    assert out.flags.c_contiguous
    assert all(out[o, i, h, w] == kernel[h, w, i, o]
               for o in range(5) for i in range(4) for h in range(2) for w in range(3))


def test_a_7x7_fc_becomes_a_linear_over_nchw_flattened_features():
    """torchvision flattens VGG's [C, 7, 7] features channel-major: input c*49 + h*7 + w."""
    kernel = np.random.default_rng(0).standard_normal((7, 7, 3, 4)).astype(np.float32)
    out = Entry("fc.weight", "k", "linear").value({"k": kernel}.get)
    assert out.shape == (4, 3 * 49) == Entry("fc.weight", "k", "linear").shape(kernel.shape)
    assert all(out[o, c * 49 + h * 7 + w] == kernel[h, w, c, o]
               for o in range(4) for c in range(3) for h in range(7) for w in range(7))
    dense = kernel.reshape(-1, 4)                                    # a [in, out] matrix
    np.testing.assert_array_equal(Entry("l", "d", "linear").value({"d": dense}.get), dense.T)
    assert Entry("l", "d", "linear").shape(dense.shape) == (4, 147)


def test_batch_norm_without_gamma_and_the_counter():
    beta = np.array([0.5, -1], np.float32)
    assert Entry("bn.weight", "b", "ones").value({"b": beta}.get).tolist() == [1, 1]
    count = Entry("bn.num_batches_tracked", "", "count").value({}.get)
    assert count.dtype == np.int64 and count.shape == () == Entry("n", "", "count").shape(None)


def test_a_blocks_convs_pair_in_branch_and_natural_order():
    """block35_10 comes after block35_9, Branch_2 before the block's own Conv2d_1x1, and a
    block holding another number of convs than the class is an error."""
    shapes = {f"S/Repeat/block35_{i}/{layer}/weights": (1, 1, 1, 1)
              for i in (9, 10) for layer in ("Conv2d_1x1", "Branch_1/Conv2d_0a_1x1",
                                             "Branch_0/Conv2d_1x1")}
    blocks = [(f"Repeat/block35_{i}", f"repeat.{i}", ["branch0", "branch1.0", "conv2d"])
              for i in (9, 10)]
    assert list(_expand(blocks, "S", shapes)) == [
        (f"S/Repeat/block35_{i}/{layer}", f"repeat.{i}.{slot}", "conv")
        for i in (9, 10) for layer, slot in (("Branch_0/Conv2d_1x1", "branch0"),
                                             ("Branch_1/Conv2d_0a_1x1", "branch1.0"),
                                             ("Conv2d_1x1", "conv2d"))]
    from ckptkit.errors import PlanError

    with pytest.raises(PlanError, match="holds 3 conv layers under S/Repeat/block35_9; the "
                                        r"class's repeat.9 has 2 \(is --net right\?\)"):
        list(_expand([("Repeat/block35_9", "repeat.9", ["a", "b"])], "S", shapes))


KEYS = """
import json, sys, torchvision
model = getattr(torchvision.models, sys.argv[1])()
print(json.dumps(list(model.state_dict())))
"""


def narrow_vgg(folder, net):
    """(tensors, prefix) of a narrow `net` checkpoint in `folder`, written TF-free."""
    from helpers.bundle_writer import write_bundle
    from helpers.port import tiny_vgg

    tensors = tiny_vgg(net)
    return tensors, write_bundle(folder / "vgg.ckpt", tensors).prefix


@pytest.mark.parametrize("net, model", [("vgg_16", "vgg16"), ("vgg_19", "vgg19")])
def test_vgg_names_are_torchvisions_without_tensorflow(ckptkit, tmp_path, net, model):
    """A (narrow) VGG checkpoint ports TF-free to exactly torchvision's keys, each laid out
    from its slim tensor; the input is left as it was."""
    if importlib.util.find_spec("torchvision") is None:     # not imported: see the notes
        pytest.skip("torchvision is not installed")
    tensors, prefix = narrow_vgg(tmp_path, net)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    out = tmp_path / "vgg.safetensors"
    code, stdout, stderr = ckptkit("port", prefix, "--net", net, "--to", "torch", "-o", out,
                                   "--no-check")
    assert code == 0, stderr
    assert stdout == (f"wrote {out}: {net} for torchvision.models.{model}(num_classes=5), "
                      f"{len(tensors) - 1} tensors from {prefix}\n")
    done = subprocess.run([sys.executable, "-c", KEYS, model], capture_output=True, text=True,
                          timeout=300)
    from safetensors.numpy import load_file

    written = load_file(str(out))
    assert sorted(written) == sorted(json.loads(done.stdout))
    np.testing.assert_array_equal(written["features.2.weight"],
                                  tensors[f"{net}/conv1/conv1_2/weights"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(written["classifier.6.bias"], tensors[f"{net}/fc8/biases"])
    assert written["classifier.0.weight"].shape == (2, 2 * 49)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p != out} == before


def test_inspect_shows_the_class_and_each_keys_source(ckptkit, tmp_path):
    """inspect: the checkpoint, the net and the class to load into on the first line, each
    key's checkpoint tensor (and in --json); --names source refuses: the layouts are
    PyTorch's."""
    _, prefix = narrow_vgg(tmp_path, "vgg_16")
    out = tmp_path / "vgg.safetensors"
    assert ckptkit("port", prefix, "--net", "vgg_16", "--to", "torch", "-o", out,
                   "--no-check")[0] == 0
    code, stdout, stderr = ckptkit("inspect", out, "--flat")
    assert (code, stderr) == (0, "")
    lines = stdout.splitlines()
    assert lines[0] == (f"{out}  (safetensors; ported by ckptkit from {prefix} for vgg_16; "
                        "loads into torchvision.models.vgg16(num_classes=5))")
    assert re.search(r"^features\.2\.weight +\[2,2,3,3\] .* <- vgg_16/conv1/conv1_2/weights$",
                     stdout, re.M), stdout
    listed = json.loads(ckptkit("inspect", out, "--json")[1])
    assert listed["ported_from"] == {"checkpoint": str(prefix), "net": "vgg_16",
                                     "class": "torchvision.models.vgg16(num_classes=5)"}
    sources = {v["name"]: v.get("source") for v in listed["variables"]}
    assert sources["classifier.6.bias"] == "vgg_16/fc8/biases"
    assert all(sources.values()) and len(set(sources.values())) == len(sources)
    assert ckptkit("convert", out, tmp_path / "back.npz", "--names", "source") == (
        2, "", f"ckptkit: error: --names source: {out} holds its weights as PyTorch lays them "
               f"out (OIHW kernels, Linear matrices), not as {prefix} does; use that "
               "checkpoint itself\n")
    assert not (tmp_path / "back.npz").exists()


@pytest.mark.parametrize("record, why", [
    ("{not json", "its ckptkit metadata is not the JSON object `ckptkit port --to torch` "
                  "writes"),
    ("[" * 100_000, "is not the JSON object"),
    (json.dumps({"checkpoint": "c", "net": "n"}), "is not the JSON object"),
    (json.dumps({"checkpoint": "c", "net": "n", "class": "k", "weights": ["a"]}),
     "weights are not a mapping of keys to checkpoint tensor names"),
    (json.dumps({"checkpoint": "c", "net": "n", "class": "k", "weights": {"zz": "t"}}),
     "names 1 key(s) the file lacks (first 'zz')"),
])
def test_a_record_not_shaped_as_ours_is_set_aside(ckptkit, tmp_path, record, why):
    """The listing as for any safetensors file, one note saying why."""
    from safetensors.numpy import save_file

    out = tmp_path / "w.safetensors"
    save_file({"a": np.ones(2, np.float32)}, str(out), metadata={"ckptkit": record})
    code, stdout, stderr = ckptkit("inspect", out, "--flat")
    assert code == 0 and stdout.splitlines()[0] == f"{out}  (safetensors)"
    assert "<-" not in stdout and stderr.startswith(f"note: {out}: ") and why in stderr
    assert stderr.endswith("the checkpoint tensors of its weights are unknown\n")
