"""Keras weights in HDF5: Keras 2 `.h5` (full model or weights-only), Keras 3 legacy `.h5`
and `.weights.h5`, and the `model.weights.h5` inside a Keras 3 `.keras` zip.

- every tensor is an HDF5 dataset, named by its path from the file root as h5py shows it.
- Keras 2 full model (`model.save("m.h5")`): root attrs `keras_version`, `backend`,
  `model_config`, `training_config`; group `model_weights/` (attr `layer_names`) holds one
  group per layer (attr `weight_names`, empty for weightless layers) with the weights at
  `model_weights/<layer>/<weight name>`, e.g. `model_weights/dense_1/dense_1/kernel:0`;
  group `optimizer_weights/` (attr `weight_names`) holds the slots, e.g.
  `optimizer_weights/training/Adam/Variable:0`, `optimizer_weights/Adam/iterations:0`.
- Keras 2 weights-only (`save_weights("w.h5")`): the `model_weights/` layout at the root,
  e.g. `dense_106/dense_106/bias:0`.
- Keras 3 legacy `.h5`: the Keras 2 layout without `:0`, e.g.
  `model_weights/dense/sequential/dense/kernel`, `optimizer_weights/adam/iteration`.
- Keras 3 `.weights.h5`: `layers/<layer>/vars/<i>` (nested models nest `layers/`),
  `optimizer/vars/<i>`, `vars/<i>` for the model's own; bfloat16 is stored as 2-byte opaque
  data with attr `dtype = "bfloat16"`.
- Keras 3 `.keras`: a zip of `config.json`, `metadata.json` and `model.weights.h5`, which
  Keras stores uncompressed: it is read in place. One that `ckptkit port` wrote says in its
  metadata which checkpoint tensor each weight came from (keras_meta.py): the reader's
  `sources` and `origin`.
Notes: listing walks every dataset, so all layouts read alike. Scalars have shape (); string
datasets have dtype `string`; a dataset with a null dataspace is listed but has no value.
Contiguous numeric datasets are read as views of a memory map; chunked, compressed and compact
ones through h5py.
Only the file's own bytes are read: HDF5 can point outside it (a dataset's external raw
storage, a virtual dataset's source files, an external link), and such a file is refused
when it is opened, naming the dataset or link. Of a `.keras` zip only `model.weights.h5` is
read, and its metadata.json and config.json (regular members of at most 8 MiB, parsed
only for a ckptkit port; anything amiss there is a warning, the weights still list); a
deflated weights member (Keras stores it) is inflated a piece at a time into an unnamed temp
file that is mapped instead, unless it would inflate past base.check_expansion's bound.
A dataset decoded rather than mapped (chunked, compressed, compact, or never written: HDF5
reads unwritten chunks, and a contiguous dataset without storage, as the fill value) may
decode to at most that bound of its stored bytes, so a 1 KB file declaring a 4 TB dataset
is refused, not allocated. Shapes numpy cannot make are listed but not read.
"""
import io
import json
import mmap
import stat
import tempfile
import zipfile
from math import prod

import h5py

from ..errors import CkptError, Corrupt, FormatError, NotFound, Unsupported
from ..fileio import map_file, unmap
from ..variable import Variable, numpy_dtype
from .base import Reader, Writer, check_expansion, numpy_shape
from .keras_meta import SET_ASIDE, port_record, port_section
from .npz import ZIP_ERRORS, data_start, member_bytes

WEIGHTS_MEMBER = "model.weights.h5"
METADATA, CONFIG = "metadata.json", "config.json"
_DOCUMENT_LIMIT = 8 << 20   # bytes of metadata.json or config.json parsed, at most
# what h5py raises on damaged metadata or data
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)
_DECODED = "HDF5 reads unwritten chunks as the fill value, or a decompression bomb? If the " \
    "weights are real, store them contiguous and uncompressed (h5py's default), which " \
    "ckptkit maps instead of decoding"


