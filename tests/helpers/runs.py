"""What every net's tests share: which variables a graph's weight decay reaches, short
fine-tuning runs in two modes, a checkpoint's values, and that a fine-tuned run evaluates,
predicts and exports."""
import json


def decayed(graph):
    """Names of the variables a regularization loss of `graph` reads."""
    names, todo = set(), [loss.op for loss in graph.get_collection("regularization_losses")]
    while todo:
        op = todo.pop()
        if op.type == "VarHandleOp":
            names.add(op.name)
        todo.extend(t.op for t in op.inputs)
    return names


def serve(ckptkit, run, images, out):
    """`eval`, `predict` (of `images`) and `export` (to `out`) of train dir `run`, each
    checked to succeed; (eval's JSON, predict's JSON, export.json)."""
    code, evaluated, err = ckptkit("eval", "--train-dir", run, "--json")
    assert code == 0, err
    code, predicted, err = ckptkit("predict", "--train-dir", run, *images, "--json")
    assert code == 0, err
    code, _, err = ckptkit("export", "--train-dir", run, "-o", out)
    assert code == 0, err
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "frozen_graph.pb").stat().st_size > 0
    return (json.loads(evaluated), json.loads(predicted),
            json.loads((out / "export.json").read_text()))


def finetune_modes(net, checkpoint, data, root, modes):
    """`ckptkit finetune --json` of `net` from `checkpoint`, one epoch on 32x32 `data`, for each
    {mode: extra arguments}: {mode: (exit code, stdout, stderr, train dir)}."""
    from click.testing import CliRunner

    from ckptkit.cli import cli

    found = {}
    for mode, extra in modes.items():
        args = ["finetune", "--net", net, "--checkpoint", checkpoint, "--data", data,
                "--mode", mode, *extra, "--epochs", "1", "--batch-size", "4",
                "--image-size", "32", "--cache-dir", root / "cache", "--train-dir", root / mode,
                "--json"]
        result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="ckptkit")
        found[mode] = result.exit_code, result.stdout, result.stderr, root / mode
    return found


def values(tf, prefix):
    """{name: value} of every tensor of the checkpoint at `prefix`, as TensorFlow reads it."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
