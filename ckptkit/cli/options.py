"""Option bundles declared once and shared by the commands that take them (STYLE.md habit 11):
`plan`, `finetune` and `search` take the restore options object for object, `finetune` and
`search` the training options, so their names, types, defaults and help cannot drift.

Values arrive parsed: comma lists split (slim's `--exclude a,b`), layer sizes as tuples;
`restore_options_from(kwargs)` turns a command's keyword arguments into a RestoreOptions.
"""
import dataclasses

import click

from ..errors import CkptError
from ..plan import RestoreOptions
from ..scopes import MATCH_MODES
from ..train.devices import DEVICES       # these two modules load no TensorFlow
from ..train.settings import MODES, OPTIMIZERS, SCHEDULES, Settings
from ..zoo.nets import canonical
from ..zoo.pretrained import pretrained_ema


def bundle(*options):
    """One decorator applying `options` (click.option decorators) in the order listed."""
    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def _patterns(ctx, param, values):
    """Repeatable options that also take slim-style comma lists: --exclude a,b --exclude c."""
    return tuple(p.strip() for value in values for p in value.split(",") if p.strip())


class Sizes(click.ParamType):
    """'256,128' -> (256, 128): the hidden layers of a new head."""

    name = "sizes"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(n) for n in value.split(",") if n.strip())
        except ValueError:
            sizes = (0,)
        if any(n < 1 for n in sizes):
            raise CkptError(f"{param.opts[0]} takes layer sizes like 256,128, not {value!r}")
        return sizes


restore_options = bundle(
    click.option("--exclude", multiple=True, metavar="SCOPES", callback=_patterns,
                 help="Model scopes not to restore (repeatable, or comma-separated)."),
    click.option("--include", multiple=True, metavar="SCOPES", callback=_patterns,
                 help="Restore only model variables under these scopes."),
    click.option("--train", multiple=True, metavar="SCOPES", callback=_patterns,
                 help="Scopes the optimizer updates (default: all trainable)."),
    click.option("--train-from", metavar="SCOPE",
                 help="Freeze every variable created before this scope."),
    click.option("--lr-mult", "lr_mults", multiple=True, metavar="SCOPE=MULT",
                 callback=lambda ctx, param, values: tuple(values),
                 help="Learning-rate multiplier for trainable scopes, e.g. Logits=10."),
    click.option("--layer-decay", type=click.FloatRange(0, 1, min_open=True), default=1.0,
                 metavar="FACTOR",
                 help="Layer-wise learning-rate decay: the last trained layer (block) at the "
                      "full rate, each earlier one at FACTOR times the next, e.g. 0.7."),
    click.option("--map", "maps", multiple=True, metavar="OLD=NEW",
                 callback=lambda ctx, param, values: tuple(values),
                 help="Rename checkpoint scopes, in order: 'InceptionV3/=v3/', "
                      "'re:^(.*)=net/\\1'."),
    click.option("--match", type=click.Choice(MATCH_MODES), default="component",
                 show_default=True,
                 help="How scope patterns match: whole name components, tf-slim's raw prefix, "
                      "or pair names by their common suffix."),
    click.option("--use-moving-averages/--no-moving-averages", default=None,
                 help="Restore variables from their ExponentialMovingAverage shadows "
                 "[default: yes for a pretrained:NAME whose entry says its shadows are the "
                 "weights to use, else no]."),
    click.option("--strict", is_flag=True, help="Fail on any variable the checkpoint lacks."),
    click.option("--allow-mismatch", is_flag=True,
                 help="Skip variables whose shape differs (reported), instead of failing."),
)
RESTORE_FIELDS = tuple(f.name for f in dataclasses.fields(RestoreOptions))


def restore_options_from(kwargs, checkpoint):
    """Pop the restore options out of a command's keyword arguments: a RestoreOptions, the
    EMA default taken from `checkpoint`'s pretrained entry."""
    options = {name: kwargs.pop(name) for name in RESTORE_FIELDS}
    if options["use_moving_averages"] is None:
        options["use_moving_averages"] = pretrained_ema(checkpoint)
    return RestoreOptions(**options)


head_options = bundle(
    click.option("--head", "hidden", type=Sizes(), default="", metavar="SIZES",
                 help="Hidden layers of the new head, e.g. 256,128."),
    click.option("--head-scope", default="Logits", show_default=True,
                 help="Variable scope of the new head."),
    click.option("--keep-head", is_flag=True,
                 help="Keep the net's original classifier instead of a new head."),
)

