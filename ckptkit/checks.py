"""What the reading commands compute: the tensors a listing shows, verify, diff and tensor
statistics; pure results, no printing."""
import os
import re
from dataclasses import dataclass, field

from .errors import CkptError, Corrupt
from .fileio import stale_temps
from .scopes import role
from .variable import ML_DTYPES

_CHUNK = 1 << 20   # elements per step when streaming over a large tensor


@dataclass
class VerifyReport:
    path: str
    format: str
    tensors: int
    nbytes: int
    problems: list = field(default_factory=list)
    leftovers: list = field(default_factory=list)   # temp files of killed writers beside it

    @property
    def ok(self):
        return not self.problems


def select(reader, pattern=None, no_optimizer=False):
    """(tensors to show, how many `no_optimizer` hid among those the `pattern` regex kept)."""
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as e:
        raise CkptError(f"bad --filter regex {pattern!r}: {e}") from None
    matched = [v for v in reader if regex.search(v.name)] if regex else list(reader)
    if regex is not None and not matched:
        raise CkptError(f"--filter {pattern!r} matches no tensor in {reader.path}")
    chosen = [v for v in matched if role(v.name) == "model"] if no_optimizer else matched
    return chosen, len(matched) - len(chosen)


def checkpoint_bytes(path):
    """Bytes of tensor data in the checkpoint at `path` (0 when it cannot be opened): what a
    progress bar over `verify` counts to."""
    from .paths import open_checkpoint

    try:
        with open_checkpoint(path) as reader:
            return sum(v.nbytes for v in reader)
    except (CkptError, OSError):
        return 0


def verify(path, progress=None):
    """Check every checksum, size and file of a checkpoint; corrupt findings, not exceptions.

    A checkpoint too broken to open at all (bad table checksum, lying sizes) is reported as
    one problem; input that is no checkpoint at all still raises.
    """
    from .paths import open_checkpoint

    try:
        reader = open_checkpoint(path)
    except Corrupt as e:
        return VerifyReport(str(path), "?", 0, 0, [str(e)])
    with reader:
        total = sum(v.nbytes for v in reader)
        problems = list(reader.problems(progress))
        folders = sorted({os.path.dirname(os.path.abspath(f)) for f in reader.files})
        leftovers = [t for folder in folders for t in stale_temps(folder)]
        return VerifyReport(reader.path, reader.format, len(reader), total, problems,
                            leftovers)


@dataclass   # not frozen: a frozen dataclass takes 4x as long to make, 300,000 times
class Stats:
    min: float
    max: float
    mean: float
    std: float
    nan: int
    inf: int


def tensor_stats(array):
    """min/max/mean/std over finite values and NaN/Inf counts, streamed in chunks so a large
    tensor never needs a float64 copy of itself. None for non-numeric tensors.

    Two passes: the first counts and finds the range, the second sums the values and their
    squares scaled by the largest magnitude, so values near float64's maximum give their true
    mean and std instead of overflowing; numpy's warnings (signalling NaNs, overflow) stay
    inside."""
    import numpy as np

    if array.dtype.kind not in "biufc" and array.dtype.name not in ML_DTYPES:
        return None
    flat = array.reshape(-1)

    def chunks():
        for start in range(0, flat.size, _CHUNK):
            chunk = flat[start:start + _CHUNK]
            chunk = np.abs(chunk) if chunk.dtype.kind == "c" else chunk.astype(np.float64)
            yield chunk[np.isfinite(chunk)], int(np.isnan(chunk).sum()), \
                int(np.isinf(chunk).sum())

    with np.errstate(all="ignore"):
        count = nan = inf = 0
        lo, hi = float("inf"), float("-inf")
        for good, nans, infs in chunks():
            nan, inf, count = nan + nans, inf + infs, count + good.size
            if good.size:
                lo, hi = min(lo, float(good.min())), max(hi, float(good.max()))
        if not count:
            return Stats(float("nan"), float("nan"), float("nan"), float("nan"), nan, inf)
        scale = max(abs(lo), abs(hi)) or 1.0
        total = squares = 0.0
        for good, _, _ in chunks():
            scaled = good / scale
            total += float(scaled.sum())
            squares += float(np.square(scaled).sum())
        mean = total / count
        spread = max(squares / count - mean * mean, 0.0)
        mean = min(max(mean * scale, lo), hi)        # rounding may not leave the range
        return Stats(lo, hi, mean, spread ** 0.5 * scale, nan, inf)


def stats(reader, variables, progress=None):
    """Yield (Variable, Stats or None) for each of `variables`, reading one tensor at a time;
    `progress(nbytes)` after each. Small real tensors are summarised in batches (a few numpy
    calls for thousands of them), so a checkpoint of 300,000 tiny tensors takes seconds."""
    batch, elements = [], 0
    for var in variables:
        array = reader.read(var.name)
        if 0 < array.size <= _SMALL and (array.dtype.kind in "biuf" or
                                        array.dtype.name in ML_DTYPES):
            batch.append((var, array))
            elements += array.size
            if elements < _CHUNK:
                continue
        else:
            yield from _flush(batch, progress)
            batch, elements = [], 0
            yield var, tensor_stats(array)
            if progress:
                progress(var.nbytes)
            continue
        yield from _flush(batch, progress)
        batch, elements = [], 0
    yield from _flush(batch, progress)


_SMALL = 4096   # elements of a tensor summarised in a batch


