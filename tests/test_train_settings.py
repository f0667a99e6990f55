"""A run's Settings (ckptkit/train/settings.py): the checks that need no TensorFlow, the model
and the stages they make."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from ckptkit.errors import CkptError
from ckptkit.plan import RestoreOptions
from ckptkit.train.settings import (RESUMABLE, Settings, changes, check, flag, from_json,
                                    resolved, stages)


def _settings(**kwargs):
    return Settings(**{"net": "lenet", "data": "digits", "train_dir": "run",
                       "checkpoint": "pre", **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="fast"), r"^unknown mode 'fast'; use one of head, features"),
    (dict(mode="head", restore=RestoreOptions(train=("Logits",))),
     r"^--mode head trains the new head only"),
    (dict(mode="features", restore=RestoreOptions(layer_decay=0.7)),
     r"^--mode features trains the new head only; --train, --train-from and --layer-decay "
     r"belong to --mode finetune or two-stage$"),
    (dict(mode="two-stage"), r"^--mode two-stage needs --train-from"),
    (dict(mode="head", checkpoint=None), r"^--mode head needs --checkpoint"),
    (dict(mode="features", keep_head=True),
     r"^--keep-head does not go with --mode features: it trains a new head on cached "
     r"features; use --mode head$"),
    (dict(keep_head=True, hidden=(8,)),
     r"^--head \(hidden layers\) belongs to a new head; --keep-head keeps the net's own"),
    (dict(epochs=0), r"^--epochs must be at least 1"),
    (dict(net="lenett"), r"^unknown net 'lenett'"),
    (dict(optimizer="adamm"), r"^unknown optimizer 'adamm'"),
    (dict(schedule="linear"), r"^unknown schedule 'linear'; use one of constant"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(CkptError, match=message) as caught:
        check(_settings(**kwargs))
    assert "\n" not in str(caught.value)


def test_good_settings_pass():
    check(_settings(mode="head", keep_head=True))
    check(_settings(mode="two-stage", restore=RestoreOptions(train_from="LeNet/fc3")))


def test_head_only_stages_train_the_model_s_head_scopes():
    new = _settings(mode="two-stage", epochs=4, restore=RestoreOptions(train_from="LeNet/fc3"))
    first, second = stages(new, new.model(5))
    assert (first.mode, first.train, first.end_epoch) == ("head", ("Logits",), 2)
    assert (second.train, second.train_from, second.start_epoch) == ((), "LeNet/fc3", 2)
    own = _settings(mode="head", keep_head=True, head_scope="Head")
    model = own.model(10)
    assert (model.keep_head, model.head_scope) == (True, "Head")
    assert [s.train for s in stages(own, model)] == [("LeNet/fc4",)]
    finetune = _settings(restore=RestoreOptions(train=("LeNet/fc3", "Logits")))
    assert [s.train for s in stages(finetune, finetune.model(5))] == [("LeNet/fc3", "Logits")]


def test_importing_and_checking_settings_loads_no_tensorflow():
    code = ("import sys; from ckptkit.train.settings import Settings, check; "
            "check(Settings(net='lenet', data='d', train_dir='r')); "
            "print(sorted(m for m in ('tensorflow', 'tf_slim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_gpus_is_checked_without_tensorflow():
    with pytest.raises(CkptError, match=r"^--gpus takes GPU numbers like 0,1, not 'abc'$"):
        check(_settings(gpus="abc"))


def test_changes_name_each_setting_as_its_flag_with_old_and_new_values():
    old = _settings(lr=0.001, hidden=(), restore=RestoreOptions(exclude=("Logits",)))
    new = _settings(lr=0.01, hidden=(256, 128), augment=False, keep_head=False,
                    restore=RestoreOptions(exclude=("Logits", "Aux"), lr_mults=("Logits=10",)),
                    epochs=20, patience=3)
    assert [(flag(name), was, now) for name, was, now in changes(old, new)] == [
        ("--head", "none", "256,128"),
        ("--epochs", "10", "20"), ("--lr", "0.001", "0.01"), ("--no-augment", "off", "on"),
        ("--patience", "0", "3"), ("--exclude", "Logits", "Logits,Aux"),
        ("--lr-mult", "none", "Logits=10")]
    assert {"epochs", "patience"} <= set(RESUMABLE) and "lr" not in RESUMABLE
    assert changes(old, old) == []


def test_changes_compare_paths_absolute_and_two_stage_by_its_head_stage(tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert changes(_settings(data="digits", train_dir="run"),
                   _settings(data=str(tmp_path / "digits"), train_dir="./run")) == []
    two = dict(mode="two-stage", restore=RestoreOptions(train_from="LeNet/fc3"))
    # more epochs would move half-of-epochs' boundary: a change, unless --head-epochs keeps it
    assert changes(_settings(epochs=4, **two), _settings(epochs=8, **two)) == [
        ("epochs", "4", "8"), ("head_epochs", "2", "4")]
    assert changes(_settings(epochs=4, **two),
                   _settings(epochs=8, head_epochs=2, **two)) == [("epochs", "4", "8")]


def test_run_json_settings_read_back_with_defaults_for_what_they_predate():
    s = _settings(hidden=(8,), restore=RestoreOptions(exclude=("Logits",)))
    saved = json.loads(json.dumps(dataclasses.asdict(s)))
    del saved["keep_head"], saved["restore"]["strict"]
    saved["from_the_future"] = 1
    assert changes(from_json(saved), s) == []
    with pytest.raises(CkptError, match=r"^run\.json: bad settings entry"):
        from_json(None)


def test_resolved_makes_the_data_paths_absolute_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = os.getcwd()
    s = resolved(_settings(data="digits", val_data="../val", checkpoint="pretrained:lenet",
                           cache_dir="cache"))
    assert (s.data, s.val_data, s.checkpoint, s.cache_dir, s.train_dir) == (
        os.path.join(here, "digits"), os.path.join(os.path.dirname(here), "val"),
        "pretrained:lenet", "cache", "run")
    assert resolved(_settings()).val_data is None
    assert changes(_settings(), resolved(_settings())) == []
