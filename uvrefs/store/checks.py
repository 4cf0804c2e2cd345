"""What the generated readers of store records (`uvrefs.store.fields`) check values with.
Light on purpose: the install path reads records."""

from __future__ import annotations

import re
from functools import lru_cache

TYPE_CHECKING = False
if TYPE_CHECKING:  # types only: a recording imports no `typing` (uvrefs.tuples)
    from collections.abc import Callable
    from datetime import datetime
    from typing import Any, TypeVar

    T = TypeVar("T")
# RFC 3339, as uvrefs writes times: a subset of what pydantic reads as a datetime.
# An offset's hours and minutes are checked here (`fromisoformat` takes `+00:60` for +01:00).
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)")


def is_time(value: object) -> bool:
    return isinstance(value, str) and _is_time_text(value)


@lru_cache(maxsize=4096)  # referrers recorded together share one time
def _is_time_text(value: str) -> bool:
    if not TIME.fullmatch(value):
        return False
    from datetime import datetime  # here: a recording reads no times, and needs none

    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def time_text(value: datetime) -> str:
    """A datetime as uvrefs writes times (as pydantic dumps them)."""
    return value.isoformat().replace("+00:00", "Z")


def strs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def records(value: object, read: Callable[[Any], T | None]) -> tuple[T, ...] | None:
    """A list of records, each read by `read`; None if it is not one or any is not."""
    if not isinstance(value, list):
        return None
    found = tuple(read(v) for v in value)
    return None if any(r is None for r in found) else found  # type: ignore[return-value]
