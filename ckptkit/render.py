"""Text, tables and JSON for the CLI; progress bars only on a terminal."""
import contextlib
import json
import math
import os
import sys
from operator import attrgetter, itemgetter
from shlex import quote
from types import SimpleNamespace

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
    """Rows of strings, all of one length, as aligned columns; `align` is a string of 'l'/'r'
    per column. Each line is one printf-style format (%-Ns pads as ljust, %Ns as rjust), so
    300,000 rows take a fraction of a second."""
    if not rows:
        return []
    widths = [max(map(len, map(itemgetter(i), rows))) for i in range(len(rows[0]))]
    line = "  ".join(("%s" if not w else f"%{w}s" if a == "r" else f"%-{w}s")
                     for w, a in zip(widths, align or "l" * len(widths)))
    return list(map(str.rstrip, map(line.__mod__, map(tuple, rows))))


def _label(v, source=None):
    """Role (when not a model weight), for a partitioned variable its slice layout, and the
    checkpoint tensor it came from (`<- name`) where the file says (a ported .keras)."""
    r = role(v.name)
    parts = [] if r == "model" else [r]
    if v.slices:
        parts.append(f"{len(v.slices)} slices " + " ".join(
            "[" + ",".join(":" if s == 0 and n == d else f"{s}:{s + n}"
                           for (s, n), d in zip(extents, v.shape)) + "]"
            for extents in v.slices))
    if source:
        parts.append(f"<- {source}")
    return "  ".join(parts)


_TF2_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"


def header(reader):
    """`inspect`'s first line: the path, its format and, for a ported file, its origin (and
    the PyTorch class a state dict loads into)."""
    origin = reader.origin or {}
    ported = f"; ported by ckptkit from {origin['checkpoint']} for {origin['net']}" \
        if origin else ""
    load = f"; loads into {origin['class']}" if "class" in origin else ""
    return f"{reader.path}  ({reader.format}{ported}{load})"


