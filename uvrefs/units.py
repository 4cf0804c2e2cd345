"""Durations and sizes as users write them (`7d`, `500M`). Light on purpose: the install
path reads `UVREFS_AUTO_COLLECT` with it."""

from __future__ import annotations

from uvrefs.errors import UvrefsError


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `12h`, `7d`, `2w` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = (text[:-1], text[-1].lower()) if text[-1:].isalpha() else (text, "s")
    try:
        return float(number) * units[unit]
    except (ValueError, KeyError):
        raise UvrefsError(
            f"duration {text!r}: use a number with s, m, h, d or w (e.g. 7d)"
        ) from None


def parse_size(text: str) -> int:
    """`500M`, `2G`, `1.5GiB`, `100k` (powers of 1024) or plain bytes -> bytes."""
    units = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    number = cleaned.rstrip("kmgt")
    try:
        return int(float(number) * units[cleaned[len(number) :]])
    except (ValueError, KeyError):
        raise UvrefsError(f"size {text!r}: use a number with K, M, G or T (e.g. 500M)") from None
