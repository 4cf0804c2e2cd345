"""`uvrefs uv ARGS`: every uv command, recorded after those that change an environment."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from tests.conftest import World
from uvrefs.track import uv_subcommand


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pip", "install", "x"], "pip install"),
        (["--cache-dir", "/c", "-q", "sync", "--locked"], "sync"),
        (["--color=never", "tool", "install", "ruff"], "tool install"),
        (["--version"], None),
        (["venv", ".venv"], "venv"),
    ],
)
def test_uv_subcommand(args: list[str], expected: str | None) -> None:
    assert uv_subcommand(args) == expected


def test_pip_and_venv_are_recorded(world: World) -> None:
    world.uvrefs("uv", "venv", "-q", "--python", sys.executable, "env")
    env = world.root / "env"
    world.uvrefs("uv", "pip", "install", "-q", "-p", env, *world.offline(), "alpha==1.0", "beta")
    world.uvrefs("uv", "pip", "uninstall", "-q", "-p", env, "beta")
    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert [d["dist"] for d in out["freed"]] == ["beta"]
    assert world.archives() == world.archive_of("alpha", "1.0")


def test_project_commands_are_recorded(world: World) -> None:
    project = world.root / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.8"\ndependencies = []\n'
        "[tool.uv]\npackage = false\n"
    )
    python = ["--python", sys.executable, *world.offline()]
    world.uvrefs("uv", "add", "-q", *python, "alpha==2.0", "beta", cwd=project)
    world.uvrefs("uv", "remove", "-q", *python, "beta", cwd=project)
    world.uvrefs("uv", "run", "-q", *python, "python", "-c", "import alpha", cwd=project)
    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert [d["dist"] for d in out["freed"]] == ["beta"]
    shutil.rmtree(project / ".venv")
    world.uvrefs("collect")
    assert world.archives() == set()


def test_tool_environments_are_recorded(world: World) -> None:
    tools = {"UV_TOOL_DIR": str(world.root / "tools"), "UV_TOOL_BIN_DIR": str(world.root / "bin")}
    world.uvrefs(
        "uv",
        "tool",
        "install",
        "-q",
        "--python",
        sys.executable,
        *world.offline(),
        "tooly",
        extra_env=tools,
    )
    assert world.archive_of("tooly", "1.0")
    world.uvrefs("collect", extra_env=tools)
    assert world.archive_of("tooly", "1.0")  # the tool env is alive and tracked
    world.uvrefs("uv", "tool", "uninstall", "-q", "tooly", extra_env=tools)
    world.uvrefs("collect", extra_env=tools)
    assert not world.archive_of("tooly", "1.0")


def test_other_commands_pass_through_untouched(world: World) -> None:
    assert world.uvrefs("uv", "--version").stdout == world.uv("--version").stdout
    ours, theirs = (
        world.uvrefs("uv", "nosuchcommand", check=False),
        world.uv("nosuchcommand", check=False),
    )
    assert ours.returncode == theirs.returncode != 0 and ours.stderr == theirs.stderr
    assert world.refs() == []


def test_shell_init(world: World) -> None:
    assert world.uvrefs("shell-init", "bash").stdout.strip() == "alias uv='uvrefs uv'"
    assert "uvrefs uv $argv" in world.uvrefs("shell-init", "fish").stdout
    assert world.uvrefs("shell-init", "tcsh", check=False).returncode == 2
