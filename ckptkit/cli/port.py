"""`ckptkit port`: a slim checkpoint as a Keras 3 model, with a parity certificate."""
import importlib.util
import os
import sys

import click

from ..errors import CkptError
from ..fileio import new_output, quiet_stderr
from ..paths import open_checkpoint
from .options import net_name, restore_options, restore_options_from

BACKENDS = ("tensorflow", "jax", "torch")
TARGETS = ("keras", "torch")


@click.command()
@click.argument("checkpoint")
@click.option("--net", metavar="NAME", callback=lambda c, p, v: net_name(v),
              help="The net the checkpoint holds (a zoo name) [default: a train dir's, from "
                   "its run.json].")
@click.option("--to", "target", type=click.Choice(TARGETS), default="keras", show_default=True)
@click.option("-o", "--output", required=True, metavar="OUT.keras")
@click.option("--num-classes", type=click.IntRange(1),
              help="A new classifier of N classes (Keras' initialisation) instead of the "
                   "checkpoint's.")
@click.option("--keep-head", is_flag=True, help="Keep the checkpoint's classifier (the "
              "default without --num-classes).")
@click.option("--drop-background", is_flag=True,
              help="A 1001-class classifier without its background class (1000 outputs).")
@click.option("--include-preprocessing", is_flag=True,
              help="Take uint8 images at the net's size: its scaling as the first layer.")
@click.option("--check", "check", metavar="IMAGES", is_flag=False, flag_value="",
              default=None, help="Certify parity with the tf_slim graph on these images (a "
              "folder or files, comma-separated; bare --check: a built-in set) [default: on "
              "when TensorFlow is installed].")
@click.option("--no-check", is_flag=True, help="Write the model without the certificate.")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="Keras backend [default: $KERAS_BACKEND, else tensorflow].")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@restore_options
def port(checkpoint, net, target, output, num_classes, keep_head, drop_background,
         include_preprocessing, check, no_check, backend, overwrite, **restore):
    """Port a tf_slim checkpoint to a Keras 3 model that runs on TensorFlow, JAX or PyTorch.

    CHECKPOINT may be a `ckptkit finetune` train dir (its latest checkpoint), its best/ or a
    checkpoint in it: the model is then the run's (its net, image size and head, from
    run.json), its class names (labels.txt) in the metadata.

    The model takes what the slim net takes (float32 NHWC after the net's preprocessing) and
    outputs its logits; each weight is named after the checkpoint tensor it came from (in
    the model's metadata.json). With TensorFlow installed, the tf_slim graph of the same
    checkpoint checks the port on images (OUT.parity.json): exit status 1, and no model,
    when any end point or top-1 class differs.

    \b
    Examples:
      ckptkit port pretrained:resnet_v1_50 --net resnet_v1_50 -o resnet.keras
      ckptkit port model.ckpt --net inception_v3 --num-classes 5 -o v3.keras --check photos/
      ckptkit port model.ckpt --net mobilenet_v1 -o m.keras --backend jax
      ckptkit port runs/flowers -o flowers.keras
    """
    if target == "torch":
        raise CkptError("--to torch (a state dict for timm's or torchvision's classes) is not "
                        "available yet; the Keras 3 model runs and trains on PyTorch: --to "
                        "keras --backend torch")
    if keep_head and num_classes:
        raise CkptError("give either --keep-head or --num-classes")
    if check is not None and no_check:
        raise CkptError("give either --check or --no-check")
    if no_check:
        check = None
    elif check is None and importlib.util.find_spec("tensorflow") is not None:
        check = ""
    options = restore_options_from(restore, checkpoint)
    if not output.endswith(".keras"):
        raise CkptError(f"{output}: a Keras 3 model is written as a .keras file")
    with open_checkpoint(checkpoint) as reader:
        run = _run_of(reader.path, net, num_classes, drop_background)
        if run:
            net, num_classes = run["model"]["net"], None
        elif net is None:
            raise click.UsageError("Missing option '--net' (a train dir's run.json names it).")
        new_output(output, reader.files, overwrite=overwrite)
        _use_backend(backend)
        from ..port.keras import port_keras

        ported = port_keras(reader, net, options, num_classes=num_classes,
                            drop_background=drop_background, run=run)
    from ..port import certificate
    from ..port.keras import save, with_preprocessing

    for note in ported.plan.notes:
        click.echo(f"note: {note}", err=True)
    unused = [name for name, role in ported.plan.unused if role == "model"]
    if unused:
        click.echo(f"note: {len(unused)} checkpoint weight(s) the Keras model does not use: "
                   f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}", err=True)
    if check is not None:
        images = [p for p in check.split(",") if p] or None
        report = certificate.certify(ported, ported.metadata["checkpoint"], options, images)
        where = certificate.write(report, output)
        if not report["passed"]:
            figure = next(f for f in report["end_points"] + [report["logits"]]
                          if isinstance(f, dict) and f["name"] == report["first_divergence"]) \
                if report["first_divergence"] else None
            detail = (f"first at {figure['name']} (max abs difference {figure['max_abs_diff']:.3g}"
                      f" at scale {figure['scale']:.3g})" if figure
                      else f"top-1 agreement {report.get('top1_agreement')}")
            click.echo(f"ckptkit: error: the port differs from the tf_slim graph: {detail}; "
                       f"{output} not written; see {where}", err=True)
            return 1
    if include_preprocessing:
        ported = with_preprocessing(ported)
    save(ported, output, overwrite=overwrite)
    restored = len(ported.plan.restore)
    click.echo(f"wrote {output}: {ported.record.name}, {ported.metadata['num_classes']} "
               f"classes, {restored} weights from {checkpoint}"
               + (f"; parity certified on {report['inputs'][0]} images ({where})"
                  if check is not None else ""))
    return 0


