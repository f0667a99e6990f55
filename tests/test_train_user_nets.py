"""A user's own net (`--net file.py:fn`): its facts read from the function, planned, fine-tuned,
evaluated, used for prediction and exported, resumed from another working directory; and
one clear line for each way such a net can be wrong."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers.images import digits_folder

from ckptkit.errors import CkptError
from ckptkit.zoo.nets import canonical, get_net

pytestmark = pytest.mark.tf

MYNET = '''
"""A legacy project's own net (the user-net contract)."""
from ckptkit.tfcompat import slim, tf


def mynet(images, num_classes=10, is_training=True, scope="MyNet"):
    with tf.variable_scope(scope, "MyNet", [images]):
        net = slim.conv2d(images, 8, [3, 3], scope="conv1")
        net = slim.max_pool2d(net, [2, 2], scope="pool1")
        net = slim.fully_connected(slim.flatten(net), 16, scope="fc1")
        if not num_classes:
            return net, {}
        logits = slim.fully_connected(net, num_classes, activation_fn=None, scope="logits")
    return logits, {}


def mynet_arg_scope(weight_decay=0.0):
    with slim.arg_scope([slim.conv2d, slim.fully_connected],
                        weights_regularizer=slim.l2_regularizer(weight_decay)) as sc:
        return sc


mynet.default_image_size = 28
mynet.preprocessing = "lenet"
mynet.channels = 1
mynet.classifier_scopes = ["MyNet/logits"]
mynet.arg_scope = mynet_arg_scope
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A legacy project: mynet.py, a checkpoint saved from it by TF, and digit images."""
    root = tmp_path_factory.mktemp("legacy")
    (root / "mynet.py").write_text(MYNET)
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, ".")
        from mynet import mynet
        from ckptkit.tfcompat import tf
        tf.set_random_seed(0)
        mynet(tf.placeholder(tf.float32, [1, 28, 28, 1]))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, "ckpt/model.ckpt", write_meta_graph=False)
        """)
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True,
                   capture_output=True)
    digits_folder(root / "data", [0, 1, 2], 12)
    return root


def test_the_net_s_facts_come_from_its_function(project, monkeypatch):
    monkeypatch.chdir(project)
    record = get_net("mynet.py:mynet")
    ref = f"{project / 'mynet.py'}:mynet"
    assert record == get_net(ref) and canonical("mynet.py:mynet") == ref
    assert (record.name, record.scope, record.num_classes, record.image_size,
            record.preprocessing, record.channels, record.classifier_scopes,
            record.arg_scope) == (ref, "MyNet", 10, 28, "lenet", 1, ("MyNet/logits",),
                                  f"{project / 'mynet.py'}:mynet_arg_scope")


def test_plan_finetune_eval_predict_export_and_resume(project, ckptkit, monkeypatch,
                                                      tmp_path):
    monkeypatch.chdir(project)
    code, out, err = ckptkit("plan", "ckpt/model.ckpt", "--net", "mynet.py:mynet",
                             "--num-classes", "3", "--json")
    plan = json.loads(out)
    assert code == 0 and "MyNet's classifier" not in err and "(MyNet/logits) is not" in err
    assert sorted(plan["excluded_tensors"]) == ["MyNet/logits/biases", "MyNet/logits/weights"]
    assert sorted(plan["restore"]) == ["MyNet/conv1/biases", "MyNet/conv1/weights",
                                       "MyNet/fc1/biases", "MyNet/fc1/weights"]

    run = tmp_path / "run"
    command = ["finetune", "--net", "mynet.py:mynet", "--checkpoint", "ckpt/model.ckpt",
               "--data", "data", "--epochs", "1", "--batch-size", "8", "--train-dir", run]
    code, _, err = ckptkit(*command)
    assert code == 0, err
    saved = json.loads((run / "run.json").read_text())
    assert saved["model"]["net"] == f"{project / 'mynet.py'}:mynet"
    assert json.loads((run / "plan.json").read_text()) == plan

    code, out, err = ckptkit("eval", "--train-dir", run, "--json")   # the run's val split
    assert code == 0, err
    assert 0 <= json.loads(out)["accuracy"] <= 1
    monkeypatch.chdir(tmp_path)                       # anywhere else: the run rebuilds it
    code, out, err = ckptkit("predict", "--train-dir", run, project / "data" / "1", "--json")
    assert code == 0 and len(json.loads(out)) == 12, err
    code, _, err = ckptkit("export", "--train-dir", run, "-o", tmp_path / "exported")
    assert code == 0, err
    assert (tmp_path / "exported" / "saved_model" / "saved_model.pb").is_file()

    monkeypatch.chdir(project)
    code, _, err = ckptkit(*command[:command.index("--epochs") + 1], "2",
                           *command[command.index("--epochs") + 2:])
    assert code == 0, err
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]


@pytest.mark.parametrize("source, ref, message", [
    (None, "missing.py:mynet", r"^no Python file \S+missing\.py$"),
    ("raise RuntimeError('no GPU here')\n", "broken.py:f",
     r"^cannot load \S+broken\.py: RuntimeError: no GPU here$"),
    ("x = 1\n", "attr.py:mynet", r"^\S+attr\.py defines no 'mynet'$"),
    ("def f(images, num_classes=10, is_training=True):\n    pass\n", "noscope.py:f",
     r"give the net's scope as a default of its 'scope' parameter or as f\.scope"),
    ("def f(images, num_classes=10, scope='F'):\n    pass\nf.preprocessing = 'jpeg'\n",
     "prep.py:f", r"preprocessing 'jpeg' is not one of vgg, inception"),
    ("def f(images, num_classes=10, scope='F'):\n    pass\nf.arg_scope = print\n",
     "args.py:f", r"its arg_scope must be a function of its module"),
])
def test_a_wrong_user_net_is_one_line(tmp_path, monkeypatch, source, ref, message):
    monkeypatch.chdir(tmp_path)
    if source is not None:
        (tmp_path / ref.partition(":")[0]).write_text(source)
    with pytest.raises(CkptError, match=message) as e:
        get_net(ref)
    assert "\n" not in str(e.value)
    assert not any(name.startswith("ckptkit_user_net_") and os.path.basename(
        getattr(module, "__file__", "") or "") == "broken.py"
        for name, module in sys.modules.items())
