"""Tier 2: the CLI in-process (typer's CliRunner) and the small parsers under it."""

from __future__ import annotations

import json
import sys
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
    ]
    assert doc["format"] == 1 and doc["freed"] == [] and doc["dry_run"] is False


def test_help_lists_the_contract_commands() -> None:
    result = runner.invoke(app, ["--help"])
    for command in ("install", "sync", "pip", "collect"):
        assert command in result.stdout


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

    from uvrefs.stamps import default_state_dir

    if sys.platform != "linux":
        pytest.skip("the hand-computed rule is Linux-only")
    monkeypatch.delenv("UVREFS_DIR", raising=False)
    for xdg in (None, str(tmp_path / "xdg")):
        if xdg is None:
            monkeypatch.delenv("XDG_STATE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_STATE_HOME", xdg)
        assert default_state_dir() == platformdirs.user_state_dir("uvrefs", appauthor=False)


def test_fast_collect_options_are_the_typer_commands() -> None:
    """`uvrefs.fastcli` parses collect without typer; its table must be the typer
    command's options, each taking a value exactly when typer's does."""
    import typer.main

    from uvrefs.fastcli import COLLECT_OPTIONS

    command = typer.main.get_command(app).commands["collect"]  # type: ignore[attr-defined]
    typer_options = {
        opt: (param.name, not param.is_flag) for param in command.params for opt in param.opts
    }
    assert typer_options == COLLECT_OPTIONS


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--dry-run", "--json"],
        ["-n", "--keep", "numpy", "--keep=torch", "--min-age", "7d"],
        ["--max-freed=2G", "--untracked", "--budget", "10G", "--no-wait", "--log", "x.log"],
    ],
)
def test_fast_collect_calls_what_typer_calls(
    args: list[str], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uvrefs import fastcli, launch

    calls: list[dict[str, object]] = []

    def fake(**kw: object) -> int:
        calls.append({k: list(v) if k == "keep" else v for k, v in kw.items()})  # type: ignore[call-overload]
        return 0

    monkeypatch.setattr(fastcli, "run_collect", fake)
    with pytest.raises(SystemExit):
        launch.main(["collect", *args])
    runner.invoke(app, ["collect", *args])
    defaults = {
        "dry_run": False,
        "as_json": False,
        "min_age": None,
        "max_freed": None,
        "keep": [],
        "untracked": False,
        "budget": None,
        "log": None,
        "no_wait": False,
    }
    assert len(calls) == 2 and {**defaults, **calls[0]} == calls[1]


@pytest.mark.parametrize("args", [["--help"], ["--dry"], ["--min-age"], ["-n=1"], ["--json=1"]])
def test_fast_collect_leaves_the_unknown_to_typer(args: list[str]) -> None:
    from uvrefs.fastcli import parse_collect

    assert parse_collect(args) is None
