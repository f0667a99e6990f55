"""plan.plan_restore: which checkpoint tensors a model takes, which it cannot, and why.

Names are tf-slim's: resnet_v1_50 (267 variables) and a trimmed inception_v3, generated here
with their real shapes; checkpoints add Adam slots, beta powers, global_step and EMA shadows.
"""
import json
import subprocess
import sys
import time
from math import prod

import pytest

from ckptkit.errors import PlanError
from ckptkit.plan import CLASSIFIER, EMA_SUFFIX, Mismatch, ModelVar, Restore, RestorePlan, plan_restore
from ckptkit.scopes import role
from ckptkit.variable import ITEMSIZE, Variable

# --- slim-like model variables ---------------------------------------------------------------


def _conv(out, scope, k, cin, cout, gamma=True, prefix=""):
    """A slim conv2d + batch_norm: weights, then BatchNorm beta/gamma/moving statistics."""
    scope = prefix + scope
    out.append(ModelVar(f"{scope}/weights", (k, k, cin, cout), "float32"))
    for p in ("beta", "gamma") if gamma else ("beta",):
        out.append(ModelVar(f"{scope}/BatchNorm/{p}", (cout,), "float32"))
    for p in ("moving_mean", "moving_variance"):
        out.append(ModelVar(f"{scope}/BatchNorm/{p}", (cout,), "float32", trainable=False))


def _head(out, scope, cin, classes, prefix=""):
    out.append(ModelVar(f"{prefix}{scope}/weights", (1, 1, cin, classes), "float32"))
    out.append(ModelVar(f"{prefix}{scope}/biases", (classes,), "float32"))


def resnet_v1_50(classes=1000, prefix=""):
    """The 267 variables of slim's resnet_v1_50, in creation order."""
    out = []
    net = "resnet_v1_50"
    _conv(out, f"{net}/conv1", 7, 3, 64, prefix=prefix)
    cin = 64
    for b, (units, depth) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)], 1):
        for u in range(1, units + 1):
            unit = f"{net}/block{b}/unit_{u}/bottleneck_v1"
            if u == 1:
                _conv(out, f"{unit}/shortcut", 1, cin, depth * 4, prefix=prefix)
            _conv(out, f"{unit}/conv1", 1, cin, depth, prefix=prefix)
            _conv(out, f"{unit}/conv2", 3, depth, depth, prefix=prefix)
            _conv(out, f"{unit}/conv3", 1, depth, depth * 4, prefix=prefix)
            cin = depth * 4
    _head(out, f"{net}/logits", 2048, classes, prefix=prefix)
    return out


def inception_v3(classes=1001):
    """A trimmed slim inception_v3 (no BatchNorm gamma, as slim builds it): stem, three
    Mixed_5 blocks, Mixed_6a, AuxLogits and Logits heads."""
    out = []
    net = "InceptionV3"
    _conv(out, f"{net}/Conv2d_1a_3x3", 3, 3, 32, gamma=False)
    _conv(out, f"{net}/Conv2d_2a_3x3", 3, 32, 32, gamma=False)
    for mixed, cin in (("Mixed_5b", 192), ("Mixed_5c", 256), ("Mixed_5d", 288)):
        _conv(out, f"{net}/{mixed}/Branch_0/Conv2d_0a_1x1", 1, cin, 64, gamma=False)
        _conv(out, f"{net}/{mixed}/Branch_1/Conv2d_0b_5x5", 5, 48, 64, gamma=False)
    _conv(out, f"{net}/Mixed_6a/Branch_0/Conv2d_1a_1x1", 3, 288, 384, gamma=False)
    _conv(out, f"{net}/AuxLogits/Conv2d_1b_1x1", 1, 768, 128, gamma=False)
    _conv(out, f"{net}/AuxLogits/Conv2d_2a_5x5", 5, 128, 768, gamma=False)
    _head(out, f"{net}/AuxLogits/Conv2d_2b_1x1", 768, classes)
    _head(out, f"{net}/Logits/Conv2d_1c_1x1", 2048, classes)
    return out


def checkpoint(model_vars, *, adam=False, ema=False, step=True, prefix=""):
    """Variables of a checkpoint saved from `model_vars` by a slim training run, name-sorted."""
    out = []

    def var(name, shape, dtype="float32"):
        n = 1
        for d in shape:
            n *= d
        out.append(Variable(prefix + name, tuple(shape), dtype, n * ITEMSIZE[dtype]))

    for m in model_vars:
        var(m.name, m.shape, m.dtype)
        if m.trainable and ema:
            var(m.name + EMA_SUFFIX, m.shape, m.dtype)
        if m.trainable and adam:
            var(m.name + "/Adam", m.shape, m.dtype)
            var(m.name + "/Adam_1", m.shape, m.dtype)
    if adam:
        var("beta1_power", ())
        var("beta2_power", ())
    if step:
        var("global_step", (), "int64")
    return sorted(out, key=lambda v: v.name)


def restored(plan):
    return [r.model for r in plan.restore]


def by_role(plan):
    counts = {}
    for _, r in plan.unused:
        counts[r] = counts.get(r, 0) + 1
    return counts


RESNET = resnet_v1_50()
RESNET_CKPT = checkpoint(RESNET, adam=True)
LOGITS = ["resnet_v1_50/logits/weights", "resnet_v1_50/logits/biases"]
INCEPTION = inception_v3()
INCEPTION_CKPT = checkpoint(INCEPTION, adam=True, ema=True)
INC_LOGITS = ["InceptionV3/Logits/Conv2d_1c_1x1/weights", "InceptionV3/Logits/Conv2d_1c_1x1/biases"]
INC_AUX = [m.name for m in INCEPTION if "/AuxLogits/" in m.name]


def test_model_generators_are_slim_sized():
    assert len(RESNET) == 267
    assert sum(m.trainable for m in RESNET) == 161       # weights, beta, gamma x53 + logits
    assert len({m.name for m in RESNET}) == 267
    assert all(role(v.name) == "model" for v in RESNET)


# --- the common case: new head, backbone restored --------------------------------------------