training_options = bundle(
    click.option("--net", metavar="NAME", callback=lambda ctx, param, value: net_name(value),
                 help="The net to build: a zoo name, or your own as file.py:function or "
                 "package.module:function."),
    click.option("--checkpoint", metavar="PATH",
                 help="Pretrained checkpoint to restore from (omit to train from scratch)."),
    click.option("--data", metavar="PATH", help="Image folder (one sub-folder per class, "
                 "optional train/ and val/), TFRecord glob or folder, or .npz (X, y)."),
    click.option("--val-data", metavar="PATH", help="Validation data in the same form."),
    click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 help="Hold out this fraction (stratified, seeded) [default: 0.1 when the "
                      "data has no val/ split]."),
    click.option("--num-classes", type=click.IntRange(1),
                 help="Expected classes (default: the data's); a mismatch is an error."),
    click.option("--mode", type=click.Choice(MODES), default="finetune", show_default=True,
                 help="head: train the new head on a frozen backbone; features: the same on "
                      "cached backbone features; finetune: train --train/--train-from scopes; "
                      "two-stage: head first, then unfreeze from --train-from."),
    restore_options,
    head_options,
    click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.5,
                 show_default=True, help="Dropout rate before the head's layers."),
    click.option("--image-size", type=click.IntRange(8),
                 help="Input size (default: the net's)."),
    click.option("--epochs", type=click.IntRange(1), default=10, show_default=True),
    click.option("--head-epochs", type=click.IntRange(1),
                 help="two-stage: epochs of the head stage [default: half]."),
    click.option("--stage2-lr", type=click.FloatRange(0, min_open=True), default=0.1,
                 show_default=True, help="two-stage: learning-rate factor of stage 2."),
    click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="momentum",
                 show_default=True),
    click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.01,
                 show_default=True, help="Base learning rate."),
    click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True),
    click.option("--schedule", type=click.Choice(SCHEDULES), default="constant",
                 show_default=True),
    click.option("--warmup-epochs", type=click.FloatRange(0), default=0.0,
                 help="Linear learning-rate warm-up."),
    click.option("--decay-epochs", type=click.FloatRange(0), default=0.0,
                 help="step/exponential: epochs per decay."),
    click.option("--decay-rate", type=click.FloatRange(0, min_open=True), default=0.1,
                 show_default=True),
    click.option("--weight-decay", type=click.FloatRange(0), default=0.0,
                 help="L2 on trained weights (adamw: decoupled decay); the net's own "
                      "arg_scope weight decay applies too."),
    click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0),
    click.option("--clip-norm", type=click.FloatRange(0), default=0.0,
                 help="Clip gradients by global norm."),
    click.option("--no-augment", is_flag=True, help="No random crops/flips while training."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--keep", type=click.IntRange(1), default=3, show_default=True,
                 help="Checkpoints to keep."),
    click.option("--save-every", type=click.FloatRange(1), default=600.0, show_default=True,
                 help="Seconds between checkpoints, besides the best epoch's and the last one."),
    click.option("--patience", type=click.IntRange(0), default=0,
                 help="Stop after this many epochs without a better val accuracy (0: never)."),
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
    click.option("--gpus", metavar="IDS", help="Visible GPUs, e.g. 0,1."),
    click.option("--mixed-precision", is_flag=True, help="float16 compute on GPUs."),
    click.option("--cache-dir", metavar="DIR",
                 help="Feature cache [default: ~/.cache/ckptkit]."),
)


def training_settings(kwargs, **fixed):
    """A train.settings.Settings from the training options in `kwargs` (popped) and `fixed`
    (train_dir, compare_scratch)."""
    restore = restore_options_from(kwargs, kwargs.get("checkpoint"))
    kwargs.update(fixed, augment=not kwargs.pop("no_augment"),
                  image_size=kwargs["image_size"] or 0,
                  head_epochs=kwargs["head_epochs"] or 0)
    return Settings(restore=restore, **kwargs)


def net_name(value):
    """--net as given, a user net's file made absolute (its runs rebuild it from anywhere)."""
    return canonical(value) if value else value


def require(kwargs, *names):
    """Options a command needs although the shared declaration cannot make them required
    (`search --report` needs none of them)."""
    for name in names:
        if not kwargs.get(name):
            raise click.UsageError(f"Missing option '--{name.replace('_', '-')}'.")
