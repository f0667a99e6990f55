"""TensorFlow's checkpoint-reading surface without TensorFlow, so legacy inspection scripts run
and print what they print under TF.

    from ckptkit import NewCheckpointReader   # was: from tensorflow.python import pywrap_tensorflow
    reader = NewCheckpointReader("model.ckpt")
    for name, shape in reader.get_variable_to_shape_map().items(): ...

or, with no change at all: `ckptkit legacy look_checkpoint.py` runs the script with a stand-in
`tensorflow` whose working parts are TF's checkpoint readers: NewCheckpointReader (also as
pywrap_tensorflow's and py_checkpoint_reader's), tf.train's load_checkpoint, load_variable,
list_variables, latest_checkpoint, get_checkpoint_state and checkpoint_exists (tf.compat.v1
too), inspect_checkpoint.print_tensors_in_checkpoint_file, tf.errors and the dtypes. Any other
TF name stops the script with one line naming it (NeedsTensorFlow).

What scripts see is TF's: dict order, dtype printing (`<dtype: 'float32'>`), error classes and
messages (`Key v3 not found in checkpoint`), the state file printed as TF's text proto.
NewCheckpointReader also opens what TF's does not (a directory, .h5, .npz, .safetensors).
Known difference: for a partitioned V2 variable TF's debug_string() lists the raw slice keys
and not the variable; ckptkit lists the variable once, with its full shape.
"""
import contextlib
import functools
import math
import os
import re
import sys
import traceback
import types
from dataclasses import dataclass, field
from glob import glob

from .errors import CkptError, FormatError, NotFound, Unsupported
from .fileio import STATE_FILE
from .formats import open_reader
from .paths import open_checkpoint
from .variable import TF_DTYPES, numpy_dtype

_TF_ENUM = {"float32": "DT_FLOAT", "float64": "DT_DOUBLE", "float16": "DT_HALF"}
_TYPE_NUMBER = {name: number for number, (name, _) in TF_DTYPES.items()}
_TF_FORMATS = ("tf-v2", "tf-object", "tf-v1")


class DType:
    """Stands in for tf.DType: compares equal to another of the same name or to the name, and
    prints as TF's (`tf.float32` in a dict, `<dtype: 'float32'>` alone)."""

    def __init__(self, name):
        self.name = name

    @property
    def as_numpy_dtype(self):
        return numpy_dtype(self.name).type

    def __eq__(self, other):
        return getattr(other, "name", other) == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"tf.{self.name}"

    def __str__(self):
        return f"<dtype: '{self.name}'>"


# --- TF's error classes ----------------------------------------------------------------------

class OpError(CkptError):
    """tf.errors.OpError. The readers raise TF's classes with TF's messages where TF's are
    known, so a script's `except tf.errors.NotFoundError` and what it prints work as under TF;
    each is also ckptkit's class of that kind (NotFoundError is a NotFound)."""

    error_code = 2

    def __init__(self, node_def, op, message, *args):
        super().__init__(message, *args)
        self.node_def, self.op, self.message = node_def, op, message


class InvalidArgumentError(OpError):
    error_code = 3


class NotFoundError(OpError, NotFound):
    error_code = 5


class UnimplementedError(OpError, Unsupported):
    error_code = 12


class InternalError(OpError):
    error_code = 13


class DataLossError(OpError, FormatError):
    error_code = 15


@contextlib.contextmanager
def _as_tf_errors():
    """ckptkit's errors under the TF class a script would catch for them."""
    try:
        yield
    except OpError:
        raise
    except NotFound as e:
        raise NotFoundError(None, None, str(e)) from None
    except Unsupported as e:
        raise UnimplementedError(None, None, str(e)) from None
    except FormatError as e:
        raise DataLossError(None, None, str(e)) from None


def _not_found(message, ckptkit_error):
    """NotFoundError with TF's message; ckptkit's (with its hints) is a note, which tracebacks
    show and str() leaves out."""
    error = NotFoundError(None, None, message)
    error.add_note(f"ckptkit: {ckptkit_error}")
    return error


# --- the order TF lists tensors in ---------------------------------------------------------
# TF's reader fills C++ std::unordered_maps and hands Python their iteration order, which
# libstdc++ fixes: a hash (murmur2, std::_Hash_bytes), bucket counts (its prime list, from 13
# at the first insert and at least doubling once the load passes 1), and one linked list in
# which a node goes first in its bucket's run, and a node of an empty bucket first of all.

