"""The real-checkpoint corpus against oracle.json (what TF 2.21 reported), without TF.

Only the TF checkpoint cases (kind tf_checkpoint): the Keras HDF5 cases belong to
test_formats_keras_h5.py. When the corpus is absent every test here skips, saying where it
was looked for.
"""
import json
import os

import pytest

import ckptkit
from ckptkit.formats.tf_object import objects
from ckptkit.variable import numpy_dtype
from conftest import CORPUS, CORPUS_MISSING, corpus_cases

GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
NO_CORPUS = pytest.param(None, marks=pytest.mark.skip(reason=CORPUS_MISSING), id="no-corpus")


def _oracle():
    return json.loads((CORPUS / "oracle.json").read_text()) if corpus_cases() else {}


ORACLE = _oracle()
TF_CASES = [c for c in corpus_cases() if ORACLE[c]["kind"] == "tf_checkpoint"]
CHECKPOINTS = [pytest.param((case, i), id=f"{case}/{ck['prefix'] or '<empty prefix>'}")
               for case in TF_CASES for i, ck in enumerate(ORACLE[case]["checkpoints"])] \
    or [NO_CORPUS]
CASES = TF_CASES or [NO_CORPUS]


def case_dir(case):
    return str(CORPUS / case)


def prefix_path(case, prefix):
    """The path TF was given: case_dir/prefix, or case_dir + "/" for an empty prefix."""
    return os.path.join(case_dir(case), prefix) if prefix else case_dir(case) + "/"


@pytest.fixture
def checkpoint(request):
    case, i = request.param
    entry = ORACLE[case]["checkpoints"][i]
    with ckptkit.open_checkpoint(prefix_path(case, entry["prefix"])) as reader:
        yield case, entry, reader


def listing(reader):
    return sorted(({"name": v.name, "shape": list(v.shape), "dtype": v.dtype} for v in reader),
                  key=lambda t: t["name"])


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, indirect=True)
def test_listing_equals_oracle(checkpoint):
    case, entry, reader = checkpoint
    assert listing(reader) == entry["tensors"]
    assert len(reader) == entry["num_keys"]
    expected = "tf-v1" if case.startswith("v1_") else \
        "tf-object" if GRAPH_KEY in reader else "tf-v2"
    assert reader.format == expected


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, indirect=True)
def test_values_read_where_tf_read_them(checkpoint):
    case, entry, reader = checkpoint
    readable = set(reader.variables) if entry["read_all_ok"] else \
        set(entry.get("readable_keys", []))
    named = []
    for var in reader:
        if var.name in readable:
            value = reader.read(var.name)
            assert value.shape == var.shape, var.name
            assert value.dtype == numpy_dtype(var.dtype), var.name
            continue
        with pytest.raises(ckptkit.NotFound, match=r"data file .*\.data-\d{5}-of-\d{5}") as e:
            reader.read(var.name)
        missing = str(e.value).split("data file ", 1)[1].split(" ", 1)[0]
        assert not os.path.exists(missing), missing
        named.append(os.path.basename(missing))
    if not entry["read_all_ok"]:
        assert len(named) == entry["num_unreadable"]
        # TF reads in name order: its first error names the file ours names first
        assert entry["first_read_error"].split("; ")[0].endswith("/" + named[0])


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, indirect=True)
def test_problems_are_the_missing_files_only(checkpoint):
    _, entry, reader = checkpoint
    problems = list(reader.problems())
    if entry["read_all_ok"]:
        assert problems == []
    else:
        assert problems and all(p.startswith("missing data file ") for p in problems)
        assert all(not os.path.exists(p.split("missing data file ", 1)[1]) for p in problems)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, indirect=True)
def test_object_graphs_name_every_key(checkpoint):
    _, entry, reader = checkpoint
    if reader.format != "tf-object" or not entry["read_all_ok"]:
        return   # not object-based, or its graph sits in a data file that is not here
    attributes = {a.key: a for a in objects(reader)}
    assert sorted(attributes) == [n for n in reader.variables if n != GRAPH_KEY]
    for key, attr in attributes.items():
        assert "unreachable" not in attr.path and attr.path, key
        assert bool(attr.slot_of) == ("/.OPTIMIZER_SLOT/" in key), key