def tree(variables, depth=None, sources=None):
    """Variables grouped by scope, with tensor and parameter counts per scope; `sources`
    ({name: checkpoint tensor}) labels the tensors a ported .keras took from a checkpoint.

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
    sources = sources or {}

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
                             "+ " + ", ".join(extra) if extra
                             else _label(child, sources.get(child.name))))

    walk(root, "", 0)
    return table(rows, "lllrl")


def flat(variables, sources=None):
    sources = sources or {}
    return table([(v.name, shape(v.shape), v.dtype, number(v.size),
                   _label(v, sources.get(v.name))) for v in variables], "lllrl")


def summary(variables):
    """One line: tensors, parameters (model variables only: slots, EMA shadows, step counters
    and the object graph are not the model's), bytes, and how many tensors are the rest."""
    variables = list(variables)
    params = model_params(variables)
    nbytes = sum(v.nbytes for v in variables)
    by_role = {}
    for v in variables:
        r = role(v.name)
        by_role[r] = by_role.get(r, 0) + 1
    extra = ", ".join(f"{by_role[r]} {r}" for r in ("optimizer", "ema", "step", "meta")
                      if r in by_role)
    return (f"{plural(len(variables), 'tensor')}, {number(params)} "
            f"parameter{'s' * (params != 1)}, {human_bytes(nbytes)}"
            + (f" ({extra})" if extra else ""))


def model_params(variables):
    """Elements of the model variables (scopes.role "model") among `variables`."""
    return sum(v.size for v in variables if role(v.name) == "model")


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


# --- the reading commands --------------------------------------------------------------------

def listing_json(reader, variables):
    """`inspect --json` (DESIGN.md's contract); total_params counts model variables only. A
    ported file adds "ported_from" (reader.origin) and each weight's "source"."""
    listed = [v.to_json() for v in variables]
    for item in listed:
        if item["name"] in reader.sources:
            item["source"] = reader.sources[item["name"]]
    out = {"path": reader.path, "format": reader.format, "variables": listed,
           "total_params": model_params(variables),
           "total_bytes": sum(v.nbytes for v in variables)}
    if reader.origin:
        out["ported_from"] = reader.origin
    return out


def tensor_json(var, value, stats):
    return {**var.to_json(), "stats": stats and stats.__dict__, "values": json_values(value)}


def tensor_lines(var, value, stats, printoptions):
    """One tensor's header, values as numpy prints them under `printoptions`, statistics."""
    import numpy as np

    lines = [f"{var.name}  {shape(var.shape)}  {var.dtype}"]
    with np.printoptions(**printoptions):
        lines.append(str(value) if value.dtype.kind != "O" else repr(value))
    if stats:
        lines.append(f"min {stats.min:.6g}  max {stats.max:.6g}  mean {stats.mean:.6g}  "
                     f"std {stats.std:.6g}  nan {stats.nan}  inf {stats.inf}")
    return lines


def json_values(value):
    """Nested lists for JSON: complex numbers as [real, imag], strings decoded (bytes that
    are not UTF-8 escaped), low-precision floats widened."""
    import numpy as np

    if value.dtype.kind == "O":
        flat = [x.decode("utf-8", "backslashreplace") if isinstance(x, bytes) else str(x)
                for x in value.reshape(-1)]
        return np.array(flat, dtype=object).reshape(value.shape).tolist()
    if value.dtype.kind == "c":
        return np.stack([value.real, value.imag], axis=-1).tolist()
    if value.dtype.kind not in "biuf":
        value = value.astype(np.float64)   # bfloat16 / float8 from ml_dtypes
    return value.tolist()


def stats_table(pairs):
    """`inspect --stats`: (Variable, Stats or None) pairs as a table, built a column at a
    time: each number column is one printf call over all its values, each distinct shape
    is formatted once."""
    variables = [v for v, _ in pairs]
    known = [st or _NO_STATS for _, st in pairs]
    columns = [_column(spec, map(attrgetter(name), known)) for spec, name in (
        ("%.4g", "min"), ("%.4g", "max"), ("%.4g", "mean"), ("%.4g", "std"), ("%d", "nan"),
        ("%d", "inf"))]
    for i, (_, st) in enumerate(pairs):
        if st is None:
            for column in columns:
                column[i] = "-"
    shapes = {s: shape(s) for s in {v.shape for v in variables}}
    rows = list(zip([v.name for v in variables], [shapes[v.shape] for v in variables],
                    [v.dtype for v in variables], *columns))
    return table([("name", "shape", "dtype", "min", "max", "mean", "std", "nan", "inf")] + rows,
                 "lllrrrrrr")


_NO_STATS = SimpleNamespace(min=0.0, max=0.0, mean=0.0, std=0.0, nan=0, inf=0)   # shown as -


def _column(spec, values):
    """printf `spec` applied to every value: one call for the whole column."""
    values = tuple(values)
    return (f"{spec}\n" * len(values) % values).split("\n")[:-1]


def objects_table(attrs):
    """`inspect --objects`: TF2 checkpoint keys and the object paths they belong to."""
    rows = [(a.key, a.path, a.full_name, f"slot {a.slot_of}" if a.slot_of else "")
            for a in attrs]
    return table([("key", "object path", "name", "")] + rows)


def verify_json(report):
    return {"path": report.path, "format": report.format, "ok": report.ok,
            "tensors": report.tensors, "bytes": report.nbytes, "problems": report.problems,
            "leftovers": report.leftovers}


def verify_lines(report):
    """The verdict, each problem, and the temp files killed writers left beside the
    checkpoint (not a problem of it: the next write into that folder removes them)."""
    if report.ok:
        lines = [f"OK {report.path} ({report.format}): {plural(report.tensors, 'tensor')}, "
                 f"{human_bytes(report.nbytes)} verified"]
    else:
        lines = [f"CORRUPT {report.path}: {len(report.problems)} problem(s)"] + \
            [f"  {p}" for p in report.problems]
    if report.leftovers:
        lines.append(f"note: {plural(len(report.leftovers), 'unfinished temp file')} of "
                     "killed ckptkit writers beside it (the next write there removes them): "
                     + ", ".join(os.path.basename(t) for t in report.leftovers))
    return lines


def diff_json(report):
    return {
        "only_a": [v.to_json() for v in report.only_a],
        "only_b": [v.to_json() for v in report.only_b],
        "changed": [{"name": c.name, "kind": c.kind, "shape_a": list(c.shape_a),
                     "shape_b": list(c.shape_b), "dtype_a": c.dtype_a, "dtype_b": c.dtype_b,
                     "max_abs": c.max_abs, "rms": c.rms} for c in report.changed],
        "equal": report.equal}


def diff_lines(report):
    """DESIGN.md's diff lines: + only in B, - only in A, ! changed; then the counts."""
    lines = [f"+ {v.name} {shape(v.shape)}" for v in report.only_b]
    lines += [f"- {v.name} {shape(v.shape)}" for v in report.only_a]
    for c in report.changed:
        if c.kind == "shape":
            what = f"shape {shape(c.shape_a)} -> {shape(c.shape_b)}"
        elif c.kind == "dtype":
            what = f"dtype {c.dtype_a} -> {c.dtype_b}"
        else:
            what = f"max abs {c.max_abs:.6g}, rms {c.rms:.6g}"
        lines.append(f"! {c.name} {what}")
    lines.append(f"{report.equal} equal, {len(report.changed)} changed, "
                 f"{len(report.only_a)} only in A, {len(report.only_b)} only in B")
    return lines


# --- surgery and convert ---------------------------------------------------------------------

def surgery_json(result, dry_run):
    """The name table of a surgery, where it went and how each tensor got there."""
    return {**result.plan.to_json(), "output": result.target.path,
            "format": result.target.format, "dry_run": dry_run, "copied": result.copied,
            "decoded": result.decoded}


def surgery_lines(result, dry_run):
    plan, target = result.plan, result.target
    if dry_run:
        return plan.lines() + [f"dry run: would write {target.path} ({target.format}): "
                               f"{plan.summary()}"]
    return [f"wrote {target.path} ({target.format}): {plan.summary()}; {result.copied} "
            f"copied as stored bytes, {result.decoded} decoded"]


# --- the training commands -------------------------------------------------------------------

def finetune_table(summary):
    """The pretrained run (and its --compare-scratch twin): epochs, best and final accuracy."""
    runs = [("pretrained", summary)] + ([("scratch", summary["scratch"])]
                                        if "scratch" in summary else [])
    rows = [["run", "epochs", "best val_accuracy", "final val_accuracy", "train dir"]]
    for name, s in runs:
        best = (s["best"] or {}).get("val_accuracy")
        final = (s["final"] or {}).get("val_accuracy")
        rows.append([name, str(s["epochs"]), "-" if best is None else f"{best:.4f}",
                     "-" if final is None else f"{final:.4f}", s["train_dir"]])
    compared = [f"both drawn to {summary['compare_png']}"] if "compare_png" in summary else []
    return table(rows, "lrrrl") + compared


def eval_lines(result):
    """Accuracy, top-5 and loss, the per-class table and the confusion matrix."""
    lines = [f"{result['checkpoint']} on {result['data']}: {result['count']} images",
             f"accuracy {result['accuracy']:.4f}  top-5 {result['top5']:.4f}  "
             f"loss {result['loss']:.4f}", ""]
    rows = [["class", "images", "accuracy"]] + [
        [c["label"], str(c["count"]), "-" if c["accuracy"] is None else f"{c['accuracy']:.4f}"]
        for c in result["per_class"]]
    lines += table(rows, "lrr")
    labels = result["labels"]
    rows = [["true \\ predicted"] + labels] + [
        [label] + [str(n) for n in counts] for label, counts in zip(labels, result["confusion"])]
    lines += [""] + table(rows, "l" + "r" * len(labels))
    return lines + ["", f"confusion matrix drawn to {result['confusion_png']}"]


def prediction_lines(results):
    """One line per image: its top classes with probabilities, or its error."""
    lines = []
    for item in results:
        if "error" in item:
            lines.append(f"{item['path']}: error: {item['error']}")
        else:
            tops = "  ".join(f"{t['label']} {t['probability']:.3f}" for t in item["top"])
            lines.append(f"{item['path']}: {tops}")
    return lines


def export_lines(written):
    lines = [f"exported {written['checkpoint']} ({written['net']}, {written['num_classes']} "
             f"classes) to {written['out_dir']}"]
    if "saved_model" in written:
        saved = written["saved_model"]
        lines.append(f"  {saved['dir']}/  tags {','.join(saved['tags'])}, signatures "
                     f"{', '.join(saved['signatures'])}")
    for kind in ("frozen_graph", "onnx"):
        if kind in written:
            model = written[kind]
            outputs = model["outputs"]
            outputs = outputs.values() if isinstance(outputs, dict) else outputs
            lines.append(f"  {model['file']}  input {model['input']} "
                         f"({model['input_format']}), outputs {', '.join(outputs)}")
    return lines + ["  export.json  tensor names, labels, preprocessing"]


# --- search ----------------------------------------------------------------------------------

class TrialLines:
    """The live table of a search: one line per finished trial through `echo`, under a header
    printed once."""

    def __init__(self, names, echo):
        self.names, self.echo, self.started = names, echo, False

    def __call__(self, row):
        if not self.started:
            self.echo(f"{'trial':>5}  {'state':<8}  {'val_acc':>7}  {'time':>7}  params")
            self.started = True
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.1f}s"
        self.echo(f"{row['number']:>5}  {row['state']:<8}  {value:>7}  {seconds:>7}  "
                  f"{_params(row['params'])}")