def test_resnet_new_head():
    plan = plan_restore(RESNET_CKPT, resnet_v1_50(5), exclude=["resnet_v1_50/logits"])
    assert len(plan.restore) == 265
    assert restored(plan) == [m.name for m in RESNET if m.name not in LOGITS]  # model order
    assert all(r.ckpt == r.model and r.offset == 0 for r in plan.restore)
    assert plan.excluded == [(n, "resnet_v1_50/logits") for n in LOGITS]
    assert plan.missing == plan.mismatched == plan.skipped == []
    # the old head is unused as a model weight; slots and step are unused with their roles
    assert [n for n, r in plan.unused if r == "model"] == sorted(LOGITS)
    assert by_role(plan) == {"model": 2, "optimizer": 161 * 2 + 2, "step": 1}
    assert plan.trainable == [m.name for m in RESNET if m.trainable]


@pytest.mark.parametrize("patterns, excluded", [
    (["Logits"], INC_LOGITS),                                 # never AuxLogits
    (["Logits/"], INC_LOGITS),                                # a trailing slash is ignored
    (["InceptionV3/Logits"], INC_LOGITS),
    (["Logits", "AuxLogits"], INC_LOGITS + INC_AUX),
    (["re:Logits/"], INC_AUX + INC_LOGITS),                   # a regex searches anywhere
    (["Conv2d_1c_1x1"], INC_LOGITS),                          # a component deep in the name
])
def test_exclude_whole_components(patterns, excluded):
    plan = plan_restore(INCEPTION_CKPT, inception_v3(5), exclude=patterns)
    assert sorted(n for n, _ in plan.excluded) == sorted(excluded)
    heads = set(INC_LOGITS) | {n for n in INC_AUX if "Conv2d_2b_1x1" in n}
    assert {m.model for m in plan.mismatched} == heads - set(excluded)   # 5 classes vs 1001
    assert len(plan.restore) == len(INCEPTION) - len(excluded) - len(plan.mismatched)


def test_excluded_records_the_first_pattern_that_matched():
    plan = plan_restore(INCEPTION_CKPT, inception_v3(5), exclude=["AuxLogits", "Conv2d_2b_1x1",
                                                                  "Logits"])
    got = dict(plan.excluded)
    assert got["InceptionV3/AuxLogits/Conv2d_2b_1x1/weights"] == "AuxLogits"
    assert got["InceptionV3/Logits/Conv2d_1c_1x1/weights"] == "Logits"


def test_mismatched_head_is_reported_not_restored():
    plan = plan_restore(RESNET_CKPT, resnet_v1_50(5))
    assert len(plan.restore) == 265
    assert plan.mismatched == [
        Mismatch("resnet_v1_50/logits/weights", "resnet_v1_50/logits/weights",
                 (1, 1, 2048, 5), (1, 1, 2048, 1000), "float32", "float32"),
        Mismatch("resnet_v1_50/logits/biases", "resnet_v1_50/logits/biases",
                 (5,), (1000,), "float32", "float32")]
    # reported once: a mismatched tensor is not also unused
    assert by_role(plan) == {"optimizer": 324, "step": 1}
    with pytest.raises(PlanError, match=r"^2 model variables cannot be restored: "
                       r"resnet_v1_50/logits/weights: model \[1,1,2048,5\] float32, checkpoint "
                       r"\[1,1,2048,1000\] float32 \(--exclude resnet_v1_50/logits or "
                       r"--allow-mismatch\); resnet_v1_50/logits/biases: model \[5\] float32, "
                       r"checkpoint \[1000\] float32 \(--exclude resnet_v1_50/logits or "
                       r"--allow-mismatch\)$"):
        plan.check()


def test_allow_mismatch_skips_and_reports():
    plan = plan_restore(RESNET_CKPT, resnet_v1_50(5), allow_mismatch=True, strict=True)
    assert plan.mismatched == []
    assert [m.model for m in plan.skipped] == LOGITS
    assert len(plan.restore) == 265
    plan.check(strict=True)                     # accepted: nothing left to complain about


def test_strict_names_variable_shapes_and_flag():
    with pytest.raises(PlanError, match=r"^2 model variables cannot be restored: "
                       r"resnet_v1_50/logits/weights: model \[1,1,2048,5\] float32, checkpoint "
                       r"\[1,1,2048,1000\] float32 \(--exclude resnet_v1_50/logits or "
                       r"--allow-mismatch\); resnet_v1_50/logits/biases: .*"):
        plan_restore(RESNET_CKPT, resnet_v1_50(5), strict=True)
    # strict also fails on missing variables, naming the exclude that would settle them
    model = RESNET + [ModelVar("Logits/hidden/weights", (2048, 256), "float32")]
    with pytest.raises(PlanError, match=r"^1 model variable cannot be restored \(--strict\): "
                       r"Logits/hidden/weights: not in the checkpoint "
                       r"\(--exclude Logits/hidden\)$"):
        plan_restore(RESNET_CKPT, model, strict=True)
    plan = plan_restore(RESNET_CKPT, model)      # not strict: missing is reported
    assert plan.missing == ["Logits/hidden/weights"]
    plan.check()
    # an exclude covers it
    plan = plan_restore(RESNET_CKPT, model, exclude=["Logits"], strict=True)
    assert plan.missing == [] and plan.excluded == [("Logits/hidden/weights", "Logits")]


def test_strict_message_is_bounded():
    model = [ModelVar(f"new/v{i}", (1,), "float32") for i in range(30)] + RESNET
    with pytest.raises(PlanError, match=r"^30 model variables cannot be restored \(--strict\): "
                       r"new/v0: .*; new/v9: not in the checkpoint \(--exclude new\); "
                       r"\.\.\. and 20 more$"):
        plan_restore(RESNET_CKPT, model, strict=True)


def test_dtype_mismatch():
    model = [ModelVar(m.name, m.shape, "float16" if m.name.endswith("biases") else m.dtype)
             for m in RESNET]
    plan = plan_restore(RESNET_CKPT, model)
    assert plan.mismatched == [Mismatch("resnet_v1_50/logits/biases", "resnet_v1_50/logits/biases",
                                        (1000,), (1000,), "float16", "float32")]
    # TF1 reference dtypes compare as their value dtype
    plan = plan_restore(RESNET_CKPT, [ModelVar(m.name, m.shape, "float32_ref") for m in RESNET])
    assert len(plan.restore) == 267