# --- opening the case directory itself -------------------------------------------------------

# case -> (what the directory resolves to, relative to it; "" = the empty prefix, dir + "/"),
#         why: "" (the state file names it), "moved" (state path from another machine or
#         folder, same basename here), "newest" (state names a checkpoint that is not here),
#         "scan" (no state file: the newest *.index / V1 table)
RESOLVES_TO = {
    "edge_empty_prefix_abs_state": ("", "moved"),
    "edge_empty_prefix_rl": ("", "scan"),
    "indexonly_im2txt_int32_step": ("model.ckpt-2000000", "scan"),
    "indexonly_sugyan_convolutional": ("convolutional.ckpt", "scan"),
    "indexonly_tf1_estimator_proxadagrad": ("model.ckpt-1", ""),
    "indexonly_tf1_frcnn_momentum": ("model.ckpt-74490", ""),
    "indexonly_tf1_objdet_quant": ("model.ckpt", ""),
    "indexonly_tf1_ssd_rmsprop_ema": ("model.ckpt-11262", ""),
    "indexonly_tf2_objdet_ckpt": ("ckpt-1", "newest"),
    "partial_cifar10_ema_missing_shard": ("model.ckpt-92259", ""),
    "savedmodel_tf1_half_plus_two_cpu": ("variables", "scan"),
    "savedmodel_tf1_half_plus_two_mkl": ("variables", "scan"),
    "savedmodel_tf2_half_plus_two_tf2_cpu": ("variables", "scan"),
    "savedmodel_tf2_keras_tf_text_regression": ("variables", "scan"),
    "savedmodel_tfx_keras_serving": ("variables", "scan"),
    "tf2_deepchem_ckpt": ("ckpt-1", ""),
    "v1_carnd_lenet_adam_2017": ("lenet", "scan"),
    "v1_serving_bad_half_plus_two": ("export", "moved"),
    "v1_serving_session_bundle_half_plus_two": ("export-00000-of-00001", "scan"),
    "v1_sugyan_regression_2017": ("regression.ckpt", "scan"),
    "v1_sugyan_softmax_2015": ("softmax-1000.ckpt", "moved"),
    "v2_iris_dnn_abs_checkpoint_path": ("model.ckpt-8000", "moved"),
    "v2_pos_rnn_adam": ("model.ckpt", ""),
    "v2_sugyan_regression": ("regression.ckpt", "scan"),
    "v2_t2t_transformer_sharded": ("model.ckpt-1", ""),
    "v2_tfx2019_estimator_2shards": ("model.ckpt-10000", ""),
    "v2_tfx_estimator_chicago_taxi": ("model.ckpt-1000", ""),
}


@pytest.mark.parametrize("case", CASES)
def test_case_directory_resolves(case):
    assert case in RESOLVES_TO, f"new corpus case {case}: add where its directory resolves"
    relative, why = RESOLVES_TO[case]
    state = ORACLE[case]["checkpoint_state"]
    assert (state is not None) == (why != "scan")
    if state and state["tf_latest_checkpoint"] is not None:   # TF resolved it too: agree
        assert relative == state["tf_latest_checkpoint"]
    with ckptkit.open_checkpoint(case_dir(case)) as reader:
        assert reader.path == prefix_path(case, relative)
        note = reader.note
        listed = listing(reader)
    if why in ("", "scan"):
        assert note == ""
    else:
        named = state["model_checkpoint_path"]
        assert repr(named) in note
        assert reader.path in note
        assert ("in this directory" if why == "moved" else "which is not here") in note
        if why == "newest":
            assert "newest" in note
    entry = next(c for c in ORACLE[case]["checkpoints"] if c["prefix"] == relative)
    assert listed == entry["tensors"]