_MUL = 0xC6A4A7935BD1E995
_M64 = (1 << 64) - 1
_BUCKETS = (13, 29, 59, 127, 257, 541, 1109, 2357, 5087, 10273, 20753, 42043, 85229, 172933,
            351061, 712697, 1447153, 2938679, 5967347, 12117689, 24607243, 49969847)


def _shift_mix(v):
    return v ^ (v >> 47)


def _std_hash(data):
    """std::hash<std::string> of libstdc++ on 64-bit Linux."""
    n = len(data)
    h = 0xC70F6907 ^ (n * _MUL & _M64)
    end = n & ~7
    for i in range(0, end, 8):
        word = _shift_mix(int.from_bytes(data[i:i + 8], "little") * _MUL & _M64) * _MUL & _M64
        h = (h ^ word) * _MUL & _M64
    if n & 7:
        h = (h ^ int.from_bytes(data[end:], "little")) * _MUL & _M64
    return _shift_mix(_shift_mix(h) * _MUL & _M64)


def _unordered(names):
    """The iteration order of a std::unordered_map<std::string, ...> after inserting `names`
    in this order."""
    hashes = [_std_hash(name.encode("utf-8")) for name in names]
    runs, buckets = [], {}   # bucket runs and their nodes, both latest first when reversed

    def place(i):
        bucket = hashes[i] % _BUCKETS[level]
        if bucket not in buckets:
            buckets[bucket] = []
            runs.append(bucket)
        buckets[bucket].append(i)

    def order():
        return [i for bucket in reversed(runs) for i in reversed(buckets[bucket])]

    level = 0
    for i in range(len(names)):
        if i == _BUCKETS[level]:   # one more would pass the load factor: rehash, in order
            level += 1
            current, runs, buckets = order(), [], {}
            for j in current:
                place(j)
        place(i)
    return [names[i] for i in order()]


def _v1_insertion_order(reader):
    """The order TF's TensorSliceReader meets the tensors of a V1 checkpoint: its files as
    the directory lists them (TF globs the pattern), each file's tensors in name order."""
    if len(reader.files) == 1:
        return list(reader.variables)
    listed = os.listdir(os.path.dirname(reader.files[0]) or ".")
    found = {}
    for path in sorted(reader.files, key=lambda p: listed.index(os.path.basename(p))):
        with open_reader("tf-v1", path) as shard:
            found.update(dict.fromkeys(shard.variables))
    return list(found)


# --- the reader ------------------------------------------------------------------------------

class NewCheckpointReader:
    """tf.compat.v1.train.NewCheckpointReader on ckptkit's readers."""

    def __init__(self, filepattern):
        path = os.fsdecode(filepattern)
        with _as_tf_errors():
            try:
                self._reader = open_checkpoint(path)
            except NotFound as e:
                if os.path.lexists(path):
                    raise
                raise _not_found("Unsuccessful TensorSliceReader constructor: Failed to find "
                                 f"any matching files for {path}", e) from None

    @functools.cached_property
    def _listed(self):
        """TF's debug_string order: a V1 reader's own map; V2 keys in order."""
        if self._reader.format == "tf-v1":
            return _unordered(_v1_insertion_order(self._reader))
        return list(self._reader.variables)

    @functools.cached_property
    def _order(self):
        """TF's dict order (computed on first use: a second for 100,000 names)."""
        if self._reader.format in _TF_FORMATS:
            return _unordered(self._listed)
        return self._listed

    def get_variable_to_shape_map(self):
        variables = self._reader.variables
        return {name: list(variables[name].shape) for name in self._order}

    def get_variable_to_dtype_map(self):
        variables = self._reader.variables
        return {name: DType(variables[name].dtype) for name in self._order}

    def has_tensor(self, tensor_str):
        return os.fsdecode(tensor_str) in self._reader

    def get_tensor(self, tensor_str):
        """A fresh array, as TF returns; scalars as numpy scalars (bytes for strings)."""
        import numpy as np

        name = os.fsdecode(tensor_str)
        try:
            dtype = self._reader.variable(name).dtype
        except NotFound as e:
            message = f"{name} not found in checkpoint file" \
                if self._reader.format == "tf-v1" else f"Key {name} not found in checkpoint"
            raise _not_found(message, e) from None
        if dtype in ("resource", "variant"):
            raise InternalError(None, None, f"Tensorflow type {_TYPE_NUMBER[dtype]} not "
                                            "convertible to numpy dtype.")
        with _as_tf_errors():
            value = self._reader.read(name)
        return value[()] if value.ndim == 0 else np.array(value)

    def debug_string(self):
        lines = []
        for name in self._listed:
            var = self._reader.variables[name]
            dims = ",".join(str(d) for d in var.shape)
            enum = _TF_ENUM.get(var.dtype, "DT_" + var.dtype.upper())
            pieces = f", {len(var.slices)} slices" \
                if self._reader.format == "tf-v1" and var.slices else ""
            lines.append(f"{name} ({enum}) [{dims}]{pieces}\n")
        return "".join(lines).encode("utf-8")