# --- pattern errors (pain point 1) -----------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"exclude": ["Logitz"]},
     "no variable matches scope 'Logitz'; closest: InceptionV3/Logits, InceptionV3/AuxLogits"),
    ({"exclude": ["Logits", "logits"]},
     "no variable matches scope 'logits'; closest: InceptionV3/Logits, InceptionV3/AuxLogits"),
    ({"include": ["InceptionV3/Mixed_5"]},
     "no variable matches scope 'InceptionV3/Mixed_5'; closest: InceptionV3/Mixed_5b, "
     "InceptionV3/Mixed_5c, InceptionV3/Mixed_5d"),
    ({"exclude": ["/Logits"]},                  # anchored: InceptionV3/Logits is not top-level
     "no variable matches scope '/Logits'; closest: InceptionV3/Logits, InceptionV3/AuxLogits"),
    ({"train": ["AuxLogitz"]},
     "no variable matches scope 'AuxLogitz'; closest: InceptionV3/AuxLogits, "
     "InceptionV3/Logits"),
    ({"train_from": "InceptionV3/Mixed_7"},
     "no variable matches scope 'InceptionV3/Mixed_7'; closest: InceptionV3/Mixed_5b, "
     "InceptionV3/Mixed_5c, InceptionV3/Mixed_5d"),
    ({"exclude": ["zzzz"]}, "no variable matches scope 'zzzz'"),
    ({"exclude": ["re:Logits("]},
     "invalid regular expression 're:Logits(': missing ), unterminated subpattern at "
     "position 6"),
    ({"exclude": ["re:^Logits/"]}, "no variable matches scope 're:^Logits/'; closest: "
                                   "InceptionV3/Logits, InceptionV3/AuxLogits"),
    ({"exclude": ["/"]}, "scope pattern '/' names no scope"),
    ({"exclude": [""]}, "empty scope pattern ''"),
    ({"train": ["moving_mean"]}, "no trainable variable matches scope 'moving_mean' (it "
                                 "matches only non-trainable ones such as BatchNorm statistics)"),
    ({"train": ["Logits"], "train_from": "InceptionV3/Mixed_6a"},
     "--train and --train-from cannot be combined; give one of them"),
    ({"match": "fuzzy"}, "unknown match mode 'fuzzy'; use one of component, prefix, suffix"),
    ({"label_offset": -1}, "label offset must be a whole number >= 0, not -1"),
])
def test_pattern_errors(kwargs, message):
    with pytest.raises(PlanError) as e:
        plan_restore(INCEPTION_CKPT, inception_v3(5), **kwargs)
    assert str(e.value) == message


def test_include_restricts():
    plan = plan_restore(INCEPTION_CKPT, INCEPTION, include=["Mixed_5b", "Mixed_5c"])
    assert restored(plan) == [m.name for m in INCEPTION if "/Mixed_5b/" in m.name
                              or "/Mixed_5c/" in m.name]
    assert dict(plan.excluded)["InceptionV3/Mixed_5d/Branch_0/Conv2d_0a_1x1/weights"] == \
        "(not included)"
    assert len(plan.excluded) + len(plan.restore) == len(INCEPTION)
    # an exclude inside the included set wins and is named
    plan = plan_restore(INCEPTION_CKPT, INCEPTION, include=["Mixed_5b"], exclude=["Branch_1"])
    assert dict(plan.excluded)["InceptionV3/Mixed_5b/Branch_1/Conv2d_0b_5x5/weights"] == \
        "Branch_1"


# --- --match prefix: tf-slim's raw startswith --------------------------------------------------

def test_prefix_is_slims_startswith():
    model = inception_v3(5)
    slim_exclude = ["InceptionV3/Logits", "InceptionV3/AuxLogits"]   # the flowers recipe
    plan = plan_restore(INCEPTION_CKPT, model, exclude=slim_exclude, match="prefix")
    slim = [m.name for m in model if not any(m.name.startswith(e) for e in slim_exclude)]
    assert restored(plan) == slim
    # raw prefixes cut through components, as slim's do
    plan = plan_restore(INCEPTION_CKPT, INCEPTION, exclude=["InceptionV3/Mixed_5"],
                        match="prefix")
    assert {n.split("/")[1] for n, _ in plan.excluded} == {"Mixed_5b", "Mixed_5c", "Mixed_5d"}


def test_prefix_logits_does_not_exclude_inception_logits():
    """slim's `Logits` only matches a top-level scope; ours matches the component anywhere."""
    model = INCEPTION + [ModelVar("Logits/weights", (2048, 5), "float32"),
                         ModelVar("Logits/biases", (5,), "float32")]
    prefix = plan_restore(INCEPTION_CKPT, model, exclude=["Logits"], match="prefix")
    assert [n for n, _ in prefix.excluded] == ["Logits/weights", "Logits/biases"]
    assert set(INC_LOGITS) <= set(restored(prefix))
    component = plan_restore(INCEPTION_CKPT, model, exclude=["Logits"])
    assert [n for n, _ in component.excluded] == INC_LOGITS + ["Logits/weights", "Logits/biases"]
    anchored = plan_restore(INCEPTION_CKPT, model, exclude=["/Logits"])
    assert [n for n, _ in anchored.excluded] == [n for n, _ in prefix.excluded]
    # on the plain network, slim's pattern matches nothing: an error, not a silent no-op
    with pytest.raises(PlanError, match=r"^no variable matches scope 'Logits'; closest: "
                                        r"InceptionV3/Logits, InceptionV3/AuxLogits$"):
        plan_restore(INCEPTION_CKPT, inception_v3(5), exclude=["Logits"], match="prefix")


# --- training state is never restored (pain point 2) -------------------------------------------

def test_slots_step_and_ema_are_never_restored():
    ckpt = checkpoint(RESNET, adam=True, ema=True)
    plan = plan_restore(ckpt, RESNET)
    assert len(plan.restore) == 267 and all(role(r.ckpt) == "model" for r in plan.restore)
    assert by_role(plan) == {"optimizer": 324, "ema": 161, "step": 1}
    # even when the model list carries training state of its own (a train graph's globals)
    model = RESNET + [ModelVar("global_step", (), "int64", False),
                      ModelVar("resnet_v1_50/logits/biases/Adam", (1000,), "float32", False),
                      ModelVar("beta1_power", (), "float32", False)]
    plan = plan_restore(ckpt, model, strict=True)
    assert len(plan.restore) == 267
    assert "global_step" not in plan.trainable + plan.missing + restored(plan)


