"""Every suggestion an error makes is something the user can type: a `ckptkit ...` command it
quotes parses (click accepts every option and value), and a bare `--flag` it names is an
option of the command that failed (options the user typed may be named back). The table
covers every error message that suggests a command or an option."""
import re
import shlex

import click
import ml_dtypes
import numpy as np
import pytest

from ckptkit.cli import cli
from helpers.bundle_writer import write_bundle
from helpers.commands import parse_command

QUOTED = re.compile(r"[`'](ckptkit [^`']+)[`']|run: (ckptkit .+?)(?:$|;|\))")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _command(args):
    """The click command `args` invoke (e.g. ["pretrained", "get", ...] -> get)."""
    command, ctx = cli, None
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        command = command.get_command(ctx, name)
    return command


def _options(command):
    return {opt for p in command.params for opt in p.opts if opt.startswith("--")} | {"--help"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hints")
    w = np.ones((2, 3), np.float32)
    return {
        "slots": write_bundle(d / "slots" / "m.ckpt", {"net/w": w, "net/w/Adam": w}).prefix,
        "bf16": write_bundle(d / "bf16" / "m.ckpt",
                             {"net/w": w.astype(ml_dtypes.bfloat16)}).prefix,
        "a": write_bundle(d / "a" / "m.ckpt", {"net/w": w, "net/b": w[0]}).prefix,
        "wide": write_bundle(d / "wide" / "m.ckpt",
                             {"net/w": np.ones((2, 4), np.float32), "net/b": w[0]}).prefix,
        "more": write_bundle(d / "more" / "m.ckpt",
                             {"net/w": w, "net/b": w[0], "net/extra": w}).prefix,
        "out": d / "out",
    }


CASES = {   # id -> (args with {placeholders}, a fragment of the error line)
    "h5-scope-clash": (["convert", "{slots}", "{out}/x.h5"], "ckptkit surgery CHECKPOINT"),
    "npz-bfloat16": (["convert", "{bf16}", "{out}/x.npz"], "--cast float32"),
    "prefer-needs-merge": (["surgery", "{a}", "-o", "{out}/p", "--prefer", "input"],
                           "--prefer needs --merge"),
    "keep-ema-alone": (["surgery", "{a}", "-o", "{out}/e", "--keep-ema"],
                       "--keep-ema goes with --strip-optimizer"),
    "merge-clash": (["surgery", "{a}", "-o", "{out}/m", "--merge", "{a}"], "--prefer"),
    "plan-mismatch": (["plan", "{a}", "--target", "{wide}"], "--allow-mismatch"),
    "plan-strict": (["plan", "{a}", "--target", "{more}", "--strict"], "(--strict)"),
    "inspect-filter": (["inspect", "{a}", "--filter", "zzz"], "--filter 'zzz'"),
    "not-downloaded": (["inspect", "pretrained:resnet_v1_50"], "ckptkit pretrained get"),
    "usage": (["inspect", "{a}", "--bogus"], "see 'ckptkit inspect --help'"),
    "empty-space": (["search", "--net", "lenet", "--data", "{out}", "--study-dir", "{out}/s"],
                    "--param"),
}
TF_CASES = {
    "head-mode-train": (["finetune", "--net", "lenet", "--checkpoint", "{a}", "--data", "{out}",
                         "--train-dir", "{out}/t", "--mode", "head", "--train", "Logits"],
                        "--train, --train-from and --layer-decay"),
    "two-stage": (["finetune", "--net", "lenet", "--checkpoint", "{a}", "--data", "{out}",
                   "--train-dir", "{out}/t", "--mode", "two-stage"], "--train-from SCOPE"),
    "not-a-train-dir": (["eval", "--train-dir", "{out}"], "ckptkit finetune"),
}


def _check(ckptkit, files, args, fragment, monkeypatch, tmp_path):
    monkeypatch.setenv("CKPTKIT_PRETRAIN_DIR", str(tmp_path / "nothing-here"))
    args = [a.format(**files) for a in args]
    code, out, err = ckptkit(*args)
    assert code == 2 and err.startswith("ckptkit: error: ") and err.count("\n") == 1, err
    assert fragment in err
    message = err[len("ckptkit: error: "):]
    quoted = [a or b for a, b in QUOTED.findall(message)]
    for command in quoted:
        words = shlex.split(command)[1:]
        if words[-1] == "--help":       # the command's help: the command must exist
            assert _options(_command(words[:-1]))
        else:
            parse_command(words)
        message = message.replace(command, "")
    typed = {a.partition("=")[0] for a in args}     # naming what the user typed is no advice
    assert set(FLAG.findall(message)) - typed <= _options(_command(args)), message


@pytest.mark.parametrize("case", sorted(CASES))
def test_suggestions_parse(ckptkit, files, monkeypatch, tmp_path, case):
    _check(ckptkit, files, *CASES[case], monkeypatch, tmp_path)


@pytest.mark.tf
@pytest.mark.parametrize("case", sorted(TF_CASES))
def test_training_suggestions_parse(ckptkit, files, monkeypatch, tmp_path, case):
    _check(ckptkit, files, *TF_CASES[case], monkeypatch, tmp_path)


@pytest.mark.parametrize("command, ok", [
    ("ckptkit surgery CHECKPOINT -o out.h5 --strip-optimizer", True),
    ("ckptkit convert CHECKPOINT out.h5 --strip-optimizer", False),
    ("ckptkit pretrained get resnet_v1_50 --dir /tmp/x", True),
    ("ckptkit finetune --train-dir", False),
])
def test_the_parse_check_can_fail(command, ok):
    """The check above is real: a suggestion with an option its command lacks, or without a
    value it needs, does not parse."""
    if ok:
        parse_command(shlex.split(command)[1:])
    else:
        with pytest.raises(click.UsageError):
            parse_command(shlex.split(command)[1:])