def _flush(batch, progress):
    """tensor_stats of many small real tensors at once: one float64 array, reduced per
    tensor with ufunc.reduceat (same two scaled passes); the Stats made from whole columns
    (tolist), not element by element."""
    import numpy as np

    if not batch:
        return
    sizes = np.array([a.size for _, a in batch])
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    with np.errstate(all="ignore"):
        x = np.concatenate([a for _, a in batch], axis=None, dtype=np.float64, casting="unsafe")
        finite = np.isfinite(x)
        nan = np.add.reduceat(np.isnan(x), starts)
        count = np.add.reduceat(finite, starts)
        inf = np.add.reduceat(~finite, starts) - nan
        lo = np.fmin.reduceat(np.where(finite, x, np.nan), starts)
        hi = np.fmax.reduceat(np.where(finite, x, np.nan), starts)
        scale = np.maximum(np.abs(lo), np.abs(hi))
        scale[~(scale > 0)] = 1.0
        scaled = np.where(finite, x / np.repeat(scale, sizes), 0.0)
        mean = np.add.reduceat(scaled, starts) / count
        spread = np.maximum(np.add.reduceat(scaled * scaled, starts) / count - mean * mean, 0)
        mean = np.minimum(np.maximum(mean * scale, lo), hi)
        std = np.sqrt(spread) * scale
    for column in (lo, hi, mean, std):   # nothing finite: NaN, as tensor_stats gives it
        column[count == 0] = np.nan
    for (var, _), st in zip(batch, map(Stats, lo.tolist(), hi.tolist(), mean.tolist(),
                                       std.tolist(), nan.tolist(), inf.tolist())):
        yield var, st
        if progress:
            progress(var.nbytes)


@dataclass(frozen=True)
class Change:
    name: str                 # name in A (after prefix stripping)
    shape_a: tuple
    shape_b: tuple
    dtype_a: str
    dtype_b: str
    max_abs: float = 0.0
    rms: float = 0.0

    @property
    def kind(self):
        if self.shape_a != self.shape_b:
            return "shape"
        if self.dtype_a != self.dtype_b:
            return "dtype"
        return "values"


@dataclass
class DiffReport:
    only_a: list = field(default_factory=list)     # Variables
    only_b: list = field(default_factory=list)
    changed: list = field(default_factory=list)    # Changes
    equal: int = 0

    @property
    def same(self):
        return not (self.only_a or self.only_b or self.changed)


def _strip(name, prefix):
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def diff(a, b, atol=0.0, rtol=0.0, strip_a="", strip_b="", model_only=False, progress=None):
    """Compare two open readers by name (after stripping prefixes), shape, dtype and value;
    `model_only` leaves optimizer slots, EMA shadows and step counters out.

    Values count as equal when |a - b| <= atol + rtol * |b| everywhere (NaNs equal to NaNs);
    across formats (V1 vs V2 vs npz) equal tensors compare equal.
    """
    def named(reader, prefix):
        return {_strip(v.name, prefix): v for v in reader
                if not model_only or role(v.name) == "model"}

    names_a, names_b = named(a, strip_a), named(b, strip_b)
    report = DiffReport()
    report.only_a = [names_a[n] for n in sorted(names_a.keys() - names_b.keys())]
    report.only_b = [names_b[n] for n in sorted(names_b.keys() - names_a.keys())]
    for name in sorted(names_a.keys() & names_b.keys()):
        va, vb = names_a[name], names_b[name]
        if va.shape != vb.shape or va.dtype != vb.dtype:
            report.changed.append(Change(name, va.shape, vb.shape, va.dtype, vb.dtype))
        else:
            max_abs, rms, same = _compare(a.read(va.name), b.read(vb.name), atol, rtol)
            if same:
                report.equal += 1
            else:
                report.changed.append(Change(name, va.shape, vb.shape, va.dtype, vb.dtype,
                                             max_abs, rms))
        if progress:
            progress(va.nbytes)
    return report


def _compare(x, y, atol, rtol):
    """(max |x-y|, RMS of x-y, equal within tolerance), streamed in chunks."""
    import numpy as np

    x, y = x.reshape(-1), y.reshape(-1)
    if x.dtype.kind in "OSU" or y.dtype.kind in "OSU":
        same = x.shape == y.shape and all(p == q for p, q in zip(x.tolist(), y.tolist()))
        return (0.0 if same else float("nan")), (0.0 if same else float("nan")), same
    worst, sq, same = 0.0, 0.0, True
    wide = np.complex128 if x.dtype.kind == "c" else np.float64
    for start in range(0, x.size, _CHUNK):
        xs, ys = x[start:start + _CHUNK], y[start:start + _CHUNK]
        p, q = xs.astype(wide), ys.astype(wide)
        with np.errstate(invalid="ignore", over="ignore"):
            equal = (xs == ys) | (np.isnan(p) & np.isnan(q))   # exact, also for int64
            delta = np.where(equal, 0.0, np.abs(p - q))
            delta = np.where(np.isnan(delta), np.inf, delta)   # NaN against a number
            if xs.dtype.kind in "iub":   # unequal ints differ by >= 1, even past 2**53
                delta = np.where(equal, 0.0, np.maximum(delta, 1.0))
            same = same and bool(np.all(equal | (delta <= atol + rtol * np.abs(q))))
        if delta.size:
            worst = max(worst, float(delta.max()))
            with np.errstate(over="ignore", invalid="ignore"):
                sq += float(np.square(delta).sum())
    rms = (sq / x.size) ** 0.5 if x.size else 0.0
    return worst, rms, same


