"""Packages as uv names them (PEP 503: `python-dateutil`, whatever the wheel wrote), the
per-package view `status --packages`, and listings sorted by size, then name."""

from __future__ import annotations

import json
import shutil
from typing import Any

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


def _packages(world: World) -> dict[str, Any]:
    return json.loads(world.uvrefs("status", "--packages", "--json").stdout)  # type: ignore[no-any-return]


def test_status_packages_has_one_row_per_package_largest_first(world: World) -> None:
    web, old = world.venv("web"), world.venv("old")
    world.uvrefs("install", "-q", "-p", web, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", old, *world.offline(), "alpha==1.0", "big")
    scratch = world.venv("scratch")  # plain uv beside them: found, a root
    world.uv("pip", "install", "-q", "-p", scratch, *world.offline(), "alpha==3.0")
    shutil.rmtree(old)
    out = _packages(world)
    rows = {p["name"]: p for p in out["packages"]}
    assert [p["name"] for p in out["packages"]][:1] == ["big"]
    sizes = [p["bytes"] for p in out["packages"]]
    assert sizes == sorted(sizes, reverse=True)
    assert rows["alpha"]["versions"] == ["1.0", "2.0", "3.0"]
    assert rows["alpha"]["builds"] == ["py3-none-any"]
    assert rows["alpha"]["states"] == {"live": 2, "dead": 1}
    assert rows["alpha"]["state"] == "live 2, dead 1"
    assert rows["alpha"]["envs"] == sorted([str(web), f"{scratch} (discovered)"])
    assert rows["big"]["state"] == "dead" and rows["big"]["envs"] == []
    assert rows["beta"] == {**rows["beta"], "state": "live", "envs": [str(web)]}
    # the rows split the same figures as the plain status, pointers of dead entries included
    states = sum(out[s]["bytes"] for s in ("live", "dead", "held", "untracked"))
    assert sum(sizes) == states
    text = world.uvrefs("status", "--packages").stdout.splitlines()
    assert text[1].startswith("big 1.0 [py3-none-any] ") and text[1].endswith(": dead"), text
    alpha = next(line for line in text if line.startswith("alpha "))
    assert alpha.startswith("alpha 1.0, 2.0, 3.0 [py3-none-any] "), alpha
    assert alpha.endswith(f": live 2, dead 1; used by {scratch} (discovered), {web}"), alpha
    assert text[-1].startswith("3 packages, ") and "; uv's own " in text[-1], text


def test_listings_are_sorted_by_size_then_name(world: World) -> None:
    small, large = world.venv("a-small"), world.venv("b-large")  # by path: small first
    world.uvrefs("install", "-q", "-p", small, *world.offline(), "beta")
    world.uvrefs("install", "-q", "-p", large, *world.offline(), "big", "alpha==1.0")
    envs = [e["path"] for e in json.loads(world.uvrefs("envs", "--json").stdout)["envs"]]
    assert envs == [str(large), str(small)]
    shutil.rmtree(large)
    lines = world.uvrefs("collect", "--dry-run").stdout.splitlines()
    assert [line.split()[2] for line in lines if line.startswith("would free ")][:2] == [
        "big",
        "alpha",
    ], lines
