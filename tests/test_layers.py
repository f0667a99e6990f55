"""Layering (DESIGN.md): imports point down the layers and never go round in a cycle, no module
imports another's private names; `inspect`, `verify` and `diff` never load TensorFlow; a TF
checkpoint never loads h5py; a plain listing never even loads numpy. Only
ckptkit/tfcompat.py and ckptkit/train/ import TensorFlow."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ckptkit
from helpers.bundle_writer import write_bundle, write_v1
from helpers.port import tiny_vgg

PACKAGE = Path(ckptkit.__file__).parent
TF_MODULES = {"tensorflow", "tf_keras", "keras", "tf_slim", "ckptkit.tfcompat", "ckptkit.train"}
TF_ROOTS = {"tensorflow", "tf_keras", "keras", "tf_slim"}

# run ckptkit's main in a fresh interpreter, then report its exit code and every module loaded
PROBE = """
import json, sys
sys.argv = ["ckptkit", *json.loads(sys.argv[1])]
from ckptkit.cli import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
print("\\nPROBE " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
TENSORS = {"net/w": np.ones((2, 3), np.float32), "net/b": np.zeros(3, np.float32),
           "global_step": np.array(1, np.int64)}

COMMANDS = {   # id -> (args, modules that must stay out, modules that must be in)
    "inspect": (["inspect", "{v2}"], TF_MODULES | {"h5py", "numpy"}, set()),
    "inspect-json": (["inspect", "{v2}", "--json", "--no-optimizer"],
                     TF_MODULES | {"h5py", "numpy"}, set()),
    "inspect-dir": (["inspect", "{dir}"], TF_MODULES | {"h5py", "numpy"}, set()),
    "inspect-v1": (["inspect", "{v1}"], TF_MODULES | {"h5py", "numpy"}, set()),
    # listing the commands reads the training options' choices: TF-free data of train/
    "help": (["--help"], TF_ROOTS | {"ckptkit.tfcompat", "ckptkit.train.finetune",
                                      "ckptkit.train.heads", "h5py", "numpy"},
             {"ckptkit.train.settings"}),
    # reading values needs numpy: proof that the probe sees what is loaded
    "inspect-stats": (["inspect", "{v2}", "--stats"], TF_MODULES | {"h5py"}, {"numpy"}),
    "inspect-tensor": (["inspect", "{v2}", "--tensor", "net/w"], TF_MODULES | {"h5py"},
                       {"numpy"}),
    "verify": (["verify", "{v2}"], TF_MODULES | {"h5py"}, set()),
    "diff": (["diff", "{v2}", "{v1}"], TF_MODULES | {"h5py"}, {"numpy"}),
    # a state dict for torchvision's VGG needs neither TensorFlow nor torch
    "port-torch": (["port", "{vgg}", "--net", "vgg_16", "--to", "torch", "-o", "{out}",
                    "--no-check"],
                   TF_ROOTS | {"ckptkit.tfcompat", "torch", "torchvision", "h5py"},
                   {"ckptkit.port.state_dict"}),
}


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """Every command's probe, all started at once; id -> {"code", "modules"}."""
    d, vgg = tmp_path_factory.mktemp("layers"), tmp_path_factory.mktemp("vgg")
    paths = {"v2": write_bundle(d / "model.ckpt", TENSORS).prefix, "dir": d,
             "v1": d / "model.v1", "vgg": write_bundle(vgg / "vgg.ckpt", tiny_vgg()).prefix,
             "out": vgg / "vgg.safetensors"}
    write_v1(paths["v1"], TENSORS)
    started = {
        key: subprocess.Popen(
            [sys.executable, "-c", PROBE, json.dumps([a.format(**paths) for a in args])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for key, (args, _, _) in COMMANDS.items()}
    results = {}
    for key, proc in started.items():
        out, err = proc.communicate(timeout=60)
        report = [line for line in out.splitlines() if line.startswith("PROBE ")]
        results[key] = json.loads(report[-1][len("PROBE "):]) if report else \
            {"code": None, "modules": [], "stderr": err}
    return results


def _loaded(modules, wanted):
    return sorted(m for m in modules if any(m == w or m.startswith(w + ".") for w in wanted))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_loads_no_tensorflow(probes, command):
    _, absent, present = COMMANDS[command]
    result = probes[command]
    assert result["code"] == 0, result
    assert _loaded(result["modules"], absent) == []
    assert present <= set(result["modules"])


def _tf_imports(source):
    """(line, what) of every statement that imports a TF-family module: `import x`,
    `from x import y`, importlib.import_module("x") and __import__("x"), at any depth;
    strings and comments that merely mention `import tensorflow` do not count."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if not node.level else []
        elif isinstance(node, ast.Call) and node.args and \
                isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and \
                getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):
            names = [node.args[0].value]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in TF_ROOTS]
    return found


def _outside_tf_layer():
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.name != "tfcompat.py" and "train" not in p.relative_to(PACKAGE).parts)


def test_only_tfcompat_and_train_import_tensorflow():
    """port/ imports Keras 3, which runs on JAX and PyTorch too, and nothing else of TF."""
    offenders = {str(p.relative_to(PACKAGE)): [
                     (line, name) for line, name in _tf_imports(p.read_text("utf-8"))
                     if not (name.split(".")[0] == "keras" and
                             p.relative_to(PACKAGE).parts[0] == "port")]
                 for p in _outside_tf_layer()}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) >= 10   # the walk really saw the package


@pytest.mark.parametrize("source, found", [
    ("import tensorflow as tf", [(1, "tensorflow")]),
    ("def f():\n    from tensorflow.python import pywrap_tensorflow", [(2, "tensorflow.python")]),
    ("import os, tf_slim", [(1, "tf_slim")]),
    ("importlib.import_module('tensorflow.compat.v1')", [(1, "tensorflow.compat.v1")]),
    ('"""Make `import tensorflow` work."""\n# import tensorflow', []),
    ("from . import tfcompat\nimport tensorflow_datasets_like", []),
], ids=["import", "nested-from", "tf-slim", "import-module", "docstring-comment", "lookalike"])
def test_tf_import_finder(source, found):
    """The static check finds real imports only, however they are written."""
    assert _tf_imports(source) == found


# --- the import graph ------------------------------------------------------------------------

# DESIGN.md's layers, bottom first; a unit is a module or a package of ckptkit
LAYERS = [("errors",), ("variable",), ("fileio",), ("scopes", "images"), ("formats",),
          ("zoo",), ("paths",), ("plan", "surgery", "checks", "render"), ("download", "legacy"),
          ("port",), ("tfcompat",), ("train",), ("cli",)]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name):
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path):
    """(module imported, names taken from it) of every ckptkit import in a file, at any
    depth; `from .x import y` counts as importing module x.y when y is a module."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, ()) for a in node.names if a.name.split(".")[0] == "ckptkit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ckptkit":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, ()) if _is_module(sub) else (target, (alias.name,)))
    return found


@pytest.fixture(scope="module")
def graph():
    """module -> [(imported module, names)] for every module of the package."""
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module):
    """The layer unit of a module: ckptkit.formats.npz -> formats, ckptkit.plan -> plan."""
    return module.split(".")[1] if "." in module else None


def test_every_module_has_a_layer(graph):
    assert sorted({_unit(m) for m in graph} - set(RANK) - {None}) == []


def test_imports_point_down_the_layers(graph):
    """Down only, or within one package; the package facade (ckptkit/__init__.py) is the top,
    and others take only its __version__ from it."""
    up = []
    for module, imports in graph.items():
        for target, names in imports:
            if target == "ckptkit":
                if module != "ckptkit" and set(names) != {"__version__"}:
                    up.append((module, target, names))
                continue
            if module == "ckptkit" or _unit(module) == _unit(target):
                continue
            if RANK[_unit(target)] >= RANK[_unit(module)]:
                up.append((module, target))
    assert up == []


def test_no_import_cycles(graph):
    edges = {m: sorted({t for t, _ in imports if t in graph and t != m})
             for m, imports in graph.items()}
    edges["ckptkit"] = []      # the facade: every module is under it, by Python's import rules
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in edges.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_private_names_cross_modules(graph):
    taken = [(module, target, name) for module, imports in graph.items()
             for target, names in imports for name in names
             if name.startswith("_") and not name.startswith("__") and target != module]
    assert taken == []


def test_the_graph_checks_see_real_imports(graph):
    """The walk found the package and reads relative, absolute and nested imports."""
    assert len(graph) >= 40
    assert ("ckptkit.fileio", ("write_atomic",)) in graph["ckptkit.train.rundir"]
    assert ("ckptkit.paths", ("open_checkpoint",)) in graph["ckptkit.plan"]
    assert any(t == "ckptkit.train.nets" for t, _ in graph["ckptkit.cli.plan"])


def test_a_tensorflow_command_without_tensorflow_names_the_extra(tmp_path):
    """An install without the [tf] extra: `plan --net` says what to install, in one line."""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text(
        "raise ImportError('No module named tensorflow', name='tensorflow')\n")
    prefix = write_bundle(tmp_path / "model.ckpt", TENSORS).prefix
    done = subprocess.run(
        [sys.executable, "-c", "from ckptkit.cli import main; main()", "plan", str(prefix),
         "--net", "lenet"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(blocker)})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("ckptkit: error: this needs TensorFlow and tf_slim, and tensorflow "
                           "is not installed: pip install 'ckptkit[tf]' (or 'ckptkit[gpu]')\n")
