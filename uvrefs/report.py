"""Output: results rendered as tables on a terminal, plain lines when piped, or JSON.
The only module that prints results (rich honours NO_COLOR by itself)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from uvrefs.names import normalize
from uvrefs.units import human_size as human
from uvrefs.units import plural

TYPE_CHECKING = False
if TYPE_CHECKING:  # names only: `collect` must not pay for doctor's and inventory's imports
    from uvrefs.doctor import Check, Repair
    from uvrefs.gc.collect import Removal
    from uvrefs.gc.plan import Decision
    from uvrefs.inventory import (
        Adoption,
        EntryView,
        EnvView,
        HostsReport,
        HostView,
        PackageView,
        Status,
    )

JSON_FORMAT = 1


def _decision(d: Decision) -> dict[str, Any]:
    return {
        "entry": d.entry,
        "dist": normalize(d.dist) if d.dist else None,
        "version": d.version,
        "tags": list(d.tags),
        "bytes": d.bytes,
        "reason": d.reason,
        "state": d.state,
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
        "live_untracked": r.live_untracked,
        "bytes_freed": r.bytes_freed,
        "content_blobs": {"count": r.blobs, "bytes": r.blob_bytes},
        "project_envs": [{"path": p, "reason": why, "bytes": b} for p, why, b in r.envs],
        "errors": list(r.errors),
        "unreadable_refs": list(r.unreadable),
        "warnings": list(r.warnings),
        "lock_held_seconds": round(r.lock_held, 4),
        "deleting_seconds": round(r.deleting, 4),
        "note": r.note,
        "bytes_upper_bound": r.upper_bound,
    }


class ScanProgress:
    """A progress bar on stderr for scans that run longer than about a second; silent when
    stderr is not a terminal (so pipes, logs and `--json` stay clean). A total of 0 means
    not known ahead (a search): the bar then only counts."""

    def __init__(self, after: float = 1.0) -> None:
        import time

        self._clock = time.monotonic
        self._start = self._clock()
        self._after = after
        self._bar: Any = None
        self._task: Any = None
        self._label = ""

    def __call__(self, what: str, done: int, total: int) -> None:
        if self._bar is None:
            if self._clock() - self._start < self._after or not sys.stderr.isatty():
                return
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
        if what != self._label:
            self._task = self._bar.add_task(what, total=total or None)  # 0: not known
            self._label = what
        self._bar.update(self._task, completed=done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _label(d: Decision) -> str:
    return f"{normalize(d.dist) or '?'} {d.version or ''}".strip()


def by_size(decisions: Iterable[Decision]) -> list[Decision]:
    """Largest first, then by name as uv shows it, version and entry."""
    return sorted(decisions, key=lambda d: (-d.bytes, normalize(d.dist), d.version or "", d.entry))


def removal_summary(r: Removal) -> str:
    verb = "would free" if r.dry_run else "freed"
    uv_own = r.count("uv's own")
    own = f", {uv_own} uv's own" if uv_own else ""
    blobs = f", {plural(len(r.envs), 'project environment')}" if r.envs else ""
    blobs += f" and {plural(r.blobs, 'unlinked content blob')}" if r.blobs else ""
    kept = r.count("live") + r.count("held") + uv_own + r.untracked
    return (
        f"{verb} {plural(len(r.freed), 'entry')}{blobs}, "
        f"{'up to ' if r.upper_bound else ''}{human(r.bytes_freed)}; "
        f"kept {plural(kept, 'entry')}: {r.count('live')} live, {r.count('held')} held{own} "
        f"and {r.untracked} untracked" + (f"; {plural(len(r.errors), 'error')}" if r.errors else "")
    )


def print_removal(r: Removal) -> None:
    verb = "would free" if r.dry_run else "freed"
    if sys.stdout.isatty():  # rich only for a terminal: importing it costs ~45 ms
        from rich.console import Console
        from rich.table import Table

        console = Console(highlight=False)
        if r.freed:
            table = Table(title=f"{verb.capitalize()} ({r.cache})", title_justify="left")
            for col in ("package", "tags", "size", "entry", "why"):
                table.add_column(col, justify="right" if col == "size" else "left")
            for d in by_size(r.freed):
                table.add_row(_label(d), ",".join(d.tags), human(d.bytes), d.entry, d.reason)
            console.print(table)
        if r.kept:
            table = Table(title="Kept", title_justify="left")
            for col in ("package", "entry", "why"):
                table.add_column(col)
            for d in by_size(r.kept):
                table.add_row(_label(d), d.entry, d.reason)
            console.print(table)
    else:
        for d in by_size(r.freed):
            print(f"{verb} {_label(d)} [{','.join(d.tags)}] {human(d.bytes)} {d.entry}: {d.reason}")
        for d in by_size(r.kept):
            print(f"kept {_label(d)} {d.entry}: {d.reason}")
    for path, why, size in r.envs:
        print(f"{verb} uv's project environment {os.path.basename(path)} ({human(size)}), {why}")
    for error in r.errors:
        print(f"error {error}")
    if r.note:
        print(f"note: {r.note}")
    if r.upper_bound:
        print(f"note: {r.upper_bound}")
    print(removal_summary(r))


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
            "left": list(repaired.left),
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
        for line in repaired.left:
            print(f"repair: left {line}")
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


def adopted_json(done: Adoption) -> dict[str, Any]:
    return {
        "format": JSON_FORMAT,
        "adopted": [a._asdict() for a in done.adopted],
        "failed": [{"env": path, "why": why} for path, why in done.failed],
    }


def print_adopted(done: Adoption) -> None:
    for a in done.adopted:
        print(
            f"adopted {a.env}: uses {plural(a.entries, 'cache entry')}, "
            f"{plural(a.refs_written, 'ref')} written"
        )


def envs_json(views: list[EnvView]) -> dict[str, Any]:
    return {"format": JSON_FORMAT, "envs": [v._asdict() for v in views]}


def print_envs(views: list[EnvView]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    rows = [
        (
            v.path,
            v.state + (f" ({v.detail})" if v.detail and v.state != "gone" else ""),
            v.kind,
            v.python or "?",
            ",".join(v.link_modes) or "-",
            str(v.entries),
            human(v.sole_bytes),
        )
        for v in views
    ]
    if console.is_terminal:
        table = Table(title="Environments (roots)", title_justify="left")
        for col in ("env", "state", "root", "python", "link", "entries", "only it keeps"):
            table.add_column(
                col, justify="right" if col in ("entries", "only it keeps") else "left"
            )
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        for row in rows:
            print("\t".join(row))
    print(f"{plural(len(views), 'environment')}, {sum(v.state == 'alive' for v in views)} alive")
    remembered = sum(v.sizes_from_memory for v in views)
    if remembered:
        print(
            f"sizes of {plural(remembered, 'archive')} from memory: measured when first seen, "
            "unchanged since (uv never changes an archive)"
        )


def why_json(views: list[EntryView]) -> dict[str, Any]:
    return {
        "format": JSON_FORMAT,
        "entries": [
            {**v._asdict(), "referrers": [k._asdict() for k in v.referrers]} for v in views
        ],
    }


def print_why(query: str, views: list[EntryView]) -> None:
    if not views:
        print(f"no cache entry of {query!r}")
    for v in views:
        print(f"{v.dist or '?'} {v.version or ''} [{','.join(v.tags)}] {human(v.bytes)} {v.entry}:")
        print(f"  {v.state}: {v.reason}")
        for k in v.referrers:
            print(f"    {k.verdict}: {k.why}")


def status_json(s: Status) -> dict[str, Any]:
    return {
        "format": JSON_FORMAT,
        "cache": s.cache,
        "total_bytes": s.total,
        "live": {"entries": s.live.entries, "bytes": s.live.bytes},
        "dead": {"entries": s.dead.entries, "bytes": s.dead.bytes, "frees_bytes": s.dead_frees},
        "held": {"entries": s.held.entries, "bytes": s.held.bytes},
        "untracked": {"entries": s.untracked.entries, "bytes": s.untracked.bytes},
        "uv_own_bytes": s.uv_own,
        "archives_sized_from_memory": s.remembered,
        **({} if s.packages is None else {"packages": [_package(p) for p in s.packages]}),
    }


def _package(p: PackageView) -> dict[str, Any]:
    return {
        "name": p.name,
        "versions": list(p.versions),
        "builds": list(p.builds),
        "bytes": p.bytes,
        "entries": p.entries,
        "state": p.state,
        "states": p.states,
        "envs": list(p.envs),
    }


def print_packages(s: Status) -> None:
    """`status --packages`: one row per package, largest first."""
    from rich.console import Console
    from rich.table import Table

    packages = s.packages or ()
    console = Console(highlight=False)
    title = f"{s.cache}: {human(s.total)} ({s.total} bytes, as `uv cache size` counts)"
    rows = [
        (
            p.name,
            ", ".join(p.versions),
            ",".join(p.builds),
            human(p.bytes),
            p.state,
            ", ".join(p.envs) or "-",
        )
        for p in packages
    ]
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for col in ("package", "versions", "builds", "size", "state", "used by"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        print(title)
        for name, versions, builds, size, state, envs in rows:
            used = f"; used by {envs}" if envs != "-" else ""
            print(f"{name} {versions} [{builds}] {size}: {state}{used}")
    in_packages = sum(p.bytes for p in packages)
    other = s.total - in_packages - s.uv_own  # archives without a dist-info, not uv's
    print(
        f"{plural(len(packages), 'package')}, {human(in_packages)}; uv's own {human(s.uv_own)}"
        + (f"; other archives {human(other)}" if other else "")
    )


def _dead_note(s: Status) -> str:
    """What the next collect frees: the dead entries (pointers and sdist revisions
    included), or what of them stays and why."""
    frees = f"the next collect frees {human(s.dead_frees)}"
    stays = s.dead.bytes - s.dead_frees
    if stays > 0:
        return f"{frees} ({human(stays)} stays: files also linked from elsewhere)"
    if stays < 0:
        return f"{frees} ({human(-stays)} more: files they share with other entries)"
    return frees


def _terminal_console() -> Any:
    """A rich Console for stdout if rich would take it for a terminal, else None. Decided
    first without rich where the answer is no (not a tty, and neither `TTY_COMPATIBLE=1`
    nor `FORCE_COLOR` says otherwise: rich's own rule), since importing rich costs ~25 ms
    and a script reading the output gets the plain lines either way."""
    if (
        not sys.stdout.isatty()
        and os.environ.get("TTY_COMPATIBLE") != "1"
        and not os.environ.get("FORCE_COLOR")
    ):
        return None
    from rich.console import Console

    console = Console(highlight=False)
    return console if console.is_terminal else None


def print_status(s: Status) -> None:
    rows = [
        (
            "live",
            plural(s.live.entries, "entry"),
            human(s.live.bytes),
            "used by a living environment",
        ),
        (
            "dead",
            plural(s.dead.entries, "entry"),
            human(s.dead.bytes),
            _dead_note(s),
        ),
        (
            "held",
            plural(s.held.entries, "entry"),
            human(s.held.bytes),
            "unused but kept: uncertain, hard-linked or another store's (`uvrefs why`)",
        ),
        (
            "untracked",
            plural(s.untracked.entries, "entry"),
            human(s.untracked.bytes),
            "no environment uvrefs knows uses them (kept; `uvrefs watch add` your projects)",
        ),
        (
            "uv's own",
            "",
            human(s.uv_own),
            "index metadata, interpreters, cached envs, builds, pointers",
        ),
    ]
    title = f"{s.cache}: {human(s.total)} ({s.total} bytes, as `uv cache size` counts)"
    console = _terminal_console()
    if console is not None:
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for col in ("part", "entries", "size", ""):
            table.add_column(col, justify="right" if col in ("entries", "size") else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        print(title)
        for name, count, size, note in rows:
            print(f"  {name:<10} {count:>14} {size:>11}  {note}")
    if s.remembered:
        print(
            f"sizes of {s.remembered} of {plural(s.archives, 'archive')} from memory: "
            "measured when first seen, unchanged since (uv never changes an archive)"
        )


def hosts_json(r: HostsReport) -> dict[str, Any]:
    """The `hosts --json` document (schema in docs/cli.md)."""
    return {
        "format": JSON_FORMAT,
        "host_lease_seconds": r.lease,
        "hosts": [
            {
                "host": h.host,
                "name": h.name,
                "container": h.container,
                "this_host": h.this,
                "state": h.state,
                "last_lease": _utc(h.seen) if h.seen is not None else None,
                "last_recorded": _utc(h.recorded) if h.recorded else None,
                "envs": h.envs,
                "shared_envs": h.shared_envs,
                "sole_entries": h.sole_entries,
                "sole_bytes": h.sole_bytes,
            }
            for h in r.hosts
        ],
    }


def _utc(when: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


def print_hosts(r: HostsReport) -> None:
    from rich.console import Console
    from rich.table import Table

    from uvrefs.gc.plan import day
    from uvrefs.units import human_duration

    def state(h: HostView) -> str:
        if h.state == "expired":
            return "expired: its local envs are gone"
        if h.state == "no lease" and h.envs == h.shared_envs:
            return "no lease: its envs are on a shared filesystem, judged here"
        if h.state == "no lease":
            return "no lease (an older uvrefs): its local envs are never judged gone"
        if h.state == "alive" and h.seen is not None:
            return f"alive ({human_duration(r.clock - h.seen)} ago)"
        return h.state

    def name(h: HostView) -> str:
        label = h.host if len(h.host) <= 45 else h.host[:44] + "…"
        what = ", container" if h.container else ""
        return f"{label} ({h.name}{what})" if h.name and h.name not in h.host else label

    rows = [
        (
            name(h),
            day(h.seen) if h.seen is not None else (day(h.recorded) if h.recorded else "-"),
            state(h),
            str(h.envs) + (f" ({h.shared_envs} shared)" if h.shared_envs else ""),
            human(h.sole_bytes),
        )
        for h in r.hosts
    ]
    console = Console(highlight=False)
    if console.is_terminal:
        table = Table(title="Hosts of this cache", title_justify="left")
        for col in ("host", "last seen", "lease", "envs", "only its envs keep"):
            table.add_column(col, justify="right" if col == "only its envs keep" else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        for row in rows:
            print("\t".join(row))
    expired = sum(h.state == "expired" for h in r.hosts)
    print(
        f"{plural(len(r.hosts), 'host')}; another host unseen for {human_duration(r.lease)} "
        f"is gone (--host-lease)"
        + (f"; {expired} expired: the next collect frees what only they kept" if expired else "")
    )
