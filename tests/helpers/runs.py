"""Checks every net's tests share: which variables a graph's weight decay reaches, and that a
fine-tuned run evaluates, predicts and exports."""
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
