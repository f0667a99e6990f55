"""ckptkit: read, check, edit and fine-tune from TensorFlow checkpoints, without starting TF."""
from .errors import CkptError, Corrupt, FormatError, NotFound, PlanError, Unsupported
from .formats import Reader, open_checkpoint
from .legacy import NewCheckpointReader
from .plan import ModelVar, RestorePlan, plan_restore
from .variable import Variable

__version__ = "0.1.0"
__all__ = ["open_checkpoint", "NewCheckpointReader", "plan_restore", "ModelVar", "RestorePlan",
           "Reader", "Variable", "CkptError",
           "Corrupt", "FormatError", "NotFound", "PlanError", "Unsupported"]