def test_object_graph_is_meta():
    ckpt = RESNET_CKPT + [Variable("_CHECKPOINTABLE_OBJECT_GRAPH", (), "string", 10)]
    plan = plan_restore(ckpt, RESNET)
    assert ("_CHECKPOINTABLE_OBJECT_GRAPH", "meta") in plan.unused


# --- EMA (pain point 4) ----------------------------------------------------------------------

def test_use_moving_averages_restores_shadows():
    plan = plan_restore(INCEPTION_CKPT, INCEPTION, use_moving_averages=True)
    by_model = {r.model: r.ckpt for r in plan.restore}
    assert len(by_model) == len(INCEPTION)
    for m in INCEPTION:   # trainable variables have shadows; moving statistics fall back
        assert by_model[m.name] == (m.name + EMA_SUFFIX if m.trainable else m.name)
    # the raw values the shadows replace are unused model weights; no shadow is left over
    roles = by_role(plan)
    assert roles["model"] == sum(m.trainable for m in INCEPTION) and "ema" not in roles
    json_restore = plan.to_json()["restore"]
    assert {"model": "InceptionV3/Logits/Conv2d_1c_1x1/biases",
            "ckpt": "InceptionV3/Logits/Conv2d_1c_1x1/biases" + EMA_SUFFIX} in json_restore
    assert "InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_mean" in json_restore
    # without the flag the shadows are unused, labelled as EMA
    plan = plan_restore(INCEPTION_CKPT, INCEPTION)
    assert all(r.ckpt == r.model for r in plan.restore)
    assert by_role(plan)["ema"] == sum(m.trainable for m in INCEPTION)


def test_use_moving_averages_with_only_shadows_and_no_shadows():
    only_shadows = [v for v in INCEPTION_CKPT if v.name.endswith(EMA_SUFFIX)]
    trainable = [m for m in INCEPTION if m.trainable]
    plan = plan_restore(only_shadows, trainable, use_moving_averages=True, strict=True)
    assert all(r.ckpt == r.model + EMA_SUFFIX for r in plan.restore)
    plan = plan_restore(checkpoint(INCEPTION), INCEPTION, use_moving_averages=True)
    assert all(r.ckpt == r.model for r in plan.restore)     # falls back to the raw values


def test_ema_shadow_follows_its_tensor_through_renames():
    model = [ModelVar(m.name.replace("/weights", "/kernel"), m.shape, m.dtype, m.trainable)
             for m in RESNET]
    plan = plan_restore(checkpoint(RESNET, ema=True), model, maps=["re:/weights$=/kernel"],
                        use_moving_averages=True, strict=True)
    by_model = {r.model: r.ckpt for r in plan.restore}
    assert by_model["resnet_v1_50/conv1/kernel"] == "resnet_v1_50/conv1/weights" + EMA_SUFFIX
    assert sum(r.ckpt.endswith(EMA_SUFFIX) for r in plan.restore) == 161


# --- 1001 -> 1000 classes (pain point 5) -------------------------------------------------------

def test_label_offset_slices_background_class():
    plan = plan_restore(INCEPTION_CKPT, inception_v3(1000), label_offset=1, strict=True)
    sliced = {r.model: r for r in plan.restore if r.offset}
    assert sorted(sliced) == sorted(INC_LOGITS + ["InceptionV3/AuxLogits/Conv2d_2b_1x1/weights",
                                                  "InceptionV3/AuxLogits/Conv2d_2b_1x1/biases"])
    assert sliced[INC_LOGITS[0]] == Restore(INC_LOGITS[0], INC_LOGITS[0], (1, 1, 2048, 1000), 1)
    assert {"model": INC_LOGITS[1], "ckpt": INC_LOGITS[1], "offset": 1} in \
        plan.to_json()["restore"]
    # without the offset the heads mismatch; with it a 5-class head still mismatches
    assert len(plan_restore(INCEPTION_CKPT, inception_v3(1000)).mismatched) == 4
    assert len(plan_restore(INCEPTION_CKPT, inception_v3(5), label_offset=1).mismatched) == 4
    # a 1001-class model takes a 1001-class checkpoint unsliced
    assert not any(r.offset for r in plan_restore(INCEPTION_CKPT, INCEPTION,
                                                  label_offset=1).restore)


# --- rename rules ----------------------------------------------------------------------------

def test_map_adds_and_strips_prefixes():
    tower = resnet_v1_50(prefix="tower_0/")
    plan = plan_restore(RESNET_CKPT, tower, maps=["/=tower_0/"], strict=True)
    assert len(plan.restore) == 267
    assert plan.restore[0] == Restore("resnet_v1_50/conv1/weights",
                                      "tower_0/resnet_v1_50/conv1/weights", (7, 7, 3, 64))
    assert plan.to_json()["restore"][0] == {"model": "tower_0/resnet_v1_50/conv1/weights",
                                            "ckpt": "resnet_v1_50/conv1/weights"}
    # unused keeps the checkpoint's own names
    assert ("resnet_v1_50/conv1/weights/Adam", "optimizer") in plan.unused
    back = plan_restore(checkpoint(tower), RESNET, maps=["tower_0/=/"], strict=True)
    assert len(back.restore) == 267


@pytest.mark.parametrize("maps", [
    ["resnet_v1_50/=net/"],
    ["resnet_v1_50=net"],                                   # whole components either way
    ["re:^resnet_v1_50/=net/"],
    ["resnet_v1_50/=tmp/", "tmp/=net/"],                    # applied in order
    [("resnet_v1_50/", "net/")],
])
def test_map_renames_scopes(maps):
    model = [ModelVar("net/" + m.name.split("/", 1)[1], m.shape, m.dtype) for m in RESNET]
    plan = plan_restore(RESNET_CKPT, model, maps=maps, strict=True)
    assert len(plan.restore) == 267
    assert plan.restore[-1].ckpt == "resnet_v1_50/logits/biases"
    assert plan.restore[-1].model == "net/logits/biases"


