"""The command line's own surface: help that reads like help, -V, shell completion,
`uvrefs pip uninstall`, and progress on a long `adopt --discover`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import World
from uvrefs import __version__, report
from uvrefs.cli import app

runner = CliRunner()
# Commands whose --help is uvrefs's own (the tracked ones pass --help on to uv).
OWN_HELP = [
    [],
    ["collect"],
    ["doctor"],
    ["adopt"],
    ["envs"],
    ["status"],
    ["why"],
    ["shell-init"],
    ["pip"],
    ["schedule"],
    ["schedule", "install"],
    ["schedule", "remove"],
    ["schedule", "status"],
    ["watch"],
    ["watch", "add"],
    ["watch", "remove"],
    ["watch", "list"],
]


@pytest.mark.parametrize("command", OWN_HELP, ids=lambda c: " ".join(c) or "uvrefs")
def test_help_shows_metavars_not_python_types(command: list[str]) -> None:
    done = runner.invoke(app, [*command, "--help"])
    assert done.exit_code == 0, done.output
    for python_type in ("<bool>", "<str>", "<int>", "list[str]", "{"):
        assert python_type not in done.output, done.output


def test_help_names_values_and_arguments() -> None:
    collect = runner.invoke(app, ["collect", "--help"]).output
    assert "--min-age DUR" in collect and "--keep PKG" in collect and "-n, --dry-run " in collect
    assert "why [OPTIONS] QUERY\n" in runner.invoke(app, ["why", "--help"]).output
    assert "[PATH]..." in runner.invoke(app, ["adopt", "--help"]).output


def _launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`uvrefs ARGS` through the entry point, saying afterwards whether typer was loaded."""
    code = (
        "import sys\nfrom uvrefs.launch import main\ntry:\n    main(sys.argv[1:])\n"
        "finally:\n    print('typer loaded:', 'typer' in sys.modules, file=sys.stderr)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_without_loading_typer(flag: str) -> None:
    done = _launch(flag)
    assert (done.returncode, done.stdout) == (0, f"uvrefs {__version__}\n")
    assert "typer loaded: False" in done.stderr


def test_the_console_script_says_all_before_it_ends_a_fast_path_command(world: World) -> None:
    """The console script (and `python -m uvrefs`) ends a fast-path command without the
    interpreter's teardown (`launch._exit`, ~1.5 ms of every tracked install): what it
    printed to a pipe, block-buffered, is flushed first, and the exit code is the command's
    (uv's, for a tracked install)."""
    world.env.pop("PYTHONUNBUFFERED", None)  # stdout into a pipe is block-buffered
    done = world.uvrefs("-V")
    assert (done.returncode, done.stdout) == (0, f"uvrefs {__version__}\n")
    env = world.venv("venv")
    failed = world.run(
        sys.executable, "-m", "uvrefs", "install", "-p", env, *world.offline(), "nosuchpkg",
        check=False,
    )  # fmt: skip
    assert failed.returncode == 1 and "nosuchpkg" in failed.stderr


def test_shell_completion(tmp_path: Path) -> None:
    import os

    # typer detects the user's shell from the parent process; a test names it instead
    env = {**os.environ, "HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    complete = {**env, "_UVREFS_COMPLETE": "complete_bash", "COMP_CWORD": "1"}
    done = _launch(env={**complete, "COMP_WORDS": "uvrefs col"})
    assert (done.returncode, done.stdout.split()) == (0, ["collect"])
    done = _launch(env={**complete, "COMP_WORDS": "uvrefs pip un", "COMP_CWORD": "2"})
    assert done.stdout.split() == ["uninstall"]
    shown = _launch("--show-completion", "bash", env=env)
    assert shown.returncode == 0 and "_UVREFS_COMPLETE=complete_bash" in shown.stdout
    installed = _launch("--install-completion", "bash", env=env)
    assert installed.returncode == 0, installed.stderr
    assert "uvrefs" in (tmp_path / ".bashrc").read_text()


def test_pip_uninstall_is_tracked(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("pip", "install", "-q", "-p", env, *world.offline(), "alpha==1.0", "beta")
    done = world.uvrefs("pip", "uninstall", "-q", "-p", env, "beta")
    assert done.stderr == ""
    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert [d["dist"] for d in out["freed"]] == ["beta"]


def test_adopt_discover_reports_progress(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        world.venv(f"projects/{name}/.venv")
    heard: list[tuple[str, int, int]] = []

    class Heard(report.ScanProgress):
        def __call__(self, what: str, done: int, total: int) -> None:
            heard.append((what, done, total))

    monkeypatch.setattr(report, "ScanProgress", Heard)
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    done = runner.invoke(app, ["adopt", "--discover", str(world.root / "projects")])
    assert done.exit_code == 0, done.output
    assert [h for h in heard if h[0] == "finding environments"][-1][1:] == (3, 0)
    adopting: list[Any] = [h[1:] for h in heard if h[0] == "adopting environments"]
    assert adopting == [(0, 3), (1, 3), (2, 3)]
