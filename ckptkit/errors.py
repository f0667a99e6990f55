"""One exception family; the CLI turns any of them into one line and the class's exit code."""


class CkptError(Exception):
    """Bad input or usage: the message names the offending thing and, where known, the fix."""

    exit_code = 2


class NotFound(CkptError):
    """A path, checkpoint or tensor that does not exist."""


class FormatError(CkptError):
    """Bytes that do not follow the format they claim."""


class Corrupt(FormatError):
    """A checksum or size that disagrees with the data: what `verify` reports."""


class Unsupported(FormatError):
    """A valid file using a feature ckptkit does not read (e.g. variant tensors)."""


class PlanError(CkptError):
    """A restore plan that cannot be made as asked."""


class MissingPackage(CkptError):
    """An optional package a feature needs is not installed; the message says what to
    install."""
