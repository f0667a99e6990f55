"""One declaration of the shared options (ckptkit/cli/options.py): `plan`, `finetune` and
`search` expose the same restore options, `finetune` and `search` the same training options,
and for the same options the plan `finetune` applies (plan.json) is the plan `plan --json`
prints."""
import json

import pytest

from ckptkit.cli import plan as plan_command, search as search_command, train
from ckptkit.cli.options import RESTORE_FIELDS
from helpers.images import digits_folder

HEAD = ("hidden", "head_scope", "keep_head")
FINETUNE_ONLY = {"train_dir", "compare_scratch", "restart", "as_json"}


def _declared(command, names=None):
    """name -> everything a user sees of the option: flags, type, default, help, and how it
    takes values."""
    return {p.name: (tuple(p.opts), repr(p.type), p.default, p.help, p.multiple, p.is_flag,
                     p.callback, p.metavar)
            for p in command.params if names is None or p.name in names}


COMMANDS = {"plan": plan_command.plan, "finetune": train.finetune,
            "search": search_command.search}


@pytest.mark.parametrize("name", ["finetune", "search"])
def test_restore_and_head_options_are_plans(name):
    shared = RESTORE_FIELDS + HEAD
    assert len(_declared(plan_command.plan, shared)) == len(shared)
    assert _declared(COMMANDS[name], shared) == _declared(plan_command.plan, shared)


def test_search_takes_every_training_option_of_finetune():
    finetune = _declared(train.finetune)
    search = _declared(search_command.search)
    assert {k: v for k, v in finetune.items() if k not in FINETUNE_ONLY} == \
        {k: v for k, v in search.items() if k in finetune and k not in FINETUNE_ONLY}
    assert set(finetune) - set(search) == FINETUNE_ONLY - {"as_json"}   # search has its own
    assert {"keep_head", "include", "strict", "head_scope", "match", "maps",
            "use_moving_averages", "allow_mismatch"} <= set(finetune)


@pytest.mark.parametrize("flag", ["--keep-head", "--include", "--strict", "--head-scope",
                                  "--match", "--map", "--use-moving-averages",
                                  "--allow-mismatch"])
def test_finetune_help_lists_plans_options(ckptkit, flag):
    code, out, _ = ckptkit("finetune", "--help")
    assert code == 0 and f"  {flag}" in out


# --- plan --json equals what finetune applies ------------------------------------------------

FAST = ["--batch-size", "16", "--dropout", "0", "--optimizer", "adam", "--lr", "1e-3",
        "--no-augment", "--epochs", "1"]


@pytest.fixture(scope="module")
def ten_digits(tmp_path_factory):
    """Digits 0-9, for LeNet's own 10-class classifier (--keep-head)."""
    root = tmp_path_factory.mktemp("ten")
    digits_folder(root / "train", range(10), 8)
    digits_folder(root / "val", range(10), 4, offset=8)
    return root


CASES = {   # id -> (restore options, classes: "five" for the target data, "ten" for digits)
    "exclude-train-lr-mult": (["--exclude", "Logits", "--train", "Logits,LeNet/fc3",
                               "--lr-mult", "Logits=10"], "five"),
    "include-strict": (["--include", "LeNet", "--strict"], "five"),
    "keep-head": (["--keep-head", "--train-from", "LeNet/fc3"], "ten"),
    "head-scope-map": (["--head-scope", "NewHead", "--map", "re:^Logits/(.*)=NewHead/\\1",
                        "--match", "component"], "five"),
}


@pytest.mark.tf
@pytest.mark.parametrize("case", sorted(CASES))
def test_finetune_applies_the_plan_that_plan_prints(ckptkit, pretrained, target, ten_digits,
                                                    tmp_path, case):
    options, classes = CASES[case]
    data, count = (target, 5) if classes == "five" else (ten_digits, 10)
    checkpoint = pretrained
    code, out, err = ckptkit("plan", checkpoint, "--net", "lenet", "--num-classes", count,
                             *options, "--json")
    assert code == 0, err
    code, _, err = ckptkit("finetune", "--net", "lenet", "--checkpoint", checkpoint,
                           "--data", data, "--train-dir", tmp_path / "run", *FAST, *options)
    assert code == 0, err
    applied = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert applied == json.loads(out)
    assert applied["restore"]
