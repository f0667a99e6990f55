"""scopes.role: which checkpoint keys are model weights and which are training state."""
import pytest

from ckptkit.errors import PlanError
from ckptkit.scopes import closest_scopes, compile_pattern, role, scope_paths


@pytest.mark.parametrize("name, expected", [
    # model weights, including scopes that merely look like optimizer words
    ("resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights", "model"),
    ("InceptionV3/Logits/Conv2d_1c_1x1/biases", "model"),
    ("training/transformer/body/encoder/kernel", "model"),
    ("model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE", "model"),
    ("net/step", "model"),
    ("Adam_scope/w", "model"),
    ("model_weights/dense_1/dense_1/kernel:0", "model"),
    # TF1 slots, any optimizer, numbered copies
    ("resnet_v1_50/logits/weights/Adam", "optimizer"),
    ("resnet_v1_50/logits/weights/Adam_1", "optimizer"),
    ("Conv/biases/Momentum", "optimizer"),
    ("BoxPredictor_0/BoxEncodingPredictor/biases/RMSProp_1", "optimizer"),
    ("dnn/hiddenlayer_0/weights/t_0/Adagrad", "optimizer"),
    ("dnn/hiddenlayer_0/bias/t_0/ProximalAdagrad", "optimizer"),
    ("linear/linear_model/company_xf/weights/Ftrl_1", "optimizer"),
    ("beta1_power", "optimizer"),
    ("model/beta2_power", "optimizer"),
    ("training/Adagrad/dnn/logits/bias/accumulator", "optimizer"),
    # TF2 and Keras optimizer state
    ("dense/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE", "optimizer"),
    ("optimizer/_variables/138/.ATTRIBUTES/VARIABLE_VALUE", "optimizer"),
    ("optimizer_weights/training_1/Adam/Variable_18:0", "optimizer"),
    ("m_4:0", "optimizer"),
    ("vhat_4:0", "optimizer"),
    # EMA shadows, counters, the object graph
    ("conv1/weights/ExponentialMovingAverage", "ema"),
    ("global_step", "step"),
    ("optimizer_weights/iterations:0", "step"),
    ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", "step"),
    ("step/.ATTRIBUTES/VARIABLE_VALUE", "step"),
    ("_CHECKPOINTABLE_OBJECT_GRAPH", "meta"),
])
def test_role(name, expected):
    assert role(name) == expected


def _names(oracle, case):
    rec = oracle[case]
    return [t["name"] for t in (rec["checkpoints"][0]["tensors"] if "checkpoints" in rec
                                else rec["datasets"])]


@pytest.mark.parametrize("case, expected", [
    # 10 variables x (Adam, Adam_1) + beta1/beta2_power
    ("v1_carnd_lenet_adam_2017", {"model": 10, "optimizer": 22}),
    # 6 variables with slots from two optimizers (x4) + two pairs of beta powers
    ("v2_pos_rnn_adam", {"model": 6, "optimizer": 28}),
    # 129 trainable variables x (EMA, RMSProp, RMSProp_1), 70 BN moving statistics, the step
    ("indexonly_tf1_ssd_rmsprop_ema", {"model": 199, "ema": 129, "optimizer": 258, "step": 1}),
    # model weights, Adam m/v per weight + hyper-parameters, the object graph, save_counter
    ("savedmodel_tfx_keras_serving", {"model": 10, "optimizer": 17, "meta": 1}),
])
def test_corpus_roles(oracle, case, expected):
    names = _names(oracle, case)
    counts = {}
    for n in names:
        counts[role(n)] = counts.get(role(n), 0) + 1
    assert counts == expected


def test_corpus_tf1_slots_belong_to_model_variables(oracle):
    """Every TF1 `var/<Slot>` or `var/ExponentialMovingAverage` key names a model variable
    (an optimizer built inside a variable scope prefixes its slots with that scope)."""
    checked = 0
    for case, rec in oracle.items():
        if "checkpoints" not in rec:
            continue
        names = set(_names(oracle, case))
        for n in names:
            if role(n) in ("optimizer", "ema") and "/" in n and not n.startswith(
                    ("training/", "optimizer/")) and ".OPTIMIZER_SLOT" not in n:
                base = n.rsplit("/", 1)[0].removesuffix("/t_0")
                if "_power" not in n:   # Adam's beta powers belong to no variable
                    parts = base.split("/")
                    owners = ["/".join(parts[i:]) for i in range(len(parts))]
                    assert any(o in names and role(o) == "model" for o in owners), n
                    checked += 1
    assert checked >= 700   # the corpus has hundreds of slots; all were checked


# --- scope patterns ---------------------------------------------------------------------------

INCEPTION = ["InceptionV3/Conv2d_1a_3x3/weights",
             "InceptionV3/Mixed_5b/Branch_0/Conv2d_0a_1x1/BatchNorm/beta",
             "InceptionV3/AuxLogits/Conv2d_2b_1x1/biases",
             "InceptionV3/Logits/Conv2d_1c_1x1/weights",
             "InceptionV3/Logits/Conv2d_1c_1x1/biases"]
RESNET = ["resnet_v1_50/conv1/weights",
          "resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/BatchNorm/moving_mean",
          "resnet_v1_50/logits/weights",
          "resnet_v1_50/logits/biases"]


