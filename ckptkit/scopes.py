"""What a variable name means: model weight, optimizer state, EMA shadow, step counter.

Recognising these everywhere keeps them out of restore plans and lets `inspect` label and
hide them (tensorpack's and timm's habit of not counting slots as problems).
"""
import re

_OPTIMIZERS = (r"Adam|AdamW|Adamax|Nadam|LazyAdam|Momentum|RMSProp|RMSprop|Adagrad|AdagradDA|"
               r"ProximalAdagrad|ProximalGradientDescent|Ftrl|Adadelta|SGD|Lamb|LARS|Yogi")
# a TF1 slot is the last component: var/Adam, var/Adam_1, var/t_0/Adagrad, ...
_SLOT = re.compile(rf"/({_OPTIMIZERS})(_\d+)?$")
_OPTIMIZER = re.compile(
    rf"(^|/)(beta[12]_power(_\d+)?|\.OPTIMIZER_SLOT/.*)$"        # Adam powers, TF2 slots
    rf"|^training(_\d+)?/({_OPTIMIZERS})/"                       # Keras-in-estimator slots
    r"|^optimizer(_weights)?/"                                    # TF2 object / Keras h5 / K3
    r"|^[mv](hat)?_\d+(:0)?$")                                    # Keras 2.3 m_i/v_i/vhat_i
_EMA = re.compile(r"/ExponentialMovingAverage(_\d+)?$")
_STEP = re.compile(r"(^|/)(global_step|iterations(:0)?)$"
                   r"|^(save_counter|step)/\.ATTRIBUTES/VARIABLE_VALUE$")
_META = {"_CHECKPOINTABLE_OBJECT_GRAPH"}

ROLES = ("model", "optimizer", "ema", "step", "meta")


def role(name):
    """One of ROLES for a checkpoint key."""
    if name in _META:
        return "meta"
    if _EMA.search(name):
        return "ema"
    if _STEP.search(name):
        return "step"
    if _SLOT.search(name) or _OPTIMIZER.search(name):
        return "optimizer"
    return "model"
