"""Package names as uv shows and compares them: PEP 503's normal form, the one spelling
`status`, `why`, `collect` and `--keep` use, whatever a wheel's dist-info or a user wrote
(`Python_Dateutil`, `python.dateutil` and `python--dateutil` are `python-dateutil`)."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[-_.]+")


def normalize(name: str | None) -> str:
    """PEP 503: lowercase, every run of `-`, `_` and `.` one `-` (uv's `PackageName`)."""
    return _SEPARATORS.sub("-", name or "").lower()