class KerasH5Reader(Reader):
    format = "keras-h5"

    def __init__(self, path):
        super().__init__(path)
        self.files = [path]
        try:
            self._map = map_file(path)
        except OSError as e:
            raise NotFound(f"cannot read {path}: {e.strerror}") from None
        # the HDF5 image is bytes start..start+size of `_map` (all of it for a plain .h5)
        self._start, self._size = 0, len(self._map)
        self._h5 = None
        documents = None
        try:
            if self._map[:2] == b"PK":
                documents = self._open_member()
                self._h5 = h5py.File(_Window(self._map, self._start, self._size), "r")
            else:
                self._h5 = h5py.File(path, "r")
            datasets = {}

            def collect(name, obj):   # returns None: visititems stops at anything else
                if isinstance(obj, h5py.Dataset):
                    datasets[name] = obj

            self._h5.visititems(collect)   # follows no external link
            self._refuse_outside_links()   # after the walk, HDF5 caches grow less
            for name in sorted(datasets):
                self.variables[name] = _variable(path, name, datasets[name])
            if documents:
                self.origin, self.sources, warnings = port_record(path, *documents,
                                                                  self.variables)
                self.warnings.extend(warnings)
        except _H5_ERRORS as e:
            self.close()
            raise FormatError(f"{path} is not a readable HDF5 file: {e}") from None
        except CkptError:
            self.close()
            raise

    def _open_member(self):
        """Point the image at the .keras zip's weights member: in place when stored, else
        inflated into an unnamed temp file (gone with the process) that is mapped instead.
        Returns (the metadata's "ckptkit" object, parsed config.json) for an archive ckptkit
        ported, else None."""
        try:
            with zipfile.ZipFile(self.path) as zf:
                info = zf.getinfo(WEIGHTS_MEMBER)
                section = port_section(self._document(zf, METADATA))
                documents = section and (section, self._document(zf, CONFIG))
            if info.compress_type == zipfile.ZIP_STORED:
                self._start, self._size = data_start(self._map, info, self.path), \
                    info.file_size
                return documents
            pieces = member_bytes(self._map, info, self.path, "a decompression bomb? If the "
                                  f"model is real, re-zip it with {WEIGHTS_MEMBER} stored, "
                                  "as Keras writes it")
            try:
                with tempfile.TemporaryFile() as f:
                    for piece in pieces:
                        f.write(piece)
                    f.flush()
                    image = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except OSError as e:
                raise CkptError(f"{self.path}: cannot inflate {WEIGHTS_MEMBER} into a temp "
                                f"file in {tempfile.gettempdir()}: {e.strerror or e}") from None
            unmap(self._map)
            self._map, self._start, self._size = image, 0, len(image)
            return documents
        except KeyError:
            raise FormatError(f"{self.path} holds no {WEIGHTS_MEMBER} (a .keras file saved "
                              "with weights_format='npz', or not a Keras file)") from None
        except ZIP_ERRORS as e:
            raise FormatError(f"{self.path} is not a readable .keras (zip) file: {e}") from None

    def _document(self, zf, name):
        """Member `name` of the archive parsed as JSON; None when it is absent, and also (with
        a warning) when it is not a regular file, is over _DOCUMENT_LIMIT or is not JSON."""
        try:
            info = zf.getinfo(name)
        except KeyError:
            return None
        # Keras writes permission bits without a file type; a link or device has one
        if info.is_dir() or stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
            why = "is not a regular file"
        elif info.file_size > _DOCUMENT_LIMIT:
            why = f"holds {info.file_size} bytes, over the {_DOCUMENT_LIMIT >> 20} MiB " \
                "ckptkit reads of it"
        else:
            try:
                return json.loads(b"".join(member_bytes(self._map, info, self.path, "")))
            except CkptError as e:
                why = f"cannot be read ({e})"
            except ZIP_ERRORS as e:   # JSON and UTF-8 errors are ValueErrors, deep nesting
                why = f"is not JSON ({e})"   # a RecursionError (a RuntimeError)
        self.warnings.append(f"{self.path}: {name} {why}; {SET_ASIDE}")
        return None

    def _refuse_outside_links(self):
        """External (and user-defined) links lead into other files; visititems would also
        skip them without a word."""
        def outside(name, info):
            return name if info.type not in (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT) else None

        name = self._h5.id.links.visit(outside, info=True)
        if name is not None:
            name = name.decode("utf-8", "backslashreplace")
            link = self._h5.get(name, getlink=True)
            target = f" to {link.path!r} in {link.filename}" \
                if isinstance(link, h5py.ExternalLink) else ""
            raise Unsupported(f"{self.path}: {name!r} is a link{target} outside the file; "
                              "ckptkit reads only the checkpoint's own bytes")

    def read(self, name):
        import numpy as np

        var = self.variable(name)
        ds = var.where
        where = f"{self.path}: dataset {name!r}"
        if ds.shape is None:
            raise Unsupported(f"{where} has no value (HDF5 null dataspace)")
        if var.dtype not in ("string", "bfloat16") and ds.dtype.kind not in "biufc":
            hint = "; Keras 3 writes bfloat16 weights to legacy .h5 files as such 2-byte " \
                "opaque data, without saying so: re-save as .weights.h5 or .keras" \
                if ds.dtype == "V2" else ""
            raise Unsupported(f"{where} has HDF5 type {ds.dtype} (opaque, compound, reference "
                              f"or variable-length), which is not a tensor{hint}")
        dtype = numpy_dtype("bfloat16") if var.dtype == "bfloat16" else ds.dtype
        numpy_shape(where, var.shape, dtype)
        try:
            offset = None if var.dtype == "string" else ds.id.get_offset()
            if offset is not None:
                return self._mapped(where, var, dtype, offset)
            check_expansion(where, var.size * ds.dtype.itemsize, ds.id.get_storage_size(),
                            _DECODED)
            value = ds[()]
        except _H5_ERRORS as e:
            raise Corrupt(f"{where} cannot be read: {e}") from None
        if var.dtype == "string":
            return np.array(value, dtype=object)
        return np.asarray(value).view(dtype)

    def _mapped(self, where, var, dtype, offset):
        """A contiguous dataset's elements, viewed in the memory map."""
        import numpy as np

        end = offset + var.size * dtype.itemsize
        if end > self._size:
            raise Corrupt(f"{where}: bytes {offset}..{end} lie past the end of the HDF5 data "
                          f"({self._size} bytes); the file is truncated")
        return np.frombuffer(self._map, dtype, var.size,
                             offset=self._start + offset).reshape(var.shape)

    def close(self):
        if self._h5 is not None:
            self._h5.close()
        unmap(self._map)


