"""plots: curves and confusion matrices are written as valid PNG files, atomically."""
import os

import numpy as np
import pytest

from ckptkit.errors import CkptError

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """The image matplotlib reads back from `path` (after checking the PNG signature)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def _rows(n, stage2_from=None, val=True):
    rows = []
    for epoch in range(1, n + 1):
        row = {"epoch": epoch, "loss": 2.0 / epoch, "accuracy": 0.3 + 0.05 * epoch}
        if val:
            row.update(val_loss=2.2 / epoch, val_accuracy=0.25 + 0.05 * epoch)
        if stage2_from:
            row["stage"] = 2 if epoch >= stage2_from else 1
        rows.append(row)
    return rows


@pytest.mark.parametrize("rows", [
    _rows(5),
    _rows(8, stage2_from=5),
    _rows(4, val=False),
    [{"epoch": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": None, "val_accuracy": None},
     {"epoch": 2, "loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7}],
    [{"epoch": 1, "loss": 0.7, "accuracy": 1.0, "stage": 1},      # numbering restarts
     {"epoch": 1, "loss": 0.1, "accuracy": 1.0, "stage": 2}],
    [{"epoch": 1, "loss": 0.7, "accuracy": 0.5}],
], ids=["val", "stages", "no-val", "val-none", "restart", "one-row"])
def test_curves_write_a_png(tmp_path, rows):
    from ckptkit.train.plots import curves

    path = tmp_path / "curves.png"
    curves(rows, path)
    read_png(path)
    assert os.listdir(tmp_path) == ["curves.png"]      # no temp file left


def test_curves_replace_an_old_file_and_refuse_no_rows(tmp_path):
    from ckptkit.train.plots import curves

    path = tmp_path / "curves.png"
    curves(_rows(2), path)
    first = path.read_bytes()
    curves(_rows(6, stage2_from=3), path)
    assert path.read_bytes() != first
    read_png(path)
    with pytest.raises(CkptError, match="no metrics"):
        curves([], tmp_path / "none.png")
    assert os.listdir(tmp_path) == ["curves.png"]


def test_confusion_writes_a_png(tmp_path):
    from ckptkit.train.plots import confusion

    matrix = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    confusion(matrix, ["cat", "dog", "a much longer class name"], tmp_path / "cm.png")
    small = read_png(tmp_path / "cm.png")
    rng = np.random.default_rng(0)
    confusion(rng.integers(0, 50, (40, 40)), [f"class_{i}" for i in range(40)],
              tmp_path / "big.png")
    assert read_png(tmp_path / "big.png").shape[0] > small.shape[0]
    confusion(np.eye(2) * 0.5, ["x", "y"], tmp_path / "float.png")
    read_png(tmp_path / "float.png")
    with pytest.raises(CkptError, match="does not fit"):
        confusion(matrix, ["a", "b"], tmp_path / "bad.png")
    assert sorted(os.listdir(tmp_path)) == ["big.png", "cm.png", "float.png"]


def test_curves_mark_where_stage_2_starts(tmp_path):
    from ckptkit.train.plots import curves

    fig = curves(_rows(6, stage2_from=4), tmp_path / "curves.png")
    for ax in fig.axes:
        marks = [line for line in ax.get_lines() if line.get_label() == "Start Fine Tuning"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [3.5, 3.5]
    one = curves(_rows(3), tmp_path / "one.png")
    assert not [line for ax in one.axes for line in ax.get_lines()
                if line.get_label() == "Start Fine Tuning"]


def test_compare_draws_the_runs_on_one_figure(tmp_path):
    from ckptkit.train.plots import compare

    fig = compare({"pretrained": _rows(4), "scratch": _rows(3, val=False)},
                  tmp_path / "compare.png")
    read_png(tmp_path / "compare.png")
    accuracy, loss = fig.axes[:2]
    assert [line.get_label() for line in accuracy.get_lines()] == [
        "pretrained: validation accuracy", "scratch: validation accuracy"]
    assert [line.get_label() for line in loss.get_lines()] == [
        "pretrained: training loss", "pretrained: validation loss", "scratch: training loss",
        "scratch: validation loss"]
    assert list(accuracy.get_lines()[0].get_ydata()) == pytest.approx([0.3, 0.35, 0.4, 0.45])
    assert accuracy.get_title() == "pretrained vs scratch: validation accuracy"
    with pytest.raises(CkptError, match="no metrics"):
        compare({"a": [], "b": []}, tmp_path / "none.png")
    assert sorted(os.listdir(tmp_path)) == ["compare.png"]
