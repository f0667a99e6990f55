"""Text, tables and JSON for the CLI; progress bars only on a terminal."""
import contextlib
import json
import math
import sys

import click

from .scopes import role


def number(n):
    return f"{n:,}"


def plural(n, word):
    return f"{n} {word}{'s' * (n != 1)}"


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def shape(s):
    return "[" + ",".join(str(d) for d in s) + "]"


def emit_json(obj):
    """Strict JSON: NaN and infinities become the strings "NaN", "Infinity", "-Infinity"
    (as protobuf's JSON mapping writes them), which every parser accepts."""
    try:
        text = json.dumps(obj, allow_nan=False)
    except ValueError:   # a NaN or infinity somewhere: the slower sanitising pass
        text = json.dumps(_strict(obj), allow_nan=False)
    click.echo(text)


def _strict(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def table(rows, align=None):
    """Rows of strings as aligned columns; `align` is a string of 'l'/'r' per column."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    align = align or "l" * len(widths)
    out = []
    for r in rows:
        cells = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)]
        out.append("  ".join(cells).rstrip())
    return out


def _label(v):
    """Role (when not a model weight) and, for a partitioned variable, its slice layout."""
    r = role(v.name)
    parts = [] if r == "model" else [r]
    if v.slices:
        parts.append(f"{len(v.slices)} slices " + " ".join(
            "[" + ",".join(":" if s == 0 and n == d else f"{s}:{s + n}"
                           for (s, n), d in zip(extents, v.shape)) + "]"
            for extents in v.slices))
    return "  ".join(parts)


_TF2_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def tree(variables, depth=None):
    """Variables grouped by scope, with tensor and parameter counts per scope.

    Chains of scopes holding a single scope and no tensor are folded into one line
    (resnet_v1_50/block1/unit_1/bottleneck_v1/ reads better than four nested ones); a
    variable's optimizer slots and EMA shadow are named on its own line, not as a sub-scope;
    TF2 keys lose their `/.ATTRIBUTES/VARIABLE_VALUE` ending (--flat shows exact keys).
    """
    root = {}
    for v in variables:
        node = root
        shown = v.name[: -len(_TF2_VALUE)] if v.name.endswith(_TF2_VALUE) else v.name
        *scopes, leaf = shown.split("/")
        for s in scopes:
            node = node.setdefault(s + "/", {})
        node[leaf] = v
    rows = []

    def leaves(node):
        for child in node.values():
            if isinstance(child, dict):
                yield from leaves(child)
            else:
                yield child

    sizes = {}

    def totals(node):
        """(tensors, parameters) under a scope, each scope summed once."""
        if id(node) not in sizes:
            count = params = 0
            for child in node.values():
                if isinstance(child, dict):
                    c, p = totals(child)
                    count, params = count + c, params + p
                else:
                    count, params = count + 1, params + child.size
            sizes[id(node)] = count, params
        return sizes[id(node)]

    def companions(node, key):
        """Last name parts of the slots/EMA of variable `key`, when its `key/` scope holds
        only those (TF1 `w/Adam`, TF2 `w/.OPTIMIZER_SLOT/optimizer/m`)."""
        scope = node.get(key + "/")
        if not isinstance(scope, dict):
            return None
        found = list(leaves(scope))
        if found and all(role(v.name) in ("optimizer", "ema") for v in found):
            return sorted(v.name.removesuffix(_TF2_VALUE).rsplit("/", 1)[-1] for v in found)
        return None

    def walk(node, indent, level):
        folded = {k + "/": companions(node, k) for k in node if not isinstance(node[k], dict)}
        for key in sorted(node):
            child = node[key]
            if folded.get(key):
                continue
            if isinstance(child, dict):
                while len(child) == 1 and isinstance(next(iter(child.values())), dict):
                    inner = next(iter(child))
                    key, child = key + inner, child[inner]
                count, params = totals(child)
                rows.append((indent + key, plural(count, "tensor"), "", number(params), ""))
                if depth is None or level + 1 < depth:
                    walk(child, indent + "  ", level + 1)
            else:
                extra = folded.get(key + "/")
                rows.append((indent + key, shape(child.shape), child.dtype,
                             number(child.size),
                             "+ " + ", ".join(extra) if extra else _label(child)))

    walk(root, "", 0)
    return table(rows, "lllrl")


def flat(variables):
    return table([(v.name, shape(v.shape), v.dtype, number(v.size), _label(v))
                  for v in variables], "lllrl")


def summary(variables):
    """One line: counts, parameters and bytes, and how many are optimizer/EMA/step state."""
    variables = list(variables)
    params = sum(v.size for v in variables)
    nbytes = sum(v.nbytes for v in variables)
    by_role = {}
    for v in variables:
        r = role(v.name)
        by_role[r] = by_role.get(r, 0) + 1
    extra = ", ".join(f"{by_role[r]} {r}" for r in ("optimizer", "ema", "step", "meta")
                      if r in by_role)
    return (f"{plural(len(variables), 'tensor')}, {number(params)} parameters, "
            f"{human_bytes(nbytes)}"
            + (f" ({extra})" if extra else ""))


@contextlib.contextmanager
def progress(total, label):
    """Yield advance(nbytes): a progress bar on a terminal, nothing in pipes or CI."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextlib.contextmanager
def byte_progress(label):
    """Yield progress(total, done) for downloads: a bar on a terminal once the first call
    comes (total may be None), nothing in pipes or CI."""
    if not sys.stderr.isatty():
        yield lambda total, done: None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda total, done: bar.update(task, total=total, completed=done)


@contextlib.contextmanager
def training_progress(total, label):
    """Yield advance(steps, loss=, acc=, ips=): a bar with the running figures on a terminal,
    nothing in pipes or CI (the epoch lines are the log there)."""
    if not sys.stderr.isatty():
        yield lambda n, **fields: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[figures]}"), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(label, total=total, figures="")

        def advance(n, **fields):
            figures = "  ".join(f"{k} {v:.4g}" for k, v in fields.items() if v is not None)
            bar.update(task, advance=n, figures=figures)
        yield advance


# plan sections whose rows are shown without --verbose: the ones that need a decision
_PLAN_DETAIL = ("excluded", "missing", "mismatched", "skipped", "unused: model weights")
_PLAN_ROWS = 12   # rows shown per section without --verbose


def plan_table(plan, verbose=False):
    """The plan as one grouped table: every section with its count and parameters, then the
    rows of the sections that need a decision (a dozen each; all with `verbose`)."""
    rows = []
    for section in plan.sections():
        rows.append((section.title, plural(len(section.rows), "variable"),
                     number(section.params)))
        if not (verbose or section.title.startswith(_PLAN_DETAIL)
                or section.title == "trainable" and plan.lr_mults):
            continue
        shown = section.rows if verbose else section.rows[:_PLAN_ROWS]
        for model, ckpt, detail in shown:
            name = f"{model} <- {ckpt}" if model and ckpt and model != ckpt else model or ckpt
            rows.append((f"  {name}", detail, ""))
        if len(shown) < len(section.rows):
            rows.append((f"  ... {len(section.rows) - len(shown)} more (--verbose lists all)",
                         "", ""))
    return table(rows, "llr")
