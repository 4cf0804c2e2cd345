"""The exceptions uvrefs raises for conditions a user can fix.

The CLI turns every `UvrefsError` into one line on stderr and its `exit_code`; anything
else is a bug and keeps its traceback.
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


class CacheRefused(UvrefsError):
    """The cache directory is not one uvrefs may delete from."""


class StoreError(UvrefsError):
    """The refs store cannot be read or written."""


class LockTimeout(UvrefsError):
    """uv's cache lock could not be taken in time."""

    exit_code = 3
