"""The search space parser of `ckptkit search` (pure: no TensorFlow, no Optuna)."""
import subprocess
import sys

import pytest

from ckptkit.errors import CkptError
from ckptkit.train.search.space import parse_space


class FakeTrial:
    """Optuna's suggest_* API, answering the first choice or the low end."""

    def __init__(self):
        self.asked = {}

    def suggest_categorical(self, name, choices):
        self.asked[name] = ("categorical", tuple(choices))
        return choices[-1]

    def suggest_int(self, name, low, high, log=False):
        self.asked[name] = ("int", low, high, log)
        return high

    def suggest_float(self, name, low, high, log=False):
        self.asked[name] = ("float", low, high, log)
        return low


def test_the_issue_s_parameters_parse_and_convert_to_settings():
    space = parse_space([
        "lr=loguniform:1e-5:1e-1", "optimizer=choice:sgd,momentum,adam",
        "dropout=uniform:0:0.6", "head=choice:none,128,256x128",
        "train_from=choice:Logits,resnet_v1_50/block4", "batch-size=logint:8:64",
        "--epochs=int:2:5", "train=choice:Logits,Logits+LeNet/fc3", "augment=choice:true,false",
        "lr-mult=choice:Logits=10", "layer-decay=uniform:0.6:0.9"])
    assert space.names == ["lr", "optimizer", "dropout", "head", "train_from", "batch_size",
                           "epochs", "train", "augment", "lr_mult", "layer_decay"]
    trial = FakeTrial()
    values = space.suggest(trial)
    assert values == {"lr": 1e-5, "optimizer": "adam", "dropout": 0.0, "hidden": (256, 128),
                      "train_from": "resnet_v1_50/block4", "batch_size": 64, "epochs": 5,
                      "train": ("Logits", "LeNet/fc3"), "augment": False,
                      "lr_mults": ("Logits=10",), "layer_decay": 0.6}
    assert trial.asked["lr"] == ("float", 1e-5, 1e-1, True)
    assert trial.asked["batch_size"] == ("int", 8, 64, True)
    assert trial.asked["head"] == ("categorical", ("none", "128", "256x128"))
    assert space.first()["hidden"] == () and space.first()["batch_size"] == 8
    assert space.settings({"head": "128", "lr": 0.5}) == {"hidden": (128,), "lr": 0.5}
    assert space.to_json()["lr"] == "loguniform:1e-05:0.1"


