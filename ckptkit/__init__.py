"""ckptkit: read, check, edit and fine-tune from TensorFlow checkpoints, without starting TF."""
from .errors import CkptError, Corrupt, FormatError, NotFound, PlanError, Unsupported
from .formats import Reader
from .paths import open_checkpoint
from .legacy import NewCheckpointReader
from .variable import Variable

__version__ = "0.1.0"
__all__ = ["open_checkpoint", "NewCheckpointReader", "plan_restore", "ModelVar", "RestorePlan",
           "Reader", "Variable", "CkptError",
           "Corrupt", "FormatError", "NotFound", "PlanError", "Unsupported"]


def __getattr__(name):
    """The planner loads on first use, keeping `ckptkit inspect` start-up lean."""
    if name in ("plan_restore", "ModelVar", "RestorePlan"):
        from . import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'ckptkit' has no attribute {name!r}")
