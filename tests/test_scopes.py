"""scopes.role: which checkpoint keys are model weights and which are training state."""
import pytest

from ckptkit.scopes import role


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