def load_checkpoint(ckpt_dir_or_file):
    """tf.train.load_checkpoint: the same reader (a directory's checkpoint as paths resolves
    it: the one tf.train.latest_checkpoint names, where TF finds one)."""
    return NewCheckpointReader(ckpt_dir_or_file)


def load_variable(ckpt_dir_or_file, name):
    """tf.train.load_variable (which drops a trailing `:0`, as TF does)."""
    return load_checkpoint(ckpt_dir_or_file).get_tensor(name.removesuffix(":0"))


def list_variables(ckpt_dir_or_file):
    """tf.train.list_variables: sorted (name, shape) pairs."""
    return sorted(load_checkpoint(ckpt_dir_or_file).get_variable_to_shape_map().items())


# --- the state file --------------------------------------------------------------------------

@dataclass(repr=False)
class CheckpointState:
    """tf.train.CheckpointState, the `checkpoint` state file's fields; prints as TF's text
    proto does."""

    model_checkpoint_path: str = ""
    all_model_checkpoint_paths: list = field(default_factory=list)
    all_model_checkpoint_timestamps: list = field(default_factory=list)
    last_preserved_timestamp: float = 0.0

    def __str__(self):
        lines = [f"model_checkpoint_path: {_quote(self.model_checkpoint_path)}"] \
            if self.model_checkpoint_path else []
        lines += [f"all_model_checkpoint_paths: {_quote(p)}"
                  for p in self.all_model_checkpoint_paths]
        lines += [f"all_model_checkpoint_timestamps: {_double(t)}"
                  for t in self.all_model_checkpoint_timestamps]
        if self.last_preserved_timestamp:
            lines.append(f"last_preserved_timestamp: {_double(self.last_preserved_timestamp)}")
        return "".join(line + "\n" for line in lines)

    __repr__ = __str__


_PATH_FIELDS = ("model_checkpoint_path", "all_model_checkpoint_paths")
_TEXT_TOKEN = re.compile(r"""\s+|\#.*|(\w+)\s*:\s*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'"""
                         r"""|[^\s#"']+)""")
_C_ESCAPE = re.compile(rb"\\([0-7]{1,3}|x[0-9a-fA-F]{1,2}|.)", re.S)
_C_CHARS = {b"n": b"\n", b"t": b"\t", b"r": b"\r", b"a": b"\a", b"b": b"\b", b"f": b"\f",
            b"v": b"\v"}
_C_QUOTE = {ord("\n"): b"\\n", ord("\r"): b"\\r", ord("\t"): b"\\t", ord('"'): b'\\"',
            ord("'"): b"\\'", ord("\\"): b"\\\\"}


def _unescape(quoted):
    """A text-proto string literal's value (C escapes, UTF-8)."""
    def one(m):
        code = m.group(1)
        if code[0] in b"01234567":
            return bytes([int(code, 8) & 0xFF])
        if code[:1] == b"x" and len(code) > 1:
            return bytes([int(code[1:], 16)])
        return _C_CHARS.get(code, code)

    return _C_ESCAPE.sub(one, quoted[1:-1].encode("utf-8")).decode("utf-8")


def _quote(text):
    """A string as protobuf's text format writes it: C escapes, UTF-8 kept."""
    out = bytearray()
    for byte in text.encode("utf-8"):
        if byte in _C_QUOTE:
            out += _C_QUOTE[byte]
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return '"' + out.decode("utf-8") + '"'


def _double(x):
    """A double as protobuf's text format writes it: 15 digits where they round-trip, else 17."""
    short = "%.15g" % x
    return short if float(short) == x else "%.17g" % x


