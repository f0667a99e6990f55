"""The training commands: finetune, eval, predict, export (TensorFlow, loaded only when one
of them runs)."""
import click

from .. import render
from ..train.settings import ENGINES, EXPORT_FORMATS
from .options import DEVICES, net_name, require, training_options, training_settings


@click.command()
@training_options
@click.option("--train-dir", required=True, metavar="DIR",
              help="Where checkpoints and metrics go; a run there is resumed.")
@click.option("--compare-scratch", is_flag=True,
              help="Also train the same model from random initialisation (TRAIN_DIR/scratch) "
                   "and draw both on TRAIN_DIR/compare.png.")
@click.option("--restart", is_flag=True,
              help="Discard the run TRAIN_DIR holds (its checkpoints and records) and start "
                   "afresh, instead of resuming it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def finetune(as_json, restart, **options):
    """Fine-tune a tf_slim net from a checkpoint: restore what `plan` shows, train, evaluate.

    The restore options mean what they mean in `plan`: the same options give the plan this
    run applies (written to TRAIN_DIR/plan.json). Rerunning the same command resumes an
    interrupted run (Ctrl-C saves a checkpoint), or says a finished one is complete; more
    --epochs, --patience, --save-every, --keep, --device, --gpus or --cache-dir may change
    on a resume, any other option needs a new --train-dir or --restart.

    \b
    Examples:
      ckptkit finetune --net resnet_v1_50 --checkpoint resnet_v1_50.ckpt --data photos/ \\
          --exclude Logits --train Logits --train-dir runs/a
      ckptkit finetune --net inception_v3 --checkpoint inception_v3.ckpt --data flowers/ \\
          --mode two-stage --train-from InceptionV3/Mixed_7a --train-dir runs/b
    """
    from ..train.finetune import finetune as run

    require(options, "net", "data")
    summary = run(training_settings(options), log=lambda line: click.echo(line, err=True),
                  progress=render.training_progress, restart=restart)
    if as_json:
        render.emit_json(summary)
    else:
        click.echo("\n".join(render.finetune_table(summary)))
    return 130 if summary["stopped"] else 0


engine_option = click.option(
    "--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
    help="onnx: onnxruntime on the run's ONNX export (export --format onnx), without "
    "TensorFlow; tf: TensorFlow; auto: onnx when the export is of the checkpoint used.")


def _say_engine(engine):
    click.echo(f"engine: {'onnxruntime' if engine == 'onnx' else 'TensorFlow'}", err=True)


@click.command(name="eval")
@click.option("--train-dir", required=True, metavar="DIR", help="A finetune train dir.")
@click.option("--data", "data_path", metavar="PATH",
              help="Data to evaluate (default: the run's validation split).")
@click.option("--last", is_flag=True, help="Use the latest checkpoint, not the best one.")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto",
              show_default=True)
@engine_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable results.")
def evaluate(train_dir, data_path, last, batch_size, device, engine, as_json):
    """Accuracy, top-5, per-class accuracy and confusion matrix of a trained model.

    The confusion matrix is also drawn: to TRAIN_DIR/confusion.png for the run's own
    validation split, to TRAIN_DIR/confusion-NAME.png for --data NAME.

    \b
    Examples:
      ckptkit eval --train-dir runs/a
      ckptkit eval --train-dir runs/a --data photos/test --json
    """
    from ..train.evaluate import evaluate as run

    result = run(train_dir, data_path=data_path, best=not last, batch_size=batch_size,
                 device=device, engine=engine, log=lambda line: click.echo(line, err=True))
    _say_engine(result["engine"])
    if as_json:
        render.emit_json(result)
    else:
        click.echo("\n".join(render.eval_lines(result)))
    return 0


@click.command()
@click.option("--train-dir", required=True, metavar="DIR", help="A finetune train dir.")
@click.argument("images", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True)
@engine_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable predictions.")
def predict(train_dir, images, top_k, engine, as_json):
    """Classify images (files or folders of images) with a trained model.

    \b
    Examples:
      ckptkit predict --train-dir runs/a photo1.jpg photo2.png
      ckptkit predict --train-dir runs/a holiday/ --top-k 3 --json
    """
    from ..train.infer import image_files
    from ..train.onnx_engine import open_classifier

    paths = image_files(images)
    with open_classifier(train_dir, engine=engine,
                         log=lambda line: click.echo(line, err=True)) as classifier:
        _say_engine(classifier.engine)
        results = classifier.predict_files(paths, top_k=top_k)
    if as_json:
        render.emit_json(results)
    else:
        click.echo("\n".join(render.prediction_lines(results)))
    return 1 if any("error" in item for item in results) else 0


@click.command()
@click.option("--train-dir", metavar="DIR", help="A finetune train dir.")
@click.option("-o", "--output", required=True, metavar="DIR", help="New folder to export to.")
@click.option("--checkpoint", metavar="PATH", help="Checkpoint to export (with --train-dir: "
              "default the best, else the latest; with --net: required).")
@click.option("--net", metavar="NAME", callback=lambda ctx, param, value: net_name(value),
              help="Export a net straight from --checkpoint, without a train dir.")
@click.option("--num-classes", type=click.IntRange(1), help="With --net: the checkpoint "
              "holds a new head of this many classes (default: the net's own classifier).")
@click.option("--format", "format_", type=click.Choice(EXPORT_FORMATS), default="tf",
              show_default=True, help="tf: SavedModel and frozen GraphDef; onnx: ONNX "
              "(needs the [onnx] extra); all: the three.")
def export(train_dir, output, checkpoint, net, num_classes, format_):
    """Export a trained model as a SavedModel and a frozen GraphDef, or as ONNX.

    The SavedModel's serving_default signature takes encoded image bytes; predict_arrays
    takes uint8 images; both give probabilities, classes (indices) and labels (class
    names). The ONNX model takes uint8 images ("images") and does the net's preprocessing
    itself. export.json names every input and output. A train dir's ONNX export is also
    put in TRAIN_DIR/onnx/, where predict and eval find it.

    \b
    Examples:
      ckptkit export --train-dir runs/a -o exported/
      ckptkit export --train-dir runs/a -o exported/ --format onnx
      ckptkit export --net inception_v3 --checkpoint pretrained:inception_v3 -o v3/ \\
                     --format onnx
    """
    from ..train.export import export as from_run, export_checkpoint

    if (train_dir is None) == (net is None):
        raise click.UsageError("give --train-dir (a finetune run) or --net with --checkpoint")
    if net is not None:
        if checkpoint is None:
            raise click.UsageError("--net needs --checkpoint")
        written = export_checkpoint(net, checkpoint, output, num_classes=num_classes,
                                    format=format_)
    else:
        if num_classes is not None:
            raise click.UsageError("--num-classes goes with --net (a train dir knows its own)")
        written = from_run(train_dir, output, checkpoint=checkpoint, format=format_)
    click.echo("\n".join(render.export_lines(written)))
    return 0