@pytest.mark.parametrize("pattern, name, expected", [
    ("Logits", "Logits/weights", True),
    ("Logits", "InceptionV3/Logits/Conv2d/weights", True),
    ("Logits", "Logits", True),                                  # a whole name is a run too
    ("Logits", "Logits_2/weights", False),
    ("Logits", "AuxLogits/weights", False),
    ("Logits", "InceptionV3/AuxLogits/Conv2d_2b_1x1/biases", False),
    ("Logits", "InceptionV3/LogitsX", False),
    ("resnet_v1_50/logits", "resnet_v1_50/logits/biases", True),
    ("resnet_v1_50/logits", "net/resnet_v1_50/logits/biases", True),
    ("resnet_v1_50/logits", "resnet_v1_50/block1/logits/biases", False),   # consecutive only
    ("resnet_v1_50/logit", "resnet_v1_50/logits/biases", False),
    ("logits", "resnet_v1_50/Logits/biases", False),             # case matters
    ("Logits/", "InceptionV3/Logits/Conv2d/weights", True),      # trailing slash ignored
    ("/Logits", "Logits/weights", True),                         # leading slash anchors
    ("/Logits", "InceptionV3/Logits/Conv2d/weights", False),
    ("/resnet_v1_50/logits/", "resnet_v1_50/logits/weights", True),
    ("BatchNorm/moving_mean", RESNET[1], True),
    ("conv1", RESNET[1], True),
    ("unit_1/bottleneck_v1", RESNET[1], True),
    ("unit_1/conv1", RESNET[1], False),
])
def test_component_patterns(pattern, name, expected):
    p = compile_pattern(pattern)
    assert p.text == pattern and p.kind == "component"
    assert p.matches(name) is expected
    assert compile_pattern(pattern, match="suffix").matches(name) is expected


@pytest.mark.parametrize("pattern, name, expected", [
    ("Logits", "Logits/weights", True),
    ("Logits", "Logits_2/weights", True),                        # raw startswith, as slim does
    ("Logits", "InceptionV3/Logits/Conv2d/weights", False),
    ("InceptionV3/Logits", "InceptionV3/Logits/Conv2d/weights", True),
    ("InceptionV3/Logits", "InceptionV3/AuxLogits/Conv2d/weights", False),
    ("InceptionV3/Mixed_5", "InceptionV3/Mixed_5b/Branch_0/weights", True),
    ("Logits/", "Logits", False),                                # nothing is stripped
])
def test_prefix_patterns(pattern, name, expected):
    p = compile_pattern(pattern, match="prefix")
    assert p.kind == "prefix" and p.matches(name) is expected


@pytest.mark.parametrize("match", ["component", "prefix", "suffix"])
@pytest.mark.parametrize("pattern, name, expected", [
    ("re:Logits", "InceptionV3/AuxLogits/w", True),              # re.search: anywhere
    ("re:^InceptionV3/(Aux)?Logits/", "InceptionV3/AuxLogits/w", True),
    ("re:^InceptionV3/(Aux)?Logits/", "InceptionV3/Mixed_5b/w", False),
    ("re:/(weights|biases)$", "InceptionV3/Logits/Conv2d_1c_1x1/biases", True),
])
def test_regex_patterns_whatever_the_mode(match, pattern, name, expected):
    p = compile_pattern(pattern, match=match)
    assert p.kind == "re" and p.matches(name) is expected


@pytest.mark.parametrize("pattern, match, message", [
    ("re:Logits(", "component",
     "invalid regular expression 're:Logits(': missing ), unterminated subpattern at "
     "position 6"),
    ("re:*", "prefix", "invalid regular expression 're:*': nothing to repeat at position 0"),
    ("", "component", "empty scope pattern ''"),
    ("/", "component", "scope pattern '/' names no scope"),
    ("Logits", "glob", "unknown match mode 'glob'; use one of component, prefix, suffix"),
])
def test_pattern_errors(pattern, match, message):
    with pytest.raises(PlanError) as e:
        compile_pattern(pattern, match)
    assert str(e.value) == message


@pytest.mark.parametrize("text, names, expected", [
    ("logits", RESNET, ["resnet_v1_50/logits"]),                 # by last component, any case
    ("Logitz", INCEPTION, ["InceptionV3/Logits", "InceptionV3/AuxLogits"]),
    ("Logits", INCEPTION, ["InceptionV3/Logits", "InceptionV3/AuxLogits"]),
    ("/Logits/", INCEPTION, ["InceptionV3/Logits", "InceptionV3/AuxLogits"]),
    ("re:^Logits", INCEPTION, ["InceptionV3/Logits", "InceptionV3/AuxLogits"]),
    ("resnet_v1_50/logit", RESNET, ["resnet_v1_50/logits", "resnet_v1_50/block1",
                                    "resnet_v1_50"]),
    ("resnet_v2_50", RESNET, ["resnet_v1_50"]),                  # not also its children
    ("InceptionV3/Logits/Conv2d_1c_1x1/weight", INCEPTION,
     ["InceptionV3/Logits/Conv2d_1c_1x1/weights", "InceptionV3/Logits/Conv2d_1c_1x1",
      "InceptionV3/AuxLogits/Conv2d_2b_1x1"]),                  # whole paths, then tails
    ("moving_means", RESNET,
     ["resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/BatchNorm/moving_mean"]),
    ("zzzz", RESNET, []),
    ("Logits", [], []),
])
def test_closest_scopes(text, names, expected):
    assert closest_scopes(text, names) == expected


def test_closest_scopes_limit_and_ties():
    names = [f"net/block{i}/conv/weights" for i in range(1, 10)]
    assert closest_scopes("net/block", names) == ["net/block1", "net/block2", "net/block3"]
    assert closest_scopes("net/block", names, n=5)[-1] == "net/block5"
    assert scope_paths(["a/b/c", "a/d"]) == {"a", "a/b", "a/b/c", "a/d"}