def _variable(path, name, ds):
    """A dataset's tensor; Unsupported when its values live outside the file."""
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        raise Unsupported(f"{path}: dataset {name!r} is virtual (its values are read from "
                          "other HDF5 files); ckptkit reads only the checkpoint's own bytes")
    if dcpl.get_external_count():
        raise Unsupported(f"{path}: dataset {name!r} keeps its values in external file "
                          f"{dcpl.get_external(0)[0].decode('utf-8', 'backslashreplace')}; "
                          "ckptkit reads only the checkpoint's own bytes")
    dtype = _dtype(ds)
    if ds.shape is None:   # a null dataspace: listed, but it has no value
        return Variable(name, (), dtype, 0, where=ds)
    nbytes = ds.id.get_storage_size() if dtype == "string" else \
        prod(ds.shape) * ds.dtype.itemsize
    return Variable(name, ds.shape, dtype, nbytes, where=ds)


def _dtype(ds):
    """Our dtype name for a dataset; unreadable HDF5 types keep numpy's name for them."""
    dt = ds.dtype
    if h5py.check_string_dtype(dt) is not None:
        return "string"
    if dt.kind == "V" and dt.itemsize == 2 and ds.attrs.get("dtype") in ("bfloat16",
                                                                         b"bfloat16"):
        return "bfloat16"
    return dt.name


