"""What a variable name means: model weight, optimizer state, EMA shadow, step counter.

Recognising these everywhere keeps them out of restore plans and lets `inspect` label and
hide them (tensorpack's and timm's habit of not counting slots as problems).
"""
import re
from functools import lru_cache

_OPTIMIZERS = (r"Adam|AdamW|Adamax|Nadam|LazyAdam|Momentum|RMSProp|RMSprop|Adagrad|AdagradDA|"
               r"ProximalAdagrad|ProximalGradientDescent|Ftrl|Adadelta|SGD|Lamb|LARS|Yogi")
# judged on the last name component (cached: a 100,000-variable checkpoint has few of them)
_SLOT = re.compile(rf"({_OPTIMIZERS})(_\d+)?")         # var/Adam, var/Adam_1, var/t_0/Adagrad
_EMA = re.compile(r"ExponentialMovingAverage(_\d+)?")
_POWER = re.compile(r"beta[12]_power(_\d+)?")           # Adam's, anywhere
_STEPS = {"global_step", "iterations", "iterations:0"}
# judged on the whole name
_OPTIMIZER_PREFIX = re.compile(
    rf"training(_\d+)?/({_OPTIMIZERS})/"                 # Keras-in-estimator slots
    r"|optimizer(_weights)?/"                            # TF2 object / Keras h5 / Keras 3
    r"|[mv](hat)?_\d+(:0)?$")                            # Keras 2.3 m_i/v_i/vhat_i
_TF2_STEPS = {"save_counter/.ATTRIBUTES/VARIABLE_VALUE", "step/.ATTRIBUTES/VARIABLE_VALUE"}
_META = {"_CHECKPOINTABLE_OBJECT_GRAPH"}

ROLES = ("model", "optimizer", "ema", "step", "meta")


def role(name):
    """One of ROLES for a checkpoint key."""
    if name in _META:
        return "meta"
    scope, _, last = name.rpartition("/")
    found = _last_role(last, bool(scope))
    if found:
        return found
    if name in _TF2_STEPS:
        return "step"
    if ".OPTIMIZER_SLOT/" in name or _OPTIMIZER_PREFIX.match(name):
        return "optimizer"
    return "model"


@lru_cache(maxsize=1 << 16)
def _last_role(last, scoped):
    if scoped and _EMA.fullmatch(last):
        return "ema"
    if last in _STEPS:
        return "step"
    if scoped and _SLOT.fullmatch(last) or _POWER.fullmatch(last):
        return "optimizer"
    return None
