"""What every format reader offers: its variables in name order and lazy values."""
import difflib

from ..errors import CkptError, NotFound


class Reader:
    """A checkpoint opened for reading; values are read only when asked for, one at a time.

    Subclasses fill `variables` (name -> Variable, in name order), `files`, and implement
    `read`; `problems` (for `verify`) lists what is corrupt or missing.
    """

    format = ""

    def __init__(self, path):
        self.path = path
        self.files = []
        self.variables = {}
        self.note = ""

    def __iter__(self):
        return iter(self.variables.values())

    def __len__(self):
        return len(self.variables)

    def __contains__(self, name):
        return name in self.variables

    def variable(self, name):
        try:
            return self.variables[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.variables), n=3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise NotFound(f"no tensor {name!r} in {self.path}{hint}") from None

    def read(self, name):
        """The value of tensor `name` as a numpy array."""
        raise NotImplementedError

    def problems(self, progress=None):
        """Yield one line per corrupt or missing thing; `progress(nbytes)` after each tensor.

        The default reads every tensor, so every structural check a reader makes applies.
        """
        for var in self:
            try:
                self.read(var.name)
            except CkptError as e:
                yield f"{var.name}: {e}"
            if progress:
                progress(var.nbytes)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
