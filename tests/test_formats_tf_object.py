"""TF2 object-based checkpoints (tf.train.Checkpoint, eager) read by ckptkit, compared with TF.

The checkpoint is written once, in a subprocess (eager mode; this process has TF in graph mode
through ckptkit.tfcompat): a tf.Module with a tf_keras Dense layer, plain variables and a list,
a tf_keras Sequential, and a legacy Adam optimizer after one apply_gradients step, so the
optimizer has slot variables (`.OPTIMIZER_SLOT` keys); next to it a CheckpointManager train
dir, a SavedModel and a checkpoint written with MaxShardSizePolicy (tensors cut into slices
over several data files). All of it needs TF, so all is marked tf.
"""
import os

import numpy as np
import pytest

import ckptkit
from ckptkit.formats.tf_object import objects
from helpers.tf_factories import assert_matches_tf, assert_same_value, save_tf2

pytestmark = pytest.mark.tf

VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@pytest.fixture(scope="module")
def tf2_ckpt(tmp_path_factory):
    return save_tf2(tmp_path_factory.mktemp("tf2"))


@pytest.fixture(scope="module")
def attributes(tf2_ckpt):
    with ckptkit.open_checkpoint(tf2_ckpt) as reader:
        return {a.key: a for a in objects(reader)}


def test_keys_and_values_match_tf(tf2_ckpt, tf):
    with ckptkit.open_checkpoint(tf2_ckpt) as reader:
        assert reader.format == "tf-object"
        assert_matches_tf(reader, tf.train.load_checkpoint(tf2_ckpt))


def test_object_graph_decodes_as_tf_decodes_it(tf2_ckpt):
    """Children, attributes and slot variables of every node equal TF's own parse."""
    from tensorflow.python.checkpoint.checkpoint import object_metadata

    from ckptkit.formats.protos import OBJECT_GRAPH, decode

    theirs = object_metadata(tf2_ckpt)
    with ckptkit.open_checkpoint(tf2_ckpt) as reader:
        ours = decode(reader.read(GRAPH_KEY)[()], OBJECT_GRAPH)["nodes"]
    assert len(ours) == len(theirs.nodes)
    for node, proto in zip(ours, theirs.nodes):
        assert [(c.get("node_id", 0), c.get("local_name", "")) for c in node.get("children", [])] \
            == [(c.node_id, c.local_name) for c in proto.children]
        assert [(a.get("name", ""), a.get("full_name", ""), a.get("checkpoint_key", ""))
                for a in node.get("attributes", [])] \
            == [(a.name, a.full_name, a.checkpoint_key) for a in proto.attributes]
        assert [(s.get("original_variable_node_id", 0), s.get("slot_name", ""),
                 s.get("slot_variable_node_id", 0)) for s in node.get("slot_variables", [])] \
            == [(s.original_variable_node_id, s.slot_name, s.slot_variable_node_id)
                for s in proto.slot_variables]


def test_every_variable_key_has_one_attribute(tf2_ckpt, attributes):
    with ckptkit.open_checkpoint(tf2_ckpt) as reader:
        keys = [k for k in reader.variables if k != GRAPH_KEY]
    assert all(k.endswith(VALUE) for k in keys)
    assert sorted(attributes) == keys
    assert not [a for a in attributes.values() if "unreachable" in a.path or "?" in a.path]


PATHS = {
    # bundle key: (object path, TF1-style full name, slot_of)
    "model/dense/kernel" + VALUE: ("model/dense/kernel", "kernel", ""),
    "model/dense/bias" + VALUE: ("model/dense/bias", "bias", ""),
    "model/scale" + VALUE: ("model/scale", "scale", ""),
    "model/table/1" + VALUE: ("model/table/1", "Variable", ""),
    "model/step" + VALUE: ("model/step", "Variable", ""),
    "seq/layer_with_weights-1/kernel" + VALUE:
        ("seq/layer_with_weights-1/kernel", "dense_1/kernel", ""),
    "optimizer/iter" + VALUE: ("optimizer/iter", "Adam/iter", ""),
    "save_counter" + VALUE: ("save_counter", "save_counter", ""),
    "model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m" + VALUE:
        ("optimizer/m[model/dense/kernel]", "Adam/kernel/m", "m of model/dense/kernel"),
    "model/scale/.OPTIMIZER_SLOT/optimizer/v" + VALUE:
        ("optimizer/v[model/scale]", "Adam/scale/v", "v of model/scale"),
    "seq/layer_with_weights-0/bias/.OPTIMIZER_SLOT/optimizer/m" + VALUE:
        ("optimizer/m[seq/layer_with_weights-0/bias]", "Adam/dense/bias/m",
         "m of seq/layer_with_weights-0/bias"),
}


@pytest.mark.parametrize("key", PATHS)
def test_attribute_paths(attributes, key):
    attr = attributes[key]
    assert (attr.path, attr.full_name, attr.slot_of) == PATHS[key]


def test_slot_keys_and_only_they_have_slot_of(attributes):
    slots = {k for k in attributes if "/.OPTIMIZER_SLOT/" in k}
    assert len(slots) == 2 * 7   # m and v of kernel, bias, scale and 4 Sequential variables
    for key, attr in attributes.items():
        if key in slots:
            variable, rest = key.split("/.OPTIMIZER_SLOT/optimizer/")
            assert attr.slot_of == f"{rest[:-len(VALUE)]} of {variable}"
        else:
            assert attr.slot_of == ""
            assert attr.path == key[:-len(VALUE)]   # plain names: the path is the key's


# --- the same writer's other outputs ---------------------------------------------------------

def test_checkpoint_manager_dir_resolves_as_tf_resolves_it(tf2_ckpt, tf):
    managed = os.path.join(os.path.dirname(tf2_ckpt), "managed")
    with ckptkit.open_checkpoint(managed) as reader:
        assert reader.path == tf.train.latest_checkpoint(managed) == \
            os.path.join(managed, "ckpt-3")
        assert reader.note == ""
        assert_matches_tf(reader, tf.train.load_checkpoint(reader.path))


def test_saved_model_dir_reads_its_variables(tf2_ckpt, tf):
    saved = os.path.join(os.path.dirname(tf2_ckpt), "saved_model")
    with ckptkit.open_checkpoint(saved) as reader:
        assert reader.path == os.path.join(saved, "variables", "variables")
        assert reader.format == "tf-object"
        assert_matches_tf(reader, tf.train.load_checkpoint(reader.path))
        assert "model/dense/kernel" not in {a.path for a in objects(reader)}   # root is net
        assert {a.path for a in objects(reader)} >= {"dense/kernel", "scale", "table/1"}


def test_max_shard_size_policy_slices_and_shards(tf2_ckpt, tf):
    """TF2's MaxShardSizePolicy cuts plain (not partitioned) tensors into irregular slices
    over several data files; they read back whole."""
    prefix = os.path.join(os.path.dirname(tf2_ckpt), "split", "m")
    big, strings = "big" + VALUE, "s" + VALUE
    oracle = tf.train.load_checkpoint(prefix)
    with ckptkit.open_checkpoint(prefix) as reader:
        assert reader.num_shards > 1 and len(reader.variables[big].slices) > 1
        assert_matches_tf(reader, oracle, values=False)
        assert_same_value(reader.read(big), oracle.get_tensor(big))
        assert_same_value(reader.read(big), np.arange(400, dtype=np.float32).reshape(20, 20))
        assert_same_value(reader.read(strings), np.array([b"abc", b"\x00\xff"] * 15, object))
        assert list(reader.problems()) == []