def _parse_state(text):
    """The CheckpointState a state file's text proto holds, or None where TF's parser would
    fail (TF then ignores the file)."""
    state = CheckpointState()
    pos = 0
    try:
        while pos < len(text):
            m = _TEXT_TOKEN.match(text, pos)
            if m is None:
                return None
            pos = m.end()
            name, value = m.groups()
            if name in _PATH_FIELDS and value[0] in "\"'":
                if name == "model_checkpoint_path":
                    state.model_checkpoint_path = _unescape(value)
                else:
                    state.all_model_checkpoint_paths.append(_unescape(value))
            elif name == "all_model_checkpoint_timestamps":
                state.all_model_checkpoint_timestamps.append(float(value))
            elif name == "last_preserved_timestamp":
                state.last_preserved_timestamp = float(value)
            elif name is not None:
                return None
    except (ValueError, UnicodeDecodeError):   # a quoted number, a bad escape
        return None
    return state


def get_checkpoint_state(checkpoint_dir, latest_filename=None):
    """tf.train.get_checkpoint_state: the state file's CheckpointState, relative paths joined
    to the directory; None where there is no readable one; TF's ValueError where it names no
    checkpoint."""
    checkpoint_dir = os.fspath(checkpoint_dir)
    try:
        with open(os.path.join(checkpoint_dir, latest_filename or STATE_FILE),
                  encoding="utf-8") as f:
            state = _parse_state(f.read())
    except (OSError, UnicodeDecodeError):
        return None
    if state is None:
        return None
    if not state.model_checkpoint_path:
        raise ValueError("Invalid checkpoint state loaded from " + checkpoint_dir)
    state.model_checkpoint_path = os.path.join(checkpoint_dir, state.model_checkpoint_path)
    state.all_model_checkpoint_paths = [os.path.join(checkpoint_dir, p)
                                        for p in state.all_model_checkpoint_paths]
    return state


def checkpoint_exists(checkpoint_prefix):
    """tf.compat.v1.train.checkpoint_exists: a V2 index or a V1 file matches the prefix (a
    glob pattern, as TF matches it)."""
    prefix = os.fspath(checkpoint_prefix)
    return bool(glob(prefix + ".index") or glob(prefix))


def latest_checkpoint(checkpoint_dir, latest_filename=None):
    """tf.train.latest_checkpoint: the state file's checkpoint where its files exist, else
    None."""
    state = get_checkpoint_state(checkpoint_dir, latest_filename)
    if state and checkpoint_exists(state.model_checkpoint_path):
        return state.model_checkpoint_path
    return None


# --- inspect_checkpoint ----------------------------------------------------------------------

def print_tensors_in_checkpoint_file(file_name, tensor_name, all_tensors,
                                     all_tensor_names=False, count_exclude_pattern=""):
    """TF's inspect_checkpoint tool: prints what TF's prints, failures included (TF's catches
    every exception and prints its message)."""
    try:
        reader = NewCheckpointReader(file_name)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
        if all_tensors or all_tensor_names:
            for key, shape in sorted(shapes.items()):
                print(f"tensor: {key} ({dtypes[key].name}) {shape}")
                if all_tensors:
                    try:
                        print(reader.get_tensor(key))
                    except InternalError:
                        print("<not convertible to a numpy dtype>")
        elif not tensor_name:
            print(reader.debug_string().decode("utf-8", errors="ignore"))
        elif not reader.has_tensor(tensor_name):
            print(f"Tensor {tensor_name} not found in checkpoint")
            return
        else:
            print(f"tensor: {tensor_name} ({dtypes[tensor_name].name}) {shapes[tensor_name]}")
            print(reader.get_tensor(tensor_name))
        print(f"# Total number of params: {_count_params(shapes, count_exclude_pattern)}")
    except Exception as e:   # as TF's tool does
        print(str(e))


def _count_params(shapes, exclude_pattern):
    if exclude_pattern:
        regex = re.compile(exclude_pattern)
        excluded = [shape for name, shape in shapes.items() if regex.search(name)]
        print(f"# Excluding {len(excluded)} tensors ({sum(map(math.prod, excluded))} params) "
              f"that match {exclude_pattern} when counting.")
        shapes = {name: shape for name, shape in shapes.items() if not regex.search(name)}
    return sum(map(math.prod, shapes.values()))


