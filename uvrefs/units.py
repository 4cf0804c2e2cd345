"""Durations and sizes as users write them (`7d`, `500M`), and as uvrefs writes them back
(`3 minutes`, `1.2 MiB`, `1 entry`). Light on purpose: the install path reads
`UVREFS_AUTO_COLLECT` with it."""

from __future__ import annotations

from uvrefs.errors import UsageError


def parse_duration(text: str, option: str = "duration") -> float:
    """`90s`, `30m`, `12h`, `7d`, `2w` -> seconds, finite and not negative; `option` names
    what was given in the error. A number needs its unit (`--every 7` was 7 seconds to
    uvrefs and a week to its user), except a bare 0, which is 0 in every unit."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = (text[:-1], text[-1].lower()) if text[-1:].isalpha() else (text, "")
    try:
        seconds = float(number) * units[unit] if unit else float(number)
    except (ValueError, KeyError):
        seconds = -1.0
    if not 0 <= seconds < float("inf"):  # also refuses NaN
        raise UsageError(
            f"{option} {text!r}: use a duration of 0 or more with s, m, h, d or w (e.g. 7d)"
        )
    if not unit and seconds:
        n = text.strip()
        raise UsageError(
            f"{option} {text!r}: a duration needs a unit: {n}s, {n}m, {n}h, {n}d or {n}w "
            "(only 0 goes without one)"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as `parse_duration` reads them back: `12h`, `3d`, `90m`, `7s`, `1.5s`."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_size(text: str, option: str = "size") -> int:
    """`500M`, `2G`, `1.5GiB`, `100k` (powers of 1024) or plain bytes -> bytes, finite and
    not negative; `option` names what was given in the error."""
    units = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    number = cleaned.rstrip("kmgt")
    try:
        size = float(number) * units[cleaned[len(number) :]]
    except (ValueError, KeyError):
        size = -1.0
    if not 0 <= size < float("inf"):  # also refuses NaN
        raise UsageError(
            f"{option} {text!r}: use a size of 0 or more with K, M, G or T (e.g. 500M)"
        )
    return int(size)


def human_size(n: int) -> str:
    """Bytes in powers of 1024, as `uv cache size --human` shows them: `1.2 MiB`."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


DURATIONS = (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60))


def human_duration(seconds: float) -> str:
    """A duration in whole units, the largest that gives at least 2 (or exactly 1):
    `45 seconds`, `3 minutes`, `1 hour`, `36 hours`, `9 days`, `3 weeks`."""
    seconds = max(0.0, seconds)
    for name, length in DURATIONS:
        if seconds >= 2 * length or seconds == length:
            return plural(int(seconds // length), name)
    return plural(int(seconds), "second")


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 entry`, `2 entries`: `words` is the plural where adding `s` is wrong."""
    if n == 1:
        return f"1 {word}"
    if words is None:
        words = (
            word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"
        )
    return f"{n} {words}"