def _run_of(prefix, net, num_classes, drop_background):
    """{"model": run.json's model entry, "class_names"} of the fine-tuning run whose
    checkpoint `prefix` is (in its train dir or its best/), checked against the options
    given; None for any other checkpoint."""
    from ..train.rundir import BEST, RUN, RunDir
    from ..zoo.nets import get_net

    folder = os.path.dirname(os.path.abspath(prefix))
    homes = [folder] + ([os.path.dirname(folder)] if os.path.basename(folder) == BEST else [])
    home = next((h for h in homes if os.path.isfile(os.path.join(h, RUN))), None)
    if home is None:
        return None
    run = RunDir(home)
    model, labels = run.model(), run.labels()
    if ":" in model.net:
        raise CkptError(f"{home} trains your own net {model.net}, which has no Keras "
                        "builder: only the zoo's nets port")
    trained = get_net(model.net).name
    if net and (":" in net or get_net(net).name != trained):
        raise CkptError(f"--net {net}: {home} trains {trained} (its {RUN}); leave --net out")
    if num_classes not in (None, model.num_classes) or drop_background:
        raise CkptError(f"{home} trains {model.num_classes} classes (its {RUN}); leave "
                        f"{'--drop-background' if drop_background else '--num-classes'} out")
    if len(labels) != model.num_classes:
        raise CkptError(f"{run.file('labels.txt')}: {len(labels)} labels, but the model has "
                        f"{model.num_classes} classes")
    return {"model": model.to_json(), "class_names": labels}


def _use_backend(backend):
    """Load Keras on `backend` (else $KERAS_BACKEND, else tensorflow); Keras already loaded
    on another backend, or missing, is an error."""
    wanted = backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if "keras" in sys.modules:
        running = sys.modules["keras"].backend.backend()
        if running != wanted:
            raise CkptError(f"Keras is already running on {running}; --backend {wanted} "
                            "needs a new process")
        return
    os.environ["KERAS_BACKEND"] = wanted
    try:
        with quiet_stderr():        # TensorFlow's C++ start-up lines, its probe of CUDA
            importlib.import_module("ckptkit.port.layers")
            if wanted == "tensorflow":
                sys.modules["keras"].distribution.list_devices()
    except ImportError as e:
        if e.name == "keras":
            raise CkptError("porting needs Keras 3: pip install 'ckptkit[port]'") from None
        if e.name and e.name.split(".")[0] == wanted:
            raise CkptError(f"the Keras backend {wanted} is not installed "
                            f"(pip install {wanted})") from None
        raise
