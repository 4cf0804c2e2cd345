"""Tier 2: the CLI in-process (typer's CliRunner) and the small parsers under it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from uvrefs import uv
from uvrefs.cache import Cache
from uvrefs.cli import app
from uvrefs.errors import CacheRefused
from uvrefs.targets import workspace_root

runner = CliRunner()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("UVREFS_DIR", str(tmp_path / "state"))
    (tmp_path / "cache/archive-v0").mkdir(parents=True)
    (tmp_path / "cache/CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55")
    return tmp_path


def test_collect_json_contract(isolated: Path) -> None:
    """Other tools read these keys: changing them is a breaking change (docs/cli.md)."""
    result = runner.invoke(app, ["collect", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == [
        "format",
        "cache",
        "dry_run",
        "freed",
        "kept",
        "untracked",
        "live_untracked",
        "bytes_freed",
        "content_blobs",
        "project_envs",
        "errors",
        "unreadable_refs",
        "warnings",
        "lock_held_seconds",
        "deleting_seconds",
        "note",
        "bytes_upper_bound",
    ]
    assert doc["format"] == 1 and doc["freed"] == [] and doc["dry_run"] is False


CONTRACT = {
    (): {"install", "sync", "pip", "uv", "collect", "status", "envs", "why", "adopt"}
    | {"doctor", "watch", "schedule", "shell-init", "hosts"},
    ("pip",): {"install", "sync", "uninstall"},
    ("schedule",): {"install", "remove", "status"},
    ("watch",): {"add", "remove", "list"},
    ("hosts",): {"forget"},
}


def listed_commands(help_text: str) -> set[str]:
    """The command names in the `Commands:` section of a help text (the first word of
    each entry), not words that only appear in descriptions."""
    section = help_text.partition("\nCommands:\n")[2]
    names = set()
    for line in section.splitlines():
        if not line.startswith("  "):
            break
        if not line.startswith("   "):  # a wrapped description is indented further
            names.add(line.split()[0])
    return names


@pytest.mark.parametrize("group", list(CONTRACT))
def test_help_lists_the_contract_commands(group: tuple[str, ...]) -> None:
    """Every documented command is listed in its group's help. (It checked that the word
    appeared anywhere: `install` and `sync` also appear in `pip`'s description.)"""
    result = runner.invoke(app, [*group, "--help"])
    assert result.exit_code == 0, result.output
    assert CONTRACT[group] <= listed_commands(result.stdout), result.stdout
    if not group:  # the check itself: a command missing from the help is seen missing
        without = "\n".join(
            ln for ln in result.stdout.splitlines() if not ln.startswith("  install ")
        )
        assert "install" in without and "install" not in listed_commands(without)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--python", "a", "-p", "b"], "b"),
        (["--python=x"], "x"),
        (["-p3.11"], "3.11"),
        (["-p=3.12"], "3.12"),
        (["pkg", "--", "--python", "x"], None),
        (["--pythonic", "x"], None),
    ],
)
def test_option_value(args: list[str], expected: str | None) -> None:
    assert uv.option_value(args, "--python", "-p") == expected


def test_workspace_root_lifts_members_but_not_excluded(tmp_path: Path) -> None:
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "x").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.uv.workspace]\nmembers = ["a/*"]\nexclude = ["x"]\n'
    )
    (tmp_path / "a/b/pyproject.toml").write_text('[project]\nname = "b"\n')
    (tmp_path / "x/pyproject.toml").write_text('[project]\nname = "x"\n')
    assert workspace_root(str(tmp_path / "a/b")) == str(tmp_path)
    assert workspace_root(str(tmp_path / "x")) == str(tmp_path / "x")


@pytest.mark.parametrize(
    "table",
    [
        '[tool.uv.workspace]\nmembers = ["a/*"]\n',
        'tool.uv.workspace.members = ["a/*"]\n',
        '[tool.uv."workspace"]\nmembers = ["a/*"]\n',
        '[tool.uv."work\\u0073pace"]\nmembers = ["a/*"]\n',  # found without the word
        '[tool.uv."work\\U00000073pace"]\nmembers = ["a/*"]\n',
    ],
)
def test_workspace_root_reads_every_spelling_of_the_table(tmp_path: Path, table: str) -> None:
    """A pyproject.toml that never spells `workspace` is not parsed (tomllib costs a sync
    ~9 ms to import), so every other spelling of the key must still be found."""
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text(table)
    (tmp_path / "a/b/pyproject.toml").write_text('[project]\nname = "b"\n')
    assert workspace_root(str(tmp_path / "a/b")) == str(tmp_path)


