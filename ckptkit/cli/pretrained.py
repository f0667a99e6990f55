"""`ckptkit pretrained`: the registry's checkpoints, listed and fetched (no TensorFlow)."""
import os

import click

from .. import render


@click.group()
def pretrained():
    """Well-known pretrained checkpoints: list them, download them, name them.

    Any command takes `pretrained:NAME` as a checkpoint path once NAME is downloaded (or
    added: checkpoint files you already have, under a name of your own).

    \b
    Examples:
      ckptkit pretrained list
      ckptkit pretrained get resnet_v1_50
      ckptkit pretrained add flowers_v3 runs/flowers/best --net inception_v3
      ckptkit finetune --net resnet_v1_50 --checkpoint pretrained:resnet_v1_50 \\
          --data photos/ --train-dir runs/a
    """


@pretrained.command(name="list")
@click.option("--dir", "directory", metavar="DIR", help="Download folder [default: "
              "$CKPTKIT_PRETRAIN_DIR, else pretrained/ in ckptkit's per-user data folder "
              "($CKPTKIT_HOME)].")
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
@click.option("--dir", "directory", metavar="DIR", help="Download folder [default: "
              "$CKPTKIT_PRETRAIN_DIR, else pretrained/ in ckptkit's per-user data folder "
              "($CKPTKIT_HOME)].")
@click.option("--force", is_flag=True, help="Download again and replace what is there.")
@click.option("--from", "source", metavar="ARCHIVE", type=click.Path(dir_okay=False),
              help="The entry's archive, already downloaded: checked (the registry's sha256 "
              "where it has one) and unpacked instead of downloading.")
def pretrained_get(name, directory, force, source):
    """Download, check (sha256, checkpoint CRCs) and unpack a pretrained checkpoint.

    An interrupted download resumes when the command is run again.

    \b
    Examples:
      ckptkit pretrained get resnet_v1_50
      ckptkit pretrained get inception_v3 --dir ~/checkpoints
      ckptkit pretrained get resnet_v1_50 --from ~/Downloads/resnet_v1_50_2016_08_28.tar.gz
    """
    from ..download import get

    with render.byte_progress(f"downloading {name}") as progress:
        fetched = get(name, directory, progress, force=force, source=source)
    if fetched.note:
        click.echo(f"note: {fetched.note}", err=True)
    click.echo("\n".join(render.fetched_lines(fetched, _by_name(directory))))
    return 0


@pretrained.command(name="add")
@click.argument("name")
@click.argument("path")
@click.option("--net", required=True, metavar="NAME", help="The net the checkpoint is of.")
@click.option("--dir", "directory", metavar="DIR", help="Download folder [default: as get].")
@click.option("--force", is_flag=True, help="Replace a checkpoint added under NAME before.")
def pretrained_add(name, path, net, directory, force):
    """Register a checkpoint you already have as pretrained:NAME.

    PATH is an archive (.tar.gz, .tgz, .tar: unpacked as safely as `get` unpacks), a folder
    or any checkpoint path; its files are copied (PATH is left as it is), verified and
    recorded with their sha256, and checked on every later use.

    \b
    Examples:
      ckptkit pretrained add flowers_v3 runs/flowers/best --net inception_v3
      ckptkit pretrained add old_resnet ~/Downloads/resnet_v1_50_2016_08_28.tar.gz \\
          --net resnet_v1_50
    """
    from ..download import add

    added = add(name, path, net, directory, force=force)
    click.echo("\n".join(render.fetched_lines(added, _by_name(directory))))
    return 0


def _by_name(directory):
    """Whether pretrained:NAME finds what went into `directory` (the default folder)."""
    from ..zoo.pretrained import directory_path

    return os.path.realpath(directory_path(directory)) == os.path.realpath(directory_path())