def test_map_renames_one_tensor_and_regex_groups():
    model = [ModelVar(m.name.replace("/logits/", "/fc/"), m.shape, m.dtype) for m in RESNET]
    plan = plan_restore(RESNET_CKPT, model, maps=["resnet_v1_50/logits/weights="
                                                  "resnet_v1_50/fc/weights"])
    assert plan.missing == ["resnet_v1_50/fc/biases"]
    plan = plan_restore(RESNET_CKPT, model, maps=[r"re:^(\w+)/logits/=\1/fc/"], strict=True)
    assert len(plan.restore) == 267


@pytest.mark.parametrize("maps, message", [
    (["resnet_v2_50/=net/"], "rename rule 'resnet_v2_50/=net/' changes no checkpoint name; "
                             "closest: resnet_v1_50"),
    (["re:^tower/=net/"], "rename rule 're:^tower/=net/' changes no checkpoint name"),
    (["resnet_v1_50/=net/", "resnet_v1_50/=x/"],
     "rename rule 'resnet_v1_50/=x/' changes no checkpoint name"),
    ([r"re:/(conv\d)/=/conv/"], "rename rules map both 'resnet_v1_50/block1/unit_1/bottleneck_v1/"
                               "conv1/BatchNorm/beta' and 'resnet_v1_50/block1/unit_1/"
                               "bottleneck_v1/conv2/BatchNorm/beta' to 'resnet_v1_50/block1/"
                               "unit_1/bottleneck_v1/conv/BatchNorm/beta'"),
    (["resnet_v1_50"], "rename rule 'resnet_v1_50' is not OLD=NEW (e.g. 'old_scope/=new_scope/' "
                       "or 're:^tower_0/=')"),
    (["/=/"], "rename rule '/=/' renames nothing"),
    (["re:(=x"], "invalid rename rule 're:(=x': missing ), unterminated subpattern at "
                 "position 0"),
    ([r"re:conv=\2"], r"invalid rename rule 're:conv=\\2': invalid group reference 2 at "
                      r"position 1"),
])
def test_map_errors(maps, message):
    with pytest.raises(PlanError) as e:
        plan_restore(RESNET_CKPT, RESNET, maps=maps)
    assert str(e.value) == message


# --- --match suffix (detectron2 style) -------------------------------------------------------

def test_suffix_pairs_across_prefixes():
    # model under an extra scope
    tower = resnet_v1_50(prefix="tower_0/")
    plan = plan_restore(RESNET_CKPT, tower, match="suffix", strict=True)
    assert [(r.ckpt, r.model) for r in plan.restore] == \
        [(m.name, "tower_0/" + m.name) for m in RESNET]
    # checkpoint under an extra scope (Object Detection API feature extractors)
    ckpt = checkpoint(RESNET, adam=True, prefix="FeatureExtractor/")
    plan = plan_restore(ckpt, RESNET, match="suffix", strict=True)
    assert plan.restore[0].ckpt == "FeatureExtractor/resnet_v1_50/conv1/weights"
    assert by_role(plan) == {"optimizer": 324, "step": 1}
    # exact names beat longer and shorter candidates
    ckpt = checkpoint(RESNET) + [Variable("x/resnet_v1_50/conv1/weights", (7, 7, 3, 64),
                                          "float32", 0)]
    plan = plan_restore(ckpt, RESNET, match="suffix")
    assert plan.restore[0].ckpt == "resnet_v1_50/conv1/weights"
    assert plan.unused == [("global_step", "step"), ("x/resnet_v1_50/conv1/weights", "model")]


def test_suffix_longest_wins():
    model = [ModelVar("tower/net/conv/w", (3,), "float32"), ModelVar("net/b", (3,), "float32")]
    ckpt = [Variable("conv/w", (3,), "float32", 12), Variable("net/conv/w", (3,), "float32", 12),
            Variable("old/net/b", (3,), "float32", 12)]
    plan = plan_restore(ckpt, model, match="suffix")
    assert [(r.ckpt, r.model) for r in plan.restore] == [("net/conv/w", "tower/net/conv/w"),
                                                         ("old/net/b", "net/b")]
    assert plan.unused == [("conv/w", "model")]


@pytest.mark.parametrize("ckpt, model, message", [
    (["a/net/w", "b/net/w"], ["net/w"],
     "--match suffix: model variable 'net/w' matches both 'a/net/w' and 'b/net/w' in the "
     "checkpoint; use --map or --exclude"),
    (["net/w"], ["a/net/w", "b/net/w"],
     "--match suffix: checkpoint tensor 'net/w' matches both 'a/net/w' and 'b/net/w'; "
     "use --map or --exclude"),
])
def test_suffix_ambiguity_is_an_error(ckpt, model, message):
    with pytest.raises(PlanError) as e:
        plan_restore([Variable(n, (1,), "float32", 4) for n in ckpt],
                     [ModelVar(n, (1,), "float32") for n in model], match="suffix")
    assert str(e.value) == message


def test_suffix_patterns_match_components():
    tower = resnet_v1_50(5, prefix="tower_0/")
    plan = plan_restore(RESNET_CKPT, tower, match="suffix", exclude=["logits"], strict=True)
    assert len(plan.restore) == 265


# --- restoring nothing is an error (pain point 7) ----------------------------------------------

@pytest.mark.parametrize("ckpt, model, kwargs, message", [
    (RESNET_CKPT, resnet_v1_50(prefix="tower_0/"), {},
     "nothing to restore: none of the 267 model variables is in the checkpoint, e.g. "
     "'tower_0/resnet_v1_50/conv1/weights' (closest: 'resnet_v1_50/conv1/weights'); line the "
     "names up with --match suffix or --map OLD/=NEW/"),
    (RESNET_CKPT, RESNET, {"exclude": ["resnet_v1_50"]},
     "nothing to restore: all 267 model variables are excluded"),
    (RESNET_CKPT, [], {}, "nothing to restore: the model has no variables"),
    ([v for v in RESNET_CKPT if role(v.name) != "model"], RESNET, {},
     "nothing to restore: the checkpoint holds no model weights"),
    (RESNET_CKPT, [ModelVar("resnet_v1_50/logits/biases", (5,), "float32")],
     {"allow_mismatch": True},
     "nothing to restore: 0 missing, 1 mismatched of 1 model variable, e.g. "
     "resnet_v1_50/logits/biases: model [5] float32, checkpoint [1000] float32"),
])
def test_nothing_to_restore(ckpt, model, kwargs, message):
    with pytest.raises(PlanError) as e:
        plan_restore(ckpt, model, **kwargs)
    assert str(e.value) == message