@pytest.mark.parametrize(
    "text",
    ['tool = "workspace"\n', '[tool]\nuv = ["workspace"]\n', "[tool.uv]\nworkspace = 1\n"],
)
def test_a_pyproject_whose_tables_are_not_tables_holds_no_workspace(
    tmp_path: Path, text: str
) -> None:
    """`tool` or `tool.uv` that is not a table (a user's typo) means no workspace, never a
    traceback from the wrapper in front of `uv sync`."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a/pyproject.toml").write_text('[project]\nname = "a"\n')
    (tmp_path / "pyproject.toml").write_text(text)
    assert workspace_root(str(tmp_path / "a")) == str(tmp_path / "a")


def test_cache_refuses_home_root_and_non_caches(isolated: Path) -> None:
    for bad in (isolated / "home", Path("/"), isolated):
        with pytest.raises(CacheRefused):
            Cache.open(bad)
    cache = Cache.open(isolated / "cache")
    assert cache.contains(cache.root / "archive-v0/x")
    assert not cache.contains(cache.root / "../state")
    assert not cache.contains(cache.root)
    assert cache.archive_path("../../etc") is None


def test_linux_state_dir_matches_platformdirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The hot path computes the XDG state dir itself; it must agree with platformdirs."""
    import platformdirs

    from uvrefs.store.stamps import default_state_dir

    if sys.platform != "linux":
        pytest.skip("the hand-computed rule is Linux-only")
    monkeypatch.delenv("UVREFS_DIR", raising=False)
    for xdg in (None, str(tmp_path / "xdg")):
        if xdg is None:
            monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_STATE_HOME", xdg)
        assert default_state_dir() == platformdirs.user_state_dir("uvrefs", appauthor=False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["status", "--json", "--cache-dir", "C", "-v"],
            ["--cache-dir", "C", "-v", "status", "--json"],
        ),
        (
            ["--state-dir=S", "collect", "--cache-dir=C", "-n"],
            ["--state-dir=S", "--cache-dir=C", "collect", "-n"],
        ),
        (["schedule", "status", "--state-dir", "S"], ["--state-dir", "S", "schedule", "status"]),
        (["why", "--", "-v"], ["why", "--", "-v"]),
        # a tracked command's arguments are uv's, verbatim
        (
            ["install", "--cache-dir", "C", "-v", "pkg"],
            ["install", "--cache-dir", "C", "-v", "pkg"],
        ),
        (
            ["-v", "pip", "sync", "--cache-dir=C", "r.txt"],
            ["-v", "pip", "sync", "--cache-dir=C", "r.txt"],
        ),
        (["uv", "--cache-dir", "C", "sync"], ["uv", "--cache-dir", "C", "sync"]),
        (["sync", "-v"], ["sync", "-v"]),
    ],
)
def test_global_options_after_the_subcommand_move_before_it(
    args: list[str], expected: list[str]
) -> None:
    from uvrefs.launch import hoist_global_options

    assert hoist_global_options(args) == expected


def _command_paths(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    commands = getattr(group, "commands", {})
    paths = []
    for name, command in commands.items():
        paths += (
            _command_paths(command, (*prefix, name))
            if hasattr(command, "commands")
            else [(*prefix, name)]
        )
    return paths


TRACKED = {
    ("install",),
    ("sync",),
    ("uv",),
    ("pip", "install"),
    ("pip", "sync"),
    ("pip", "uninstall"),
}


@pytest.fixture
def restored_environ() -> Iterator[None]:
    """uvrefs's own options become environment variables of this process (launch and
    the typer callback set them): the environment as it was, afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_every_command_takes_the_global_options_after_it(
    isolated: Path, capsys: pytest.CaptureFixture[str], restored_environ: None
) -> None:
    """uv takes its global options anywhere, and users write `uvrefs status --cache-dir X`
    ("No such option"): every command but the tracked ones (whose arguments are uv's)
    takes `--cache-dir`, `--state-dir` and `-v` after it too, on both parsers."""
    import typer.main

    from uvrefs import launch

    paths = set(_command_paths(typer.main.get_command(app)))
    assert TRACKED < paths and ("status",) in paths and ("schedule", "status") in paths
    for path in sorted(paths - TRACKED):
        args = [*path, "--cache-dir", str(isolated / "cache"), "--state-dir", "S", "-v", "--help"]
        done = runner.invoke(app, args)
        assert done.exit_code == 0 and f"Usage: root {' '.join(path)}" in done.stdout, (
            path,
            done.output,
        )
        with pytest.raises(SystemExit) as exited:
            launch.main(args)
        out = capsys.readouterr().out
        assert exited.value.code == 0 and f"Usage: uvrefs {' '.join(path)}" in out, (path, out)


def test_global_options_after_the_subcommand_take_effect(
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored_environ: None,
) -> None:
    """The cache and the store named after the subcommand are the ones used, on the fast
    path (`collect`), through typer (`status`), and in-process with typer alone."""
    from uvrefs import launch

    cache, state = isolated / "cache", isolated / "elsewhere-state"
    monkeypatch.setenv("UV_CACHE_DIR", str(isolated / "not-a-cache"))
    monkeypatch.setenv("UVREFS_DIR", str(isolated / "state"))
    where = ["--cache-dir", str(cache), "--state-dir", str(state)]
    for args in (["collect", "--dry-run", "--json", *where], ["status", "--json", *where]):
        with pytest.raises(SystemExit) as exited:
            launch.main(args)
        out = capsys.readouterr().out
        assert exited.value.code == 0 and json.loads(out)["cache"] == str(cache), out
        monkeypatch.setenv("UV_CACHE_DIR", str(isolated / "not-a-cache"))
        done = runner.invoke(app, args)
        assert done.exit_code == 0 and json.loads(done.stdout)["cache"] == str(cache), done.output
        monkeypatch.setenv("UV_CACHE_DIR", str(isolated / "not-a-cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    assert (
        runner.invoke(app, ["watch", "add", str(isolated), "--state-dir", str(state)]).exit_code
        == 0
    )
    monkeypatch.setenv("UVREFS_DIR", str(isolated / "state"))  # in-process: set again
    assert runner.invoke(app, ["watch", "list"]).stdout == ""
    assert (
        runner.invoke(app, ["watch", "list", "-v", "--state-dir", str(state)]).stdout
        == f"{isolated}\twatched (4 levels deep)\n"
    )
    os.environ.pop("UVREFS_VERBOSE")
    done = runner.invoke(app, ["status", "--cache-dir"])
    assert done.exit_code == 2 and done.stderr == "uvrefs: error: --cache-dir needs a directory\n"
