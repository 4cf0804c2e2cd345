"""Packages as uv names them (PEP 503: `python-dateutil`, whatever the wheel wrote)."""

from __future__ import annotations

import json
import shutil

from tests.conftest import World
from tests.wheels import build_wheel


def odd_names(world: World) -> list[str]:
    """Wheels whose dist-info spells the name otherwise than uv shows it."""
    out = world.root / "odd"
    out.mkdir()
    build_wheel(out, "python_dateutil", "2.0")
    build_wheel(out, "Foo_Bar.Baz", "1.0")
    return [*world.offline(), "--find-links", str(out)]


def test_names_read_as_uv_shows_them_and_keep_takes_any_spelling(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *odd_names(world), "python-dateutil", "foo-bar-baz")
    shutil.rmtree(env)
    lines = world.uvrefs("collect", "--dry-run").stdout.splitlines()
    assert {line.split(" [")[0] for line in lines[:-1]} == {
        "would free python-dateutil 2.0",
        "would free foo-bar-baz 1.0",
    }, lines
    out = json.loads(world.uvrefs("collect", "--dry-run", "--json").stdout)
    assert {d["dist"] for d in out["freed"]} == {"python-dateutil", "foo-bar-baz"}
    # PEP 503: runs of -, _ and . are one separator, any case
    kept = json.loads(
        world.uvrefs(
            "collect", "--dry-run", "--json", "--keep", "Python--DateUtil", "--keep", "foo.bar_baz"
        ).stdout
    )
    assert kept["freed"] == [] and {d["reason"] for d in kept["kept"]} == {"kept by --keep"}
    why = world.uvrefs("why", "python.dateutil").stdout
    assert why.startswith("python-dateutil 2.0 [py3-none-any] "), why