def test_duplicate_model_variable():
    with pytest.raises(PlanError, match=r"^model variable 'resnet_v1_50/conv1/weights' is "
                                        r"listed twice$"):
        plan_restore(RESNET_CKPT, RESNET + RESNET[:1])


# --- trainable -------------------------------------------------------------------------------

def test_trainable_sets():
    model = resnet_v1_50(5)
    everything = plan_restore(RESNET_CKPT, model, exclude=["logits"])
    assert everything.trainable == [m.name for m in model if m.trainable]
    head = plan_restore(RESNET_CKPT, model, exclude=["logits"], train=["logits"])
    assert head.trainable == LOGITS
    two = plan_restore(RESNET_CKPT, model, exclude=["logits"], train=["logits", "block4"])
    assert two.trainable == [m.name for m in model if m.trainable and (
        "/block4/" in m.name or "/logits/" in m.name)]
    # train_from: the first match and every trainable variable created after it
    top = plan_restore(RESNET_CKPT, model, exclude=["logits"], train_from="resnet_v1_50/block4")
    first = next(i for i, m in enumerate(model) if "/block4/" in m.name)
    assert top.trainable == [m.name for m in model[first:] if m.trainable]
    assert top.trainable[0] == "resnet_v1_50/block4/unit_1/bottleneck_v1/shortcut/weights"
    assert top.trainable[-2:] == LOGITS
    assert not any("moving_" in n for n in top.trainable)
    # a train pattern may name BatchNorm scopes: only the trainable variables in them count
    bn = plan_restore(RESNET_CKPT, model, exclude=["logits"], train=["conv1/BatchNorm"])
    assert bn.trainable[:2] == ["resnet_v1_50/conv1/BatchNorm/beta",
                                "resnet_v1_50/conv1/BatchNorm/gamma"]
    assert bn.trainable == [m.name for m in model if m.trainable and "/conv1/BatchNorm/" in
                            m.name]       # and every unit's conv1, never moving statistics
    # prefix mode applies to train patterns too
    raw = plan_restore(RESNET_CKPT, model, exclude=["resnet_v1_50/logits"], match="prefix",
                       train=["resnet_v1_50/block4/unit_3"])
    assert raw.trainable and all("/block4/unit_3/" in n for n in raw.trainable)


@pytest.mark.parametrize("specs", [["logits=10", "resnet_v1_50=0.1"],
                                   [("resnet_v1_50", 0.1), ("resnet_v1_50/logits", 10)]])
def test_lr_multipliers_innermost_scope_wins(specs):
    """The seeds' 10x head on a 0.1x backbone; 1x variables are left out of the map."""
    model = resnet_v1_50(5)
    plan = plan_restore(RESNET_CKPT, model, exclude=["logits"], lr_mults=specs)
    assert {n: m for n, m in plan.lr_mults.items() if m == 10.0} == dict.fromkeys(LOGITS, 10.0)
    assert set(plan.lr_mults) == set(plan.trainable)
    assert all(m == 0.1 for n, m in plan.lr_mults.items() if n not in LOGITS)
    assert plan.to_json()["lr_mults"] == plan.lr_mults
    ones = plan_restore(RESNET_CKPT, model, exclude=["logits"], lr_mults=["logits=1"])
    assert ones.lr_mults == {} and "lr_mults" not in ones.to_json()


@pytest.mark.parametrize("specs, train, message", [
    (["logits"], None, r"^--lr-mult takes SCOPE=MULTIPLIER \(e\.g\. Logits=10\), not 'logits'$"),
    (["logits=ten"], None, r"not 'logits=ten'$"),
    (["logits=-1"], None, r"not 'logits=-1'$"),
    (["=10"], None, r"not '=10'$"),
    (["logitz=10"], None, r"^no variable matches scope 'logitz'; closest: resnet_v1_50/logits"),
    (["block1=0.1"], ["logits"], r"^--lr-mult 'block1' reaches no trainable variable"),
])
def test_lr_multiplier_errors(specs, train, message):
    with pytest.raises(PlanError, match=message):
        plan_restore(RESNET_CKPT, resnet_v1_50(5), exclude=["logits"], train=train,
                     lr_mults=specs)


def _block(name):
    """The layer a test expects: the net's block, or a scope of its own beside the net."""
    parts = name.split("/")
    return "/".join(parts[:2]) if parts[0] in ("resnet_v1_50", "InceptionV3") else parts[0]


@pytest.mark.parametrize("model, blocks", [
    (resnet_v1_50(5), ["resnet_v1_50/conv1", "resnet_v1_50/block1", "resnet_v1_50/block2",
                       "resnet_v1_50/block3", "resnet_v1_50/block4", "resnet_v1_50/logits"]),
    ([m for m in resnet_v1_50(5) if "/logits/" not in m.name] + [    # a new head, beside
        ModelVar("Head/fc_1/weights", (2048, 8), "float32"),
        ModelVar("Head/logits/weights", (8, 5), "float32")],
     ["resnet_v1_50/conv1", "resnet_v1_50/block1", "resnet_v1_50/block2",
      "resnet_v1_50/block3", "resnet_v1_50/block4", "Head"]),
    (inception_v3(), ["InceptionV3/Conv2d_1a_3x3", "InceptionV3/Conv2d_2a_3x3",
                      "InceptionV3/Mixed_5b", "InceptionV3/Mixed_5c", "InceptionV3/Mixed_5d",
                      "InceptionV3/Mixed_6a", "InceptionV3/AuxLogits", "InceptionV3/Logits"]),
    ([ModelVar(n, (1,), "float32") for n in (    # NASNet's scopes: no net scope around them
        "conv0/weights", "cell_stem_0/1x1/weights", "cell_0/comb_iter_0/left/weights",
        "cell_0/comb_iter_1/left/weights", "final_layer/FC/weights")],
     ["conv0", "cell_stem_0", "cell_0", "final_layer"]),
])
def test_layer_decay_scales_each_block_by_the_blocks_above(model, blocks):
    """Blocks in creation order; the last at the full rate (left out of the map), each
    earlier one at 0.5 times the next, whatever the block's depth of scopes."""
    plan = plan_restore(checkpoint(model), model, layer_decay=0.5)
    assert set(plan.trainable) == {m.name for m in model if m.trainable}
    assert list(dict.fromkeys(_block(n) for n in plan.trainable)) == blocks
    below = {block: len(blocks) - 1 - i for i, block in enumerate(blocks)}
    assert plan.lr_mults == {n: 0.5 ** below[_block(n)] for n in plan.trainable
                             if _block(n) != blocks[-1]}