class _Window(io.RawIOBase):
    """A read-only file over bytes start..start+size of a buffer, so that h5py reads a stored
    zip member in place."""

    def __init__(self, buf, start, size):
        super().__init__()
        self._buf, self._start, self._size, self._pos = buf, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=io.SEEK_SET):
        self._pos = max(0, pos + (0, self._pos, self._size)[whence])
        return self._pos

    def tell(self):
        return self._pos

    def readinto(self, b):
        n = max(0, min(len(b), self._size - self._pos))
        at = self._start + self._pos
        memoryview(b)[:n] = self._buf[at:at + n]
        self._pos += n
        return n


class KerasH5Writer(Writer):
    """Keras-2-style weights `.h5`: each tensor a contiguous dataset at its name's path, the
    root attr `layer_names` listing the top-level groups and each group's `weight_names`
    listing its datasets (as `save_weights` writes). bfloat16 is stored as 2-byte opaque data
    with attr dtype="bfloat16" (as Keras 3 does); strings are refused; a name that is both a
    tensor and a scope of another cannot be written, nor one HDF5 would store under another
    name (a NUL byte, an empty or '.' path part), which is refused before writing."""

    format = "keras-h5"

    def __init__(self, path):
        super().__init__(path)
        f = self.temp(path)
        f.close()
        self._h5 = h5py.File(self.order[-1][0], "w")
        self._names = []

    def begin(self, specs):
        names = {name for name, _, _ in specs}
        for name, _, dtype in specs:
            if "\0" in name or {"", "."} & set(name.split("/")):
                raise Unsupported(f"tensor {name!r} would be stored under another name in "
                                  "HDF5 (a NUL byte ends a name there; empty and '.' path "
                                  "parts vanish); rename it (`ckptkit surgery CHECKPOINT -o "
                                  f"{self.path} --rename OLD=NEW`) or write safetensors")
            if dtype in ("string", "resource", "variant", "object"):
                raise Unsupported(f"tensor {name!r} is {dtype}, which ckptkit does not write "
                                  "to .h5; drop it or write a V2 checkpoint")
            scope = name.rpartition("/")[0]
            while scope:
                if scope in names:
                    raise Unsupported(f"tensor {scope!r} is also the scope of {name!r}, which "
                                      "HDF5 cannot hold (a dataset is not a group); leave "
                                      "one of them out: `ckptkit surgery CHECKPOINT -o "
                                      f"{self.path} --strip-optimizer` or `ckptkit surgery "
                                      f"CHECKPOINT -o {self.path} --drop SCOPE`")
                scope = scope.rpartition("/")[0]

    def add(self, name, array):
        import numpy as np

        bf16 = array.dtype.name == "bfloat16"
        data = array if array.flags.c_contiguous else array.copy()
        if bf16:
            data = data.view(np.dtype("V2"))
        try:
            ds = self._h5.create_dataset(name, data=data)
        except (ValueError, TypeError, KeyError) as e:
            raise FormatError(f"tensor {name!r} cannot be written to .h5: {e} (is another "
                              "tensor named like its scope?)") from None
        if bf16:
            ds.attrs["dtype"] = "bfloat16"
        self._names.append(name)

    def finish(self):
        layers = {}
        for name in self._names:
            layer, _, rest = name.partition("/")
            if rest:
                layers.setdefault(layer, []).append(rest.encode("utf-8"))
        import numpy as np

        # fixed-width byte strings, as Keras 2 stores these attrs
        self._h5.attrs["layer_names"] = np.array([k.encode("utf-8") for k in layers],
                                                 dtype=bytes)
        for layer, names in layers.items():
            self._h5[layer].attrs["weight_names"] = np.array(names, dtype=bytes)
        self._h5.close()

    def abort(self):
        try:
            self._h5.close()
        except (ValueError, OSError):
            pass
        super().abort()
