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


# ------------------------------------------------ each warning only when true (issue 13)


@pytest.mark.parametrize(
    "args", [("install", "--help"), ("sync", "-h"), ("uv", "pip", "install", "--help")]
)
def test_help_is_not_an_unrecorded_environment(world: World, args: tuple[str, ...]) -> None:
    done = world.uvrefs(*args)
    assert "Usage" in done.stdout
    assert "uvrefs:" not in done.stderr


def test_script_environments_are_recorded_without_a_warning(world: World) -> None:
    script = world.root / "s.py"
    script.write_text(
        '# /// script\n# requires-python = ">=3.8"\n# dependencies = ["alpha==1.0"]\n# ///\n'
    )
    offline = ["--python", sys.executable, *world.offline()]
    synced = world.uvrefs("uv", "sync", "-q", "--script", script, *offline)
    added = world.uvrefs("uv", "add", "-q", "--script", script, *offline, "beta")
    world.uvrefs("uv", "sync", "-q", "--script", script, *offline)
    assert "warning" not in synced.stderr + added.stderr
    # uv's own answer: the interpreter of the script's env, in its cache
    env = world.uv("python", "find", "--script", script).stdout.strip().rsplit("/bin/", 1)[0]
    assert env.startswith(str(world.cache))
    views = json.loads(world.uvrefs("envs", "--json").stdout)
    recorded = [v for v in views["envs"] if v["path"] == env]
    assert recorded and recorded[0]["entries"] == 2


def test_install_from_inside_a_venv_records_that_venv(world: World) -> None:
    env = world.venv("env")
    done = world.uvrefs("install", "-q", *world.offline(), "alpha==1.0", cwd=env)
    assert done.stderr == ""
    # uv installed into the venv it was run inside (its own discovery), and that is recorded
    site = next(env.glob("lib/python*/site-packages"))
    assert (site / "alpha-1.0.dist-info").is_dir()
    assert world.archive_of("alpha", "1.0") and len(world.refs()) == 1


def test_a_tracked_commands_cache_dir_is_uvs_and_recorded_where_uv_put_it(world: World) -> None:
    """`uvrefs install --cache-dir X` passes `--cache-dir X` to uv, verbatim (the global
    options after a tracked command are uv's), and records in the cache uv used: a
    relative X is relative to `--directory`, as uv reads it (uvrefs looked in ./X, found
    no cache and recorded nothing)."""
    env = world.venv("env")
    sub = world.root / "sub"
    sub.mkdir()
    done = world.uvrefs(
        "install", "-q", "--directory", sub, "--cache-dir", "rel-cache", "-p", env,
        *world.offline(), "alpha==1.0",
    )  # fmt: skip
    assert done.stderr == "", done.stderr
    cache = sub / "rel-cache"
    assert (cache / "CACHEDIR.TAG").is_file() and not (world.root / "rel-cache").exists()
    assert not world.archives()  # not the world's own cache either
    why = world.uvrefs("--cache-dir", cache, "why", "alpha", "--json")
    (view,) = json.loads(why.stdout)["entries"]
    assert [r["env"] for r in view["referrers"]] == [str(env)]
    why = world.uvrefs("why", "alpha", "--json", "--cache-dir", cache)  # after it, too
    assert json.loads(why.stdout)["entries"] == [view]


@pytest.mark.parametrize(
    "command", [["install"], ["pip", "install"], ["pip", "sync"], ["pip", "uninstall"]]
)
def test_a_tracked_command_without_arguments_says_what_it_needs(
    world: World, command: list[str]
) -> None:
    """uv's usage line counts options set from the environment as given, so `uvrefs
    install` alone showed `uv pip install --cache-dir <CACHE_DIR> ...` to a user who never
    typed it (UV_CACHE_DIR). uvrefs says in one line what the command needs."""
    done = world.uvrefs(*command, check=False)
    shown = " ".join(command)
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.startswith(f"uvrefs: error: `uvrefs {shown}` needs "), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "--cache-dir" not in done.stderr, done.stderr
