"""Command lines as the CLI would take them, checked without running anything."""
import click


def parse_command(args):
    """Parse `args` (after `ckptkit`) down to the command they name, as the CLI would, without
    running it; click raises for an unknown option, a bad value or a missing one."""
    from ckptkit.cli import cli

    command, ctx = cli, cli.make_context("ckptkit", list(args))
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return command