# --- the stand-in ----------------------------------------------------------------------------

class NeedsTensorFlow(CkptError, AttributeError):
    """A TensorFlow name the stand-in does not offer. An AttributeError too, so hasattr() and
    getattr(tf, name, default) in a script answer as for a missing name."""

    def __init__(self, what, where=""):
        super().__init__(f"{what} needs real TensorFlow{where}: ckptkit's stand-in offers "
                         "TensorFlow's checkpoint reading only (NewCheckpointReader, "
                         "tf.train.load_checkpoint, load_variable, list_variables, "
                         "latest_checkpoint, get_checkpoint_state, checkpoint_exists, "
                         "inspect_checkpoint, tf.errors, dtypes)")
        self.what = what


class _StandIn(types.ModuleType):
    """A module that offers the checkpoint-reading names and refuses everything else."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise NeedsTensorFlow(f"{self.__name__}.{attr}")


class _RefuseTensorFlowModules:
    """An import finder that refuses the TensorFlow modules the stand-in lacks
    (tensorflow.contrib, ...), where Python would say 'No module named'."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("tensorflow."):
            raise NeedsTensorFlow(fullname)
        return None


def _surface():
    """Stand-in module name -> the names it offers."""
    train = {f.__name__: f for f in (NewCheckpointReader, load_checkpoint, load_variable,
                                     list_variables, latest_checkpoint, get_checkpoint_state,
                                     checkpoint_exists)}
    errors = {c.__name__: c for c in (OpError, InvalidArgumentError, NotFoundError,
                                      UnimplementedError, InternalError, DataLossError)}
    dtypes = {name: DType(name) for name, _ in TF_DTYPES.values()}
    dtypes["DType"] = DType
    state = {f.__name__: f for f in (latest_checkpoint, get_checkpoint_state,
                                     checkpoint_exists)}
    surface = {"tensorflow": {"__version__": "ckptkit-stand-in"}}
    for root in ("tensorflow", "tensorflow.compat.v1", "tensorflow.compat.v2"):
        surface.setdefault(root, {}).update(dtypes)
        surface.update({f"{root}.train": train, f"{root}.errors": errors,
                        f"{root}.dtypes": dtypes})
    reader = {"NewCheckpointReader": NewCheckpointReader}
    surface.update({
        "tensorflow.python.pywrap_tensorflow": reader,
        "tensorflow.python.training.py_checkpoint_reader": reader,
        "tensorflow.python.training.checkpoint_utils": {
            f.__name__: f for f in (load_checkpoint, load_variable, list_variables)},
        "tensorflow.python.training.checkpoint_management": state,
        "tensorflow.python.checkpoint.checkpoint_management": state,
        "tensorflow.python.framework.errors_impl": errors,
        "tensorflow.python.tools.inspect_checkpoint": {
            "print_tensors_in_checkpoint_file": print_tensors_in_checkpoint_file},
    })
    return surface


def install_tensorflow_stand_in():
    """Make `import tensorflow` (and its checkpoint-reading modules) give ckptkit's stand-in,
    so an unchanged legacy inspection script runs without TensorFlow installed."""
    modules = {}

    def module(name):
        if name not in modules:
            made = modules[name] = _StandIn(name)
            made.__path__ = []   # a package: its missing submodules reach the finder
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(module(parent), child, made)
        return modules[name]

    for name, names in _surface().items():
        vars(module(name)).update(names)
    sys.modules.update(modules)
    sys.meta_path.insert(0, _RefuseTensorFlowModules())


def run_script(script, args):
    """Run a legacy checkpoint-reading script as `python script args...` would, its TensorFlow
    imports answered by the stand-in; the script's exit code. An exception of the script's
    prints its traceback, as Python does (1); the stand-in's refusal of a TF name is ckptkit's
    one-line error, where the script used it."""
    import runpy

    if "tensorflow" in sys.modules:
        raise CkptError("TensorFlow is already imported in this process")
    install_tensorflow_stand_in()
    path = os.path.abspath(script)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(path))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except NeedsTensorFlow as e:
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        where = f" ({script}, line {lines[-1]})" if lines else ""
        raise NeedsTensorFlow(e.what, where) from None
    except Exception as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next   # from the script's first frame on, as Python shows it
        traceback.print_exception(type(e), e, tb)
        return 1
    return 0
