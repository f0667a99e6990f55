"""`ckptkit plan`: what a model restores from a checkpoint and what it trains, before any
session runs. With --net the model is built (TensorFlow); with --target it is read (no TF)."""
import click

from .. import render
from ..errors import CkptError
from ..plan import plan_checkpoint, target_variables
from .options import head_options, net_name, restore_options, restore_options_from


@click.command()
@click.argument("checkpoint")
@click.option("--net", metavar="NAME", callback=lambda ctx, param, value: net_name(value),
              help="Build this net as the model (needs TF): a zoo name, or your own as "
              "file.py:function or package.module:function.")
@click.option("--num-classes", type=click.IntRange(1),
              help="Classes of the new head [default: the net's].")
@head_options
@click.option("--target", metavar="PATH", help="Take the model's variables from another "
              "checkpoint or a JSON list (`inspect --json` output) instead of --net; no TF.")
@restore_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan.")
@click.option("-v", "--verbose", is_flag=True, help="List every variable of every section.")
def plan(checkpoint, net, num_classes, hidden, head_scope, keep_head, target, as_json,
         verbose, **restore):
    """Work out which variables a model restores from a checkpoint, and which it trains.

    Errors (typos, scopes that match nothing, shape mismatches) are reported before any
    session runs; `finetune` with the same options restores exactly what this prints.

    \b
    Examples:
      ckptkit plan pretrained:resnet_v1_50 --net resnet_v1_50 --num-classes 5
      ckptkit plan pretrained:inception_v3 --net inception_v3 --num-classes 5 --train Logits
      ckptkit plan old.ckpt --target new.ckpt --map 'InceptionV3/=v3/'
    """
    options = restore_options_from(restore, checkpoint)
    if bool(net) == bool(target):
        raise CkptError("give the model as exactly one of --net NAME or --target PATH")
    if target:
        if options.layer_decay != 1:    # a listing's order is its names', not the build's
            raise CkptError("--layer-decay follows the order a net builds its layers in: "
                            "give --net, not --target")
        result = plan_checkpoint(checkpoint, target_variables(target), options)
    else:
        from ..train.nets import Model
        from ..train.restore import plan_model
        from ..zoo.nets import get_net

        model = Model(net, num_classes or get_net(net).num_classes, hidden=hidden,
                      head_scope=head_scope, keep_head=keep_head)
        result = plan_model(checkpoint, model, options)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        render.emit_json(result.to_json())
    else:
        click.echo("\n".join(render.plan_table(result, verbose)))
    return 0
