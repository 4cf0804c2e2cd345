"""The exceptions uvrefs raises for conditions a user can fix.

The CLI turns every `UvrefsError` into one line on stderr and its `exit_code`, and so an
`OSError` nothing closer handled (`from_os_error`); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UvrefsError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""

    exit_code = 2


class UsageError(UvrefsError):
    """The command line cannot be carried out as given."""


class UvNotFound(UvrefsError):
    """No uv binary could be run."""

    exit_code = 127


class UvTimeout(UvrefsError):
    """uv did not answer a query in time."""

    exit_code = 3


class CacheRefused(UvrefsError):
    """The cache directory is not one uvrefs may delete from."""


class StoreError(UvrefsError):
    """The refs store cannot be read or written."""


class LockTimeout(UvrefsError):
    """uv's cache lock could not be taken in time."""

    exit_code = 3


def from_os_error(exc: OSError) -> UvrefsError:
    """An OS error no closer handler turned into advice, as a one-line error (`-v` still
    shows where it came from)."""
    import os

    try:
        os.getcwd()
    except OSError:
        return UsageError("the current directory no longer exists; cd to one that does and retry")
    where = f": {exc.filename}" if exc.filename else ""
    return UvrefsError(
        f"{exc.strerror or exc}{where}; check that path and its permissions (-v shows where)"
    )
