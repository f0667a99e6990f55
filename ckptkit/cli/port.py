"""`ckptkit port`: a slim checkpoint as a Keras 3 model, with a parity certificate."""
import importlib.util
import os
import sys

import click

from ..errors import CkptError, MissingPackage
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
@click.option("-o", "--output", required=True, metavar="OUT",
              help="OUT.keras (--to keras) or OUT.safetensors (--to torch).")
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
              "when TensorFlow is installed, and for --to torch torch and the class's "
              "package].")
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

    --to torch writes OUT.safetensors, the state dict of the PyTorch class that computes
    exactly what the slim net does (timm's inception_v4 and inception_resnet_v2,
    torchvision's vgg16 and vgg19; the output names the constructor), TF- and torch-free;
    its certificate compares the class's logits with the slim graph's. Other nets run and
    train on PyTorch as the Keras 3 model: --to keras --backend torch.

    \b
    Examples:
      ckptkit port pretrained:resnet_v1_50 --net resnet_v1_50 -o resnet.keras
      ckptkit port model.ckpt --net inception_v3 --num-classes 5 -o v3.keras --check photos/
      ckptkit port model.ckpt --net mobilenet_v1 -o m.keras --backend jax
      ckptkit port runs/flowers -o flowers.keras
      ckptkit port model.ckpt --net inception_v4 --to torch -o v4.safetensors
    """
    if keep_head and num_classes:
        raise CkptError("give either --keep-head or --num-classes")
    if check is not None and no_check:
        raise CkptError("give either --check or --no-check")
    options = restore_options_from(restore, checkpoint)
    check = False if no_check else check                # None: the default, decided below
    if target == "torch":
        keras_only = [flag for flag, value in (("--num-classes", num_classes),
                                               ("--include-preprocessing", include_preprocessing),
                                               ("--backend", backend)) if value]
        if keras_only:
            raise CkptError(f"{keras_only[0]} is for --to keras; --to torch writes the "
                            "checkpoint's own net and classifier")
        return _port_torch(checkpoint, net, output, drop_background, check, options, overwrite)
    if check is None:
        check = "" if importlib.util.find_spec("tensorflow") else False
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

    _notes(ported.plan)
    if check is not False:
        report = certificate.certify(ported, ported.metadata["checkpoint"], options,
                                     _images(check))
        where = certificate.write(report, output)
        if not report["passed"]:
            return _failed(report, output, where)
    if include_preprocessing:
        ported = with_preprocessing(ported)
    save(ported, output, overwrite=overwrite)
    restored = len(ported.plan.restore)
    click.echo(f"wrote {output}: {ported.record.name}, {ported.metadata['num_classes']} "
               f"classes, {restored} weights from {checkpoint}"
               + (f"; parity certified on {report['inputs'][0]} images ({where})"
                  if check is not False else ""))
    return 0


def _port_torch(checkpoint, net, output, drop_background, check, options, overwrite):
    """`port --to torch`: the state dict (port/state_dict.py), certified by default where
    TensorFlow, torch and the class's package are installed (a note where they are not)."""
    from ..port import certificate
    from ..port.state_dict import port_state_dict, save

    if not output.endswith(".safetensors"):
        raise CkptError(f"{output}: a PyTorch state dict is written as a .safetensors file")
    with open_checkpoint(checkpoint) as reader:
        if _train_dir(reader.path):
            raise CkptError(f"{checkpoint} is a fine-tuning run's: its head is ckptkit's, "
                            "which no PyTorch library's class has; port it --to keras")
        if net is None:
            raise click.UsageError("Missing option '--net'.")
        new_output(output, reader.files, overwrite=overwrite)
        state = port_state_dict(reader, net, options, drop_background=drop_background)
        _notes(state.plan)
        if check is None and not importlib.util.find_spec("tensorflow"):
            check = False
        if check is not False:
            try:
                report = certificate.certify_torch(state, state.metadata["checkpoint"],
                                                   options, _images(check or ""))
            except MissingPackage as e:
                if check is not None:
                    raise
                click.echo(f"note: no parity certificate: {e}", err=True)
                check = False
        if check is not False:
            where = certificate.write(report, output)
            if not report["passed"]:
                return _failed(report, output, where)
        save(state, output, overwrite=overwrite)
    click.echo(f"wrote {output}: {state.metadata['net']} for {state.metadata['class']}, "
               f"{len(state.entries)} tensors from {checkpoint}"
               + (f"; parity certified on {report['inputs'][0]} images ({where})"
                  if check is not False else ""))
    return 0


def _images(check):
    """The image paths of --check's value (None: the built-in set)."""
    return [p for p in check.split(",") if p] or None


def _notes(plan):
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    unused = [name for name, role in plan.unused if role == "model"]
    if unused:
        click.echo(f"note: {len(unused)} checkpoint weight(s) the port does not use: "
                   f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}", err=True)


def _failed(report, output, where):
    """Say where a failed certificate's port first differs; exit status 1."""
    figure = next(f for f in report["end_points"] + [report["logits"]]
                  if isinstance(f, dict) and f["name"] == report["first_divergence"]) \
        if report["first_divergence"] else None
    detail = (f"first at {figure['name']} (max abs difference {figure['max_abs_diff']:.3g}"
              f" at scale {figure['scale']:.3g})" if figure
              else f"top-1 agreement {report.get('top1_agreement')}")
    click.echo(f"ckptkit: error: the port differs from the tf_slim graph: {detail}; "
               f"{output} not written; see {where}", err=True)
    return 1


def _run_of(prefix, net, num_classes, drop_background):
    """{"model": run.json's model entry, "class_names"} of the fine-tuning run whose
    checkpoint `prefix` is (in its train dir or its best/), checked against the options
    given; None for any other checkpoint."""
    from ..train.rundir import RUN, RunDir
    from ..zoo.nets import get_net

    home = _train_dir(prefix)
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


def _train_dir(prefix):
    """The train dir whose checkpoint (in it or its best/) `prefix` is, else None."""
    from ..train.rundir import BEST, RUN

    folder = os.path.dirname(os.path.abspath(prefix))
    homes = [folder] + ([os.path.dirname(folder)] if os.path.basename(folder) == BEST else [])
    return next((h for h in homes if os.path.isfile(os.path.join(h, RUN))), None)


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
