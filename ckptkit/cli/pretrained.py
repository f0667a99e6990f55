"""`ckptkit pretrained`: the registry's checkpoints, listed and fetched (no TensorFlow)."""
import click

from .. import render


@click.group()
def pretrained():
    """Well-known pretrained checkpoints: list them, download them, name them.

    Any command takes `pretrained:NAME` as a checkpoint path once NAME is downloaded.

    \b
    Examples:
      ckptkit pretrained list
      ckptkit pretrained get resnet_v1_50
      ckptkit finetune --net resnet_v1_50 --checkpoint pretrained:resnet_v1_50 \\
          --data photos/ --train-dir runs/a
    """


@pretrained.command(name="list")
@click.option("--dir", "directory", metavar="DIR", help="Download folder [default: pretrain/].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list.")
def pretrained_list(directory, as_json):
    """The registry's checkpoints and which of them are here.

    \b
    Examples:
      ckptkit pretrained list
      ckptkit pretrained list --json
    """
    from ..download import listing

    items = listing(directory)
    if as_json:
        render.emit_json(items)
    else:
        click.echo("\n".join(render.pretrained_table(items)))
    return 0


@pretrained.command(name="get")
@click.argument("name")
@click.option("--dir", "directory", metavar="DIR", help="Download folder [default: pretrain/].")
@click.option("--force", is_flag=True, help="Download again and replace what is there.")
def pretrained_get(name, directory, force):
    """Download, check (sha256, checkpoint CRCs) and unpack a pretrained checkpoint.

    An interrupted download resumes when the command is run again.

    \b
    Examples:
      ckptkit pretrained get resnet_v1_50
      ckptkit pretrained get inception_v3 --dir ~/checkpoints
    """
    from ..download import get

    with render.byte_progress(f"downloading {name}") as progress:
        fetched = get(name, directory, progress, force=force)
    if fetched.note:
        click.echo(f"note: {fetched.note}", err=True)
    click.echo("\n".join(render.fetched_lines(fetched)))
    return 0