def test_a_toml_file_and_params_combine_and_params_win(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('lr = "loguniform:1e-4:1e-1"\noptimizer = ["sgd", "adam"]\n'
                    'augment = [true, false]\nhidden = ["none", "64"]\n')
    space = parse_space(["lr=choice:0.01,0.1"], str(path))
    assert space.to_json() == {"lr": "choice:0.01,0.1", "optimizer": "choice:sgd,adam",
                               "augment": "choice:true,false", "hidden": "choice:none,64"}
    assert space.grid() == {"lr": ["0.01", "0.1"], "optimizer": ["sgd", "adam"],
                            "augment": ["true", "false"], "hidden": ["none", "64"]}
    assert space.size() == 16


@pytest.mark.parametrize("params, message", [
    ([], r"^empty search space: give --space FILE or --param NAME=DIST"),
    (["lrr=uniform:0:1"], r"^--param unknown parameter 'lrr'; closest: lr\b"),
    (["optimiser=choice:sgd"], r"unknown parameter 'optimiser'; closest: optimizer"),
    (["learning_rate=loguniform:1e-4:1e-1"],
     r"^--param unknown parameter 'learning_rate'; closest: lr \(searchable: "),
    (["--learning-rate=uniform:0.1:1"], r"unknown parameter '--learning-rate'; closest: lr \("),
    (["learnin_rate=uniform:0.1:1"], r"unknown parameter 'learnin_rate'; closest: lr, "),
    (["num_epochs_per_decay=choice:2"], r"closest: decay_epochs \("),
    (["net=choice:lenet,vgg_16"], r"^--param net: not searchable; give --net once"),
    (["data=choice:a,b"], r"not searchable; give --data"),
    (["keep-head=choice:true,false"], r"not searchable; give --keep-head once"),
    (["lr"], r"^--param 'lr': expected NAME=DIST"),
    (["lr="], r"expected NAME=DIST"),
    (["lr=normal:0:1"], r"^--param lr=normal:0:1: expected DIST as one of uniform:LO:HI"),
    (["lr=0.1"], r"expected DIST as one of"),
    (["lr=uniform:1"], r"uniform needs two bounds"),
    (["lr=uniform:a:b"], r"the bounds must be numbers"),
    (["lr=uniform:0.1:0.01"], r"needs LO < HI, got 0.1 and 0.01"),
    (["lr=loguniform:0:1"], r"^--param lr=loguniform:0:1: a log scale needs LO > 0"),
    (["lr=uniform:0:1"], r"0.0 is out of range \(must be positive\)"),
    (["lr=uniform:1e-3:inf"], r"needs LO < HI"),
    (["dropout=uniform:0:1"], r"1.0 is out of range \(must be in \[0, 1\)\)"),
    (["batch_size=uniform:8:64"], r"batch_size is an integer; use int:LO:HI"),
    (["batch_size=int:8.5:64"], r"the bounds must be integers"),
    (["batch_size=int:0:4"], r"0 is out of range \(must be at least 1\)"),
    (["optimizer=uniform:0:1"], r"optimizer takes choice:A,B,..."),
    (["optimizer=choice:sgd,adamm"], r"'adamm' is not one of sgd, momentum"),
    (["optimizer=choice:sgd,,adam"], r"choice needs values separated by commas"),
    (["optimizer=choice:"], r"choice needs values"),
    (["optimizer=choice:sgd,sgd"], r"a choice is listed twice"),
    (["lr=choice:0.1,fast"], r"'fast' is not a number"),
    (["epochs=choice:2,three"], r"'three' is not an integer"),
    (["head=choice:none,12x-3"], r"head sizes look like none, 128 or 256x128"),
    (["augment=choice:true,maybe"], r"'maybe' is not true or false"),
    (["mode=choice:head,fast"], r"'fast' is not one of head, features"),
    (["lr=uniform:0.1:1", "--lr=uniform:0.2:1"], r"--param --lr given twice"),
    (["no-augment=choice:true"], r"search `augment` with choice:true,false"),
])
def test_bad_spaces_fail_with_one_clear_line(params, message):
    with pytest.raises(CkptError, match=message) as caught:
        parse_space(params)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ('lr = 0.1\n', r"space.toml: lr = 0.1: give a DIST string"),
    ('lr = [\n', r"space.toml: not valid TOML"),
    ('lrr = "uniform:0:1"\n', r"space.toml: unknown parameter 'lrr'"),
    ('lr = []\n', r"give a DIST string"),
])
def test_bad_space_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(CkptError, match=message):
        parse_space([], str(path))


def test_grid_needs_choices():
    with pytest.raises(CkptError, match=r"--sampler grid needs choice: parameters; lr are "):
        parse_space(["lr=uniform:0.1:1", "optimizer=choice:sgd"]).grid()


def test_parsing_loads_neither_tensorflow_nor_optuna():
    code = ("import sys; from ckptkit.train.search.space import parse_space; "
            "parse_space(['lr=loguniform:1e-5:1e-1', 'head=choice:none,128']); "
            "print(sorted(m for m in ('tensorflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_search_command_rejects_a_bad_space_in_one_line(ckptkit, tmp_path):
    code, out, err = ckptkit("search", "--net", "lenet", "--data", tmp_path,
                             "--study-dir", tmp_path / "s", "--param", "lrr=uniform:0:1")
    assert code == 2 and out == ""
    assert err.startswith("ckptkit: error: --param unknown parameter 'lrr'; closest: lr")
    assert err.count("\n") == 1
    assert not (tmp_path / "s").exists()
    code, out, err = ckptkit("search", "--net", "lenet", "--study-dir", tmp_path / "s",
                             "--param", "lr=uniform:0.1:1")
    assert code == 2 and "Missing option '--data'" in err
    code, out, err = ckptkit("search", "--report", tmp_path)
    assert code == 2 and f"{tmp_path}: not a search study dir" in err
    for keep in ("0", "some"):
        code, out, err = ckptkit("search", "--net", "lenet", "--data", tmp_path,
                                 "--study-dir", tmp_path / "s", "--param", "lr=uniform:0.1:1",
                                 "--keep-models", keep)
        assert code == 2 and err.count("\n") == 1, err
        assert f"--keep-models': {keep!r}: give a number of trials" in err, err
    assert not (tmp_path / "s").exists()