def test_layer_decay_counts_trained_blocks_and_multiplies_lr_mult():
    """Frozen blocks are no layers: block4 trains at 0.5 under the head; Logits=10 is
    multiplied in; a factor of 1 is no decay."""
    model = resnet_v1_50(5)
    plan = plan_restore(RESNET_CKPT, model, exclude=["logits"], layer_decay=0.5,
                        train_from="resnet_v1_50/block4", lr_mults=["logits=10"])
    assert plan.lr_mults == {**{n: 0.5 for n in plan.trainable if "/block4/" in n},
                             **dict.fromkeys(LOGITS, 10.0)}
    same = plan_restore(RESNET_CKPT, model, exclude=["logits"], layer_decay=1,
                        lr_mults=["logits=10"])
    assert same.lr_mults == dict.fromkeys(LOGITS, 10.0)


@pytest.mark.parametrize("decay", [0, -0.5, 1.5, "0.5", float("nan")])
def test_layer_decay_refuses_a_factor_outside_0_1(decay):
    with pytest.raises(PlanError, match=r"^--layer-decay takes a factor in \(0, 1\], not "):
        plan_restore(RESNET_CKPT, resnet_v1_50(5), exclude=["logits"], layer_decay=decay)


# --- records drive the defaults: the classifier a new head replaces ---------------------------

NEW_HEAD = [m for m in RESNET if "/logits/" not in m.name] + \
    [ModelVar("Logits/weights", (1, 1, 2048, 5), "float32"),
     ModelVar("Logits/biases", (5,), "float32")]


def _section(plan, title):
    return next(s for s in plan.sections() if s.title == title)


def test_a_new_head_keeps_the_net_s_classifier_out_by_default():
    ckpt = checkpoint(RESNET, adam=True, ema=True)
    plan = plan_restore(ckpt, NEW_HEAD, classifier=["resnet_v1_50/logits"])
    shadows = [n + EMA_SUFFIX for n in LOGITS]
    assert sorted(plan.dropped) == sorted((n, CLASSIFIER) for n in LOGITS + shadows)
    assert plan.to_json()["excluded_tensors"] == [n for n, _ in plan.dropped]
    unused = {n: r for n, r in plan.unused}
    assert not set(LOGITS + shadows) & set(unused)
    assert unused[LOGITS[0] + "/Adam"] == "optimizer"       # its slots stay expected leftovers
    assert plan.missing == ["Logits/weights", "Logits/biases"] and len(plan.restore) == 265
    rows = _section(plan, "excluded: checkpoint tensors").rows
    assert ("", LOGITS[0], f"[1,1,2048,1000] by {CLASSIFIER}") in rows


def test_a_classifier_the_checkpoint_lacks_is_no_error():
    ckpt = [v for v in checkpoint(RESNET) if "/logits/" not in v.name]
    plan = plan_restore(ckpt, NEW_HEAD, classifier=["resnet_v1_50/logits"])
    assert plan.dropped == [] and len(plan.restore) == 265


@pytest.mark.parametrize("text", ["resnet_v1_50/logits", "logits", "re:^resnet_v1_50/logits/"])
def test_an_exclude_only_the_checkpoint_matches_keeps_those_tensors_out(text):
    """slim's own flag (`--checkpoint_exclude_scopes=resnet_v1_50/logits`) under a new head:
    no model variable is there, the checkpoint's tensors are, and they stay out."""
    plan = plan_restore(RESNET_CKPT, NEW_HEAD, exclude=[text])
    assert sorted(plan.dropped) == sorted((n, text) for n in LOGITS)
    assert plan.excluded == [] and len(plan.restore) == 265


def test_a_checkpoint_side_exclude_is_applied_before_renames_pair_names():
    model = resnet_v1_50(1000, prefix="tower/")
    plan = plan_restore(RESNET_CKPT, model, maps=["/=tower/"],
                        exclude=["re:^resnet_v1_50/logits/"])
    assert sorted(n for n, _ in plan.dropped) == sorted(LOGITS)
    assert plan.missing == ["tower/" + n for n in LOGITS]


def test_an_exclude_matching_nothing_anywhere_suggests_checkpoint_scopes_too():
    with pytest.raises(PlanError, match=r"^no variable matches scope 'resnet_v1_50/logitz'; "
                                        r"closest: resnet_v1_50/logits"):
        plan_restore(RESNET_CKPT, NEW_HEAD, exclude=["resnet_v1_50/logitz"])


# --- output contracts ------------------------------------------------------------------------

def test_json_contract():
    ckpt = checkpoint(INCEPTION, adam=True, ema=True)
    model = inception_v3(5)
    plan = plan_restore(ckpt, model, exclude=["AuxLogits"], train=["Logits"])
    out = json.loads(json.dumps(plan.to_json()))
    assert list(out) == ["restore", "excluded", "excluded_tensors", "missing", "mismatched",
                         "unused", "trainable"]
    assert out["excluded_tensors"] == []
    assert out["restore"][0] == "InceptionV3/Conv2d_1a_3x3/weights"
    assert all(isinstance(e, str) for e in out["restore"])     # same names, nothing sliced
    assert out["excluded"] == INC_AUX
    assert out["missing"] == []
    assert out["mismatched"] == [
        {"model": INC_LOGITS[0], "ckpt": INC_LOGITS[0], "model_shape": [1, 1, 2048, 5],
         "ckpt_shape": [1, 1, 2048, 1001], "model_dtype": "float32", "ckpt_dtype": "float32",
         "skipped": False},
        {"model": INC_LOGITS[1], "ckpt": INC_LOGITS[1], "model_shape": [5],
         "ckpt_shape": [1001], "model_dtype": "float32", "ckpt_dtype": "float32",
         "skipped": False}]
    assert out["unused"] == [name for name, _ in plan.unused]
    assert "global_step" in out["unused"] and INC_AUX[0] + "/Adam" in out["unused"]
    assert out["trainable"] == INC_LOGITS
    skipped = plan_restore(ckpt, model, exclude=["AuxLogits"], allow_mismatch=True).to_json()
    assert [m["skipped"] for m in skipped["mismatched"]] == [True, True]