def _value(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _params(params):
    return " ".join(f"{k}={_value(v)}" for k, v in params.items())


def search_lines(summary, with_table):
    """A search's summary: the trials table (`search --report`), counts, the best trial, the
    files written, and whether it stopped."""
    lines = []
    rows = summary["trials"]
    if with_table:
        names = list(dict.fromkeys(k for r in rows for k in r["params"]))
        cells = [["trial", "state", "val_accuracy", "epochs", "time"] + names]
        for r in rows:
            cells.append([str(r["number"]), r["state"],
                          "-" if r["value"] is None else f"{r['value']:.4f}", str(r["epochs"]),
                          "-" if r["seconds"] is None else f"{r['seconds']:.1f}s"]
                         + [_value(r["params"][n]) if n in r["params"] else "-" for n in names])
        lines += table(cells, "rlrrr" + "l" * len(names))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(summary["counts"].items()))
    lines += ["", f"{summary['study_dir']}: {counts or 'no trials'}"]
    best = summary["best"]
    if best is None:
        lines.append("no complete trial yet")
    else:
        lines += [f"best trial {best['number']}: val_accuracy {best['value']:.4f}  "
                  f"{_params(best['params'])}", f"  train dir {best['train_dir']}"]
    lines += [f"  wrote {name}" for name in
              ([summary["csv"]] if summary.get("csv") else []) + summary.get("plots", [])]
    if summary["stopped"]:
        lines.append("stopped; run the same command to resume")
    return lines


# --- pretrained ------------------------------------------------------------------------------

def pretrained_table(items):
    """`pretrained list`: zoo.pretrained.listing as a table."""
    rows = [["name", "net", "classes", "size", "sha256", "here"]] + [
        [i["name"], i["net"], str(i["num_classes"] or "-"),
         human_bytes(i["size"]) if i["size"] else "-",
         "registry" if i["sha256"] else "added" if i["added"] else "on first use",
         i["path"] or "-"] for i in items]
    return table(rows, "llrrll")


def fetched_lines(fetched, named=True):
    """What `pretrained get` did, and the command that fine-tunes from it: by name when
    `pretrained:NAME` finds it (named), else by its path."""
    where = f"pretrained:{fetched.name}" if named else quote(fetched.path)
    done = "added" if fetched.trust == "added" and fetched.downloaded else \
        "downloaded" if fetched.downloaded else "already here"
    return [f"{done}: {fetched.path}",
            "fine-tune it with a new head:",
            f"  ckptkit finetune --net {fetched.net} --checkpoint {where} "
            "--data DATA --train-dir RUN"]
