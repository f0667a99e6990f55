"""ckptkit's command line: one module per command group, each command parsing its options,
calling one library function and rendering the result. This module is the group: it turns
every failure into one line `ckptkit: error: ...` and imports a command's module only when
that command (or the help listing them) is asked for, so `ckptkit inspect` stays lean."""
import importlib
import os
import sys

import click

from .. import __version__
from ..errors import CkptError

COMMANDS = {   # name -> "module:function" in this package
    "inspect": "read:inspect", "verify": "read:verify", "diff": "read:diff",
    "legacy": "read:legacy", "plan": "plan:plan", "surgery": "surgery:surgery",
    "convert": "surgery:convert", "finetune": "train:finetune", "eval": "train:evaluate",
    "predict": "train:predict", "export": "train:export", "search": "search:search",
    "pretrained": "pretrained:pretrained", "port": "port:port",
}


class Group(click.Group):
    """Commands loaded on demand from COMMANDS. Every failure becomes one line and its exit
    code, never a traceback: CkptError (2, or 1 where a check failed), usage errors (2), OS
    errors (2)."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, _, function = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        code = 0
        try:
            rv = super().main(args, prog_name or "ckptkit", standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.NoArgsIsHelpError as e:     # bare `ckptkit`: the help
            click.echo(e.ctx.get_help())
        except click.UsageError as e:
            cmd = e.ctx.command_path if e.ctx else "ckptkit"
            code = fail(f"{e.format_message()} (see '{cmd} --help')", 2)
        except click.ClickException as e:
            code = fail(e.format_message(), 2)
        except click.Abort:
            code = fail("aborted", 130)
        except CkptError as e:
            code = fail(str(e), e.exit_code)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            code = fail(f"{where}{e.strerror or e}", 2)
        except MemoryError:
            code = fail("out of memory", 2)
        except KeyboardInterrupt:
            code = fail("interrupted", 130)
        except Exception as e:   # a bug of ours: still one line, the traceback on request
            if os.environ.get("CKPTKIT_DEBUG"):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            code = fail(f"internal error: {type(e).__name__}: {first} (please report it; "
                        "CKPTKIT_DEBUG=1 shows the traceback)", 2)
        if standalone_mode:
            sys.exit(code)
        return code


def fail(message, code):
    click.echo(f"ckptkit: error: {message}", err=True)
    return code


@click.group(cls=Group, no_args_is_help=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ckptkit")
def cli():
    """Read, check, edit and fine-tune from TensorFlow checkpoints, without starting TF.

    PATH may be a checkpoint prefix (model.ckpt-1000), any of its files, a directory with a
    `checkpoint` state file, a SavedModel directory, a V1 file, .h5/.keras, .npz,
    .safetensors, or pretrained:NAME.

    \b
    Examples:
      ckptkit pretrained get resnet_v1_50
      ckptkit inspect pretrained:resnet_v1_50
      ckptkit plan pretrained:resnet_v1_50 --net resnet_v1_50 --num-classes 5
    """


def main():
    cli.main()
