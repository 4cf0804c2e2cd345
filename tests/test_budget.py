"""The hot path's budget, enforced: what uvrefs may import in front of every uv command a
user runs through it. A no-op tracked install or sync and the alias's forwarding path
(`uvrefs uv ...`) load none of the libraries the other commands use (typer and click,
pydantic, rich, filelock): their import alone costs more than the overhead uvrefs allows
itself there (docs/benchmarks.md). Each command runs as users run it, and the modules it
loaded are read from the interpreter's own import log (`-X importtime`), which also
counts what was imported before uv was exec-ed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import World
from tests.test_uv_previews import project

HEAVY = ("typer", "click", "pydantic", "pydantic_core", "rich", "filelock")
# Not heavy, but a no-op needs none of it: hashlib loads OpenSSL (~3 ms) for a SHA-256
# Python has built in (uvrefs.store.stamps.short_key).
OPENSSL = ("hashlib", "_hashlib")


def loaded(world: World, *args: str | Path, cwd: Path | None = None) -> set[str]:
    """The top-level packages `uvrefs ARGS` imported (it must succeed)."""
    return {name.split(".")[0] for name in modules(world, *args, cwd=cwd)}


def modules(world: World, *args: str | Path, cwd: Path | None = None) -> set[str]:
    """The modules `uvrefs ARGS` imported (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "uvrefs", *map(str, args)],
        cwd=cwd or world.root,
        env=world.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = {
        line.rpartition("|")[2].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "uvrefs.launch" in names, "the import log was not read"
    return names


def heavy(names: set[str]) -> list[str]:
    return sorted(names.intersection(HEAVY + OPENSSL))


def test_a_no_op_install_loads_no_heavy_library(world: World) -> None:
    env = world.venv("venv")
    args = ("-q", "-p", env, *world.offline(), "alpha==1.0")
    world.uvrefs("install", *args)
    assert heavy(loaded(world, "install", *args)) == []
    assert heavy(loaded(world, "pip", "install", *args)) == []


def test_a_no_op_sync_loads_no_heavy_library(world: World) -> None:
    proj = project(world, "proj", "alpha==1.0")
    args = ("sync", "-q", "-p", sys.executable, *world.offline())
    world.uvrefs(*args, cwd=proj)
    names = loaded(world, *args, cwd=proj)
    assert heavy(names) == []
    assert "tomllib" not in names  # ~9 ms; a project that is no workspace is not parsed


def test_a_recording_loads_no_library_it_can_do_without(world: World) -> None:
    """Recording a fresh install in the foreground (scripts, CI) is paid after every such
    install, mostly in imports: the store's lock is a flock taken without filelock, times
    and host names need no datetime or socket, store names no hashlib, and what it needs
    of the collector's roots lives in `gc.registry`. Its records are built without
    `dataclasses` (which loads `inspect`, `ast`, `dis` and `tokenize`, ~10 ms) or `typing`
    (~4 ms): `uvrefs.tuples` gives `NamedTuple` without it."""
    env = world.venv("venv")
    names = modules(world, "install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    assert list(world.state.glob("caches/*/refs/*.refs")), "nothing was recorded"
    top = {name.split(".")[0] for name in names}
    assert heavy(top) == []
    assert top.isdisjoint({"datetime", "socket", "tomllib", "dataclasses", "typing", "inspect"})
    assert "uvrefs.gc.roots" not in names


@pytest.mark.parametrize("args", [("uv", "--version"), ("uv", "cache", "dir")])
def test_the_alias_forwards_without_heavy_libraries(world: World, args: tuple[str, ...]) -> None:
    assert heavy(loaded(world, *args)) == []


def test_the_budget_test_sees_a_heavy_library(world: World) -> None:
    """The check above can fail: a command that needs typer is seen loading it."""
    world.venv("venv")  # makes the cache
    assert "typer" in heavy(loaded(world, "status"))


@pytest.mark.parametrize("args", [("status",), ("collect", "--dry-run"), ("hosts",), ("--help",)])
def test_commands_that_need_no_model_load_no_pydantic(world: World, args: tuple[str, ...]) -> None:
    """typer builds a pydantic TypeAdapter for each parameter unless uvrefs gives it a
    converter of its own (`cli._plain_params`: str, bool, list[str]); a store written in
    the current format is read without the models."""
    env = world.venv("venv")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    names = loaded(world, *args)
    assert "typer" in names and not names.intersection({"pydantic", "pydantic_core"})


def test_status_into_a_pipe_loads_no_rich(world: World) -> None:
    """rich draws status's table on a terminal only; its plain lines need no rich (~25 ms),
    so it is not loaded unless rich would take the output for a terminal."""
    env = world.venv("venv")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        world.env.pop(name, None)
    assert "rich" not in loaded(world, "status")
    world.env["FORCE_COLOR"] = "1"  # rich's rule: a terminal, whatever stdout is
    assert "rich" in loaded(world, "status")
