"""Training curves, the comparison of runs and confusion matrices as PNG files (matplotlib, Agg
backend, no GUI); each returns its Figure, for a caller (or test) to look at what it drew.

All write through a temp file and a rename (save), so a reader never sees half a picture;
figure and save serve other plots too (a search's history and importances). Importing this
module does not load matplotlib.
"""
import math
import os

from ..errors import CkptError
from ..fileio import atomic_file


def require():
    """matplotlib, or one line naming the extra that installs it: a run checks this before
    it trains, since its figures come last."""
    try:
        import matplotlib
    except ImportError:
        raise CkptError("figures need matplotlib, which is not installed: "
                        "pip install 'ckptkit[tf]'") from None
    return matplotlib


def figure(width, height):
    """A matplotlib Figure of `width` x `height` inches on the Agg canvas (no GUI, no pyplot
    state shared between callers)."""
    matplotlib = require()

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path, **kwargs):
    """Write `fig` to `path` atomically, in the format its extension names."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    with atomic_file(path) as f:
        fig.savefig(f, format=ext, **kwargs)


def _number(value):
    """float, or nan for a missing / None / non-numeric value."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def _series(rows, key):
    return [_number(r.get(key)) for r in rows]


def _epochs(rows):
    """The x values of metrics rows: their epochs, or the row order where the numbering
    restarts or is missing."""
    epochs = [_number(r.get("epoch")) for r in rows]
    if any(math.isnan(e) for e in epochs) or any(b <= a for a, b in zip(epochs, epochs[1:])):
        return list(range(1, len(rows) + 1))
    return epochs


def curves(rows, path):
    """Accuracy and loss per epoch, training and validation, as the Keras transfer-learning
    tutorials plot them: two panels, accuracy above loss. `rows` are metrics.jsonl dicts
    (epoch, loss, accuracy, val_loss, val_accuracy; val_* may be missing or None); with a
    "stage" key, a vertical line marks where stage 2 (fine-tuning) starts."""
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        raise CkptError("no metrics to plot")
    epochs = _epochs(rows)
    fig = figure(8, 8)
    axes = fig.subplots(2, 1, sharex=True)
    panels = [("accuracy", "Accuracy", "Training and Validation Accuracy", "lower right"),
              ("loss", "Cross Entropy", "Training and Validation Loss", "upper right")]
    start = next((i for i, r in enumerate(rows) if _number(r.get("stage")) == 2), None)
    for ax, (key, ylabel, title, where) in zip(axes, panels):
        drawn = []
        for name, label in ((key, f"Training {ylabel}"), (f"val_{key}", f"Validation {ylabel}")):
            values = _series(rows, name)
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                continue
            drawn += finite
            ax.plot(epochs, values, label=label.replace(" Cross Entropy", " Loss"),
                    marker="o" if len(finite) < 30 else None, markersize=3)
        if drawn and key == "accuracy":
            low = min(drawn)
            ax.set_ylim(max(0.0, min(low, 0.95) - 0.05), 1.01)
        elif drawn:
            ax.set_ylim(0.0, max(max(drawn) * 1.05, 1e-3))
        if start:
            x = (epochs[start - 1] + epochs[start]) / 2
            ax.axvline(x, color="gray", linestyle="--", label="Start Fine Tuning")
        if drawn or start:
            ax.legend(loc=where)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[1].set_xlabel("epoch")
    fig.tight_layout()
    save(fig, path)
    return fig


def compare(runs, path):
    """Runs on one figure: validation accuracy above, loss below (training solid, validation
    dashed), one colour per run; `runs` is {name: metrics rows}, e.g. --compare-scratch's
    pretrained run and its twin trained from random initialisation."""
    runs = {name: [r for r in rows if isinstance(r, dict)] for name, rows in runs.items()}
    if not any(runs.values()):
        raise CkptError("no metrics to plot")
    fig = figure(8, 8)
    top, bottom = fig.subplots(2, 1, sharex=True)
    for i, (name, rows) in enumerate(runs.items()):
        epochs, color = _epochs(rows), f"C{i}"
        top.plot(epochs, _series(rows, "val_accuracy"), color=color, markersize=3,
                 marker="o" if len(rows) < 30 else None, label=f"{name}: validation accuracy")
        bottom.plot(epochs, _series(rows, "loss"), color=color, label=f"{name}: training loss")
        bottom.plot(epochs, _series(rows, "val_loss"), color=color, linestyle="--",
                    label=f"{name}: validation loss")
    top.set_title(" vs ".join(runs) + ": validation accuracy")
    top.set_ylabel("Accuracy")
    bottom.set_title("Loss")
    bottom.set_ylabel("Cross Entropy")
    bottom.set_xlabel("epoch")
    for ax in (top, bottom):
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save(fig, path)
    return fig


def confusion(matrix, labels, path):
    """A heat map of `matrix` (rows: true class, columns: predicted class, in `labels` order)
    with the count in every cell (for up to 30 classes)."""
    import numpy as np

    matrix = np.asarray(matrix)
    labels = [str(label) for label in labels]
    n = len(labels)
    if matrix.shape != (n, n):
        raise CkptError(f"confusion matrix of shape {list(matrix.shape)} does not fit "
                        f"{n} labels")
    if n == 0:
        raise CkptError("no classes to plot")
    side = min(max(4.0, 0.5 * n + 2.5), 40.0)
    fig = figure(side + 1, side)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(n)
    font = 10 if n <= 20 else max(4, int(200 / n))
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=font)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    total = matrix.sum()
    title = "Confusion matrix"
    if total:
        title += f"\naccuracy {np.trace(matrix) / total:.1%}"
    ax.set_title(title)
    if n <= 30:
        integral = np.issubdtype(matrix.dtype, np.integer) or \
            bool(np.all(np.equal(np.mod(matrix, 1), 0)))
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                text = f"{int(value)}" if integral else f"{value:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=font,
                        color="white" if value > threshold else "black")
    fig.tight_layout()
    save(fig, path, bbox_inches="tight")
    return fig
