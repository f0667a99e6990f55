"""Where a session runs: the session config for `--device` and `--gpus`.

GPUs get allow_growth (TF would otherwise take all of their memory at start) and soft
placement (ops without a GPU kernel fall back to the CPU). `--gpus 0,1` limits the visible
GPUs like CUDA_VISIBLE_DEVICES does; `--device cpu` hides them all. With several GPUs,
training is data-parallel through tf.compat.v1's MirroredStrategy (DESIGN.md: graph mode
needs its make_dataset_iterator + experimental_run); `devices` names them explicitly (tests
use two logical CPU devices).
"""
from ..errors import CkptError

DEVICES = ("auto", "cpu", "gpu")


def session_config(device="auto", gpus=None):
    """A tf.ConfigProto for `device` ("auto": a GPU when there is one) and `gpus`."""
    from ..tfcompat import tf

    wanted = check_devices(device, gpus)
    config = tf.ConfigProto(allow_soft_placement=True)
    config.gpu_options.allow_growth = True
    if device == "cpu":
        config.device_count["GPU"] = 0
        return config
    if wanted:
        if max(map(int, wanted)) >= gpu_count():
            raise CkptError(f"--gpus {gpus}: this machine has {gpu_count()} visible GPU(s)")
        config.gpu_options.visible_device_list = ",".join(wanted)
    elif device == "gpu" and not gpu_count():
        raise CkptError("--device gpu, but TensorFlow sees no GPU (is tensorflow[and-cuda] "
                        "installed, CUDA_VISIBLE_DEVICES set?); use --device cpu")
    return config


def check_devices(device="auto", gpus=None):
    """The GPU numbers of `gpus` (a list of str); a one-line error for a bad --device or
    --gpus value. Needs no TensorFlow: settings.check runs it before TF loads."""
    if device not in DEVICES:
        raise CkptError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    wanted = [g.strip() for g in str(gpus).split(",")] if gpus is not None else []
    if gpus is not None and (not wanted or not all(g.isdigit() for g in wanted)):
        raise CkptError(f"--gpus takes GPU numbers like 0,1, not {gpus!r}")
    return wanted


def gpu_count():
    """GPUs TensorFlow can use (0 on a CPU-only build)."""
    from ..tfcompat import GPUS

    return GPUS


def uses_gpu(device="auto"):
    return device != "cpu" and gpu_count() > 0


def strategy(device="auto", gpus=None, devices=()):
    """A MirroredStrategy over `devices`, or over every usable GPU when there are several;
    None for one device. Call it inside the graph it is for."""
    from ..tfcompat import tf

    if not devices and device != "cpu" and gpu_count() > 1:
        wanted = [g for g in str(gpus).split(",") if g.strip()] if gpus else range(gpu_count())
        devices = [f"/gpu:{i}" for i in range(len(wanted))]
    if len(devices) < 2:
        return None
    return tf.distribute.MirroredStrategy(list(devices))