def test_sections_are_data():
    ckpt = checkpoint(RESNET, adam=True, ema=True)
    model = resnet_v1_50(5) + [ModelVar("extra/w", (3, 3), "float32")]
    plan = plan_restore(ckpt, model, exclude=["resnet_v1_50/logits/weights"],
                        allow_mismatch=True, use_moving_averages=True, train=["logits"])
    got = {s.title: (len(s.rows), s.params) for s in plan.sections()}
    assert list(got) == ["restore", "excluded", "missing (initialised fresh)", "mismatched",
                         "skipped (--allow-mismatch)", "unused: model weights",
                         "unused: optimizer slots (expected)", "unused: EMA shadows (expected)",
                         "unused: step counters (expected)", "trainable"]
    total = sum(prod(m.shape) for m in RESNET[:-2])
    assert got["restore"] == (265, total)
    assert got["excluded"] == (1, 2048 * 5)
    assert got["missing (initialised fresh)"] == (1, 9)
    assert got["mismatched"] == (0, 0)
    assert got["skipped (--allow-mismatch)"] == (1, 5)
    assert got["unused: optimizer slots (expected)"][0] == 324
    # the excluded weights' shadow; the mismatched biases' shadow is reported as mismatched
    assert got["unused: EMA shadows (expected)"] == (1, 2048 * 1000)
    # every trainable variable's raw value: shadows restore instead, or it was excluded
    assert got["unused: model weights"] == (161, sum(prod(m.shape) for m in RESNET
                                                     if m.trainable))
    assert got["unused: step counters (expected)"] == (1, 1)
    assert got["trainable"] == (2, 2048 * 5 + 5)
    title, rows, params = plan.sections()[0]
    assert rows[0] == ("resnet_v1_50/conv1/weights", "resnet_v1_50/conv1/weights" + EMA_SUFFIX,
                       "[7,7,3,64] (EMA)")
    assert ("resnet_v1_50/conv1/BatchNorm/moving_mean", "", "[64]") in rows
    skipped = plan.sections()[4]
    assert skipped.rows == [("resnet_v1_50/logits/biases", "resnet_v1_50/logits/biases" +
                             EMA_SUFFIX, "model [5] float32, checkpoint [1000] float32")]
    sliced = plan_restore(INCEPTION_CKPT, inception_v3(1000), label_offset=1).sections()[0]
    assert (INC_LOGITS[1], "", "[1000] from [1001], first 1 dropped") in sliced.rows


def test_none_means_nothing_given():
    plan = plan_restore(RESNET_CKPT, RESNET, exclude=None, include=None, maps=None, train=None,
                        train_from=None)
    assert len(plan.restore) == 267
    # one pattern may be given as a plain string
    assert plan_restore(RESNET_CKPT, resnet_v1_50(5), exclude="logits").excluded == \
        [(n, "logits") for n in LOGITS]


def test_plan_is_a_plain_record():
    plan = plan_restore(RESNET_CKPT, RESNET)
    assert isinstance(plan, RestorePlan)
    assert plan == plan_restore(iter(RESNET_CKPT), list(RESNET))   # any iterable, deterministic
    assert ModelVar("a", [1, 2], "float32").shape == (1, 2)
    assert ModelVar.from_variable(RESNET_CKPT[0]) == ModelVar(
        RESNET_CKPT[0].name, RESNET_CKPT[0].shape, "float32")


# --- cost and layering ------------------------------------------------------------------------

def test_plan_is_fast():
    """1,000 model variables against 2,000 checkpoint tensors: well under 50 ms."""
    model = [ModelVar(f"net/block{i // 50}/unit_{i % 50}/conv/weights", (3, 3, 8, 8), "float32",
                      i % 3 != 0) for i in range(1000)]
    ckpt = checkpoint(model[:900], adam=True)[:2000]
    tower = [ModelVar("tower/" + m.name, m.shape, m.dtype, m.trainable) for m in model]
    runs = {
        "component": lambda: plan_restore(ckpt, model, exclude=["block19", "re:unit_4\\d/"],
                                          train_from="net/block10"),
        "prefix": lambda: plan_restore(ckpt, model, exclude=["net/block1"], match="prefix"),
        "suffix": lambda: plan_restore(ckpt, tower, match="suffix", train=["block3", "block4"]),
        "map": lambda: plan_restore(ckpt, tower, maps=["/=t/", "t/=tower/"],
                                    use_moving_averages=True),
    }
    for label, run in runs.items():
        run()
        best = min(_timed(run) for _ in range(5))
        assert best < 0.05, (label, best)


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_plan_imports_neither_tensorflow_nor_numpy():
    code = ("import sys, ckptkit.plan; "
            "print(sorted(m for m in ('numpy', 'tensorflow', 'tf_slim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the real corpus -------------------------------------------------------------------------

def test_corpus_ssd_rmsprop_ema(oracle):
    """An Object Detection API checkpoint (RMSProp, EMA) planned against its own model."""
    tensors = oracle["indexonly_tf1_ssd_rmsprop_ema"]["checkpoints"][0]["tensors"]
    ckpt = [Variable(t["name"], tuple(t["shape"]), t["dtype"], 0) for t in tensors]
    names = {t["name"] for t in tensors}
    model = [ModelVar(v.name, v.shape, v.dtype, v.name + EMA_SUFFIX in names)
             for v in ckpt if role(v.name) == "model"]
    plan = plan_restore(ckpt, model, strict=True)
    assert len(plan.restore) == 199
    assert by_role(plan) == {"optimizer": 258, "ema": 129, "step": 1}
    ema = plan_restore(ckpt, model, use_moving_averages=True, strict=True)
    shadows = [r for r in ema.restore if r.ckpt == r.model + EMA_SUFFIX]
    assert len(ema.restore) == 199 and len(shadows) == 129
    assert {r.model for r in shadows} == {m.name for m in model if m.trainable}
    assert by_role(ema) == {"optimizer": 258, "model": 129, "step": 1}
