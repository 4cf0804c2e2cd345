"""Output: results rendered as tables on a terminal, plain lines when piped, or JSON.
The only module that prints results (rich honours NO_COLOR by itself)."""

from __future__ import annotations

import json
import sys
from typing import Any

from uvrefs.collect import Decision, Removal
from uvrefs.doctor import Check, Repair

JSON_FORMAT = 1


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _decision(d: Decision) -> dict[str, Any]:
    return {
        "entry": d.entry,
        "dist": d.dist,
        "version": d.version,
        "tags": list(d.tags),
        "bytes": d.bytes,
        "reason": d.reason,
    }


def removal_json(r: Removal) -> dict[str, Any]:
    """The `collect --json` document (schema in docs/cli.md, pinned by a test)."""
    return {
        "format": JSON_FORMAT,
        "cache": str(r.cache),
        "dry_run": r.dry_run,
        "freed": [_decision(d) for d in r.freed],
        "kept": [_decision(d) for d in r.kept],
        "untracked": r.untracked,
        "bytes_freed": r.bytes_freed,
        "errors": list(r.errors),
        "unreadable_refs": list(r.unreadable),
        "warnings": list(r.warnings),
        "lock_held_seconds": round(r.lock_held, 4),
    }


def print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _label(d: Decision) -> str:
    return f"{d.dist or '?'} {d.version or ''}".strip()


def print_removal(r: Removal) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    verb = "would free" if r.dry_run else "freed"
    if console.is_terminal:
        if r.freed:
            table = Table(title=f"{verb.capitalize()} ({r.cache})", title_justify="left")
            for col in ("package", "tags", "size", "entry", "why"):
                table.add_column(col, justify="right" if col == "size" else "left")
            for d in r.freed:
                table.add_row(_label(d), ",".join(d.tags), human(d.bytes), d.entry, d.reason)
            console.print(table)
        if r.kept:
            table = Table(title="Kept", title_justify="left")
            for col in ("package", "entry", "why"):
                table.add_column(col)
            for d in r.kept:
                table.add_row(_label(d), d.entry, d.reason)
            console.print(table)
    else:
        for d in r.freed:
            print(f"{verb} {_label(d)} [{','.join(d.tags)}] {human(d.bytes)} {d.entry}: {d.reason}")
        for d in r.kept:
            print(f"kept {_label(d)} {d.entry}: {d.reason}")
    for error in r.errors:
        print(f"error {error}")
    print(
        f"{verb} {len(r.freed)} entries, {human(r.bytes_freed)}; kept {len(r.kept)} tracked "
        f"and {r.untracked} untracked entries" + (f"; {len(r.errors)} errors" if r.errors else "")
    )


def doctor_json(checks: list[Check], repaired: Repair | None) -> dict[str, Any]:
    """The `doctor --json` document (schema in docs/cli.md)."""
    return {
        "format": JSON_FORMAT,
        "healthy": not any(c.status == "fail" for c in checks),
        "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
        "repair": None
        if repaired is None
        else {
            "set_aside": list(repaired.set_aside),
            "stale_dropped": repaired.stale_dropped,
            "envs_rescanned": repaired.envs_rescanned,
            "refs_written": repaired.refs_written,
        },
    }


def print_doctor(checks: list[Check], repaired: Repair | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if repaired is not None:
        print(
            f"repair: set aside {len(repaired.set_aside)} unreadable refs, dropped "
            f"{repaired.stale_dropped} stale, re-scanned {repaired.envs_rescanned} envs, "
            f"wrote {repaired.refs_written} refs"
        )
    if console.is_terminal:
        table = Table(title="uvrefs doctor", title_justify="left")
        for col in ("check", "status", "detail"):
            table.add_column(col)
        style = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail)
        console.print(table)
    else:
        for c in checks:
            print(f"{c.status:4} {c.name}: {c.detail}")
