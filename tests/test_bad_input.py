"""Bad input gets one line saying what to do, a non-zero exit, and nothing lost."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import World


def one_line_error(done) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b'{"format": 1, "entry": "x',
        b"\x00\xff garbage",
        b'{"format": 99, "entry": "E"}',
        b"[]",
    ],
    ids=["empty", "truncated", "binary", "future-format", "wrong-type"],
)
def test_corrupt_refs_keep_their_entry_and_the_rest_goes_on(world: World, garbage: bytes) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0", "beta")
    (victim,) = world.archive_of("alpha", "1.0")
    path = next(p for p in world.refs() if p.stem == victim)
    path.write_bytes(garbage.replace(b'"E"', json.dumps(victim).encode()))
    shutil.rmtree(env)

    done = world.uvrefs("collect", check=False)
    line = one_line_error(done)
    if b"99" in garbage:  # a newer uvrefs's: left as it is, and said so
        assert done.returncode == 1 and "newer uvrefs" in line and "upgrade" in line
    else:
        assert done.returncode == 1 and "unreadable" in line and "fix or delete" in line
    assert world.archives() == {victim}  # beta went, alpha 1.0 is kept (fail closed)
    assert path.read_bytes() == garbage.replace(b'"E"', json.dumps(victim).encode())
    assert f"kept ? {victim}: refs unreadable" in done.stdout


def test_missing_uv(world: World) -> None:
    env = world.venv("env")
    done = world.uvrefs(
        "install",
        "-p",
        env,
        "alpha",
        check=False,
        extra_env={"UVREFS_UV": str(world.root / "no-such-uv")},
    )
    assert "UVREFS_UV" in one_line_error(done) and done.returncode == 127
    done = world.uvrefs(
        "collect",
        check=False,
        extra_env={"UVREFS_UV": "", "PATH": "/nonexistent", "UV_CACHE_DIR": ""},
    )
    assert "uv not found" in one_line_error(done) and done.returncode == 127


@pytest.mark.parametrize("where", ["home", "root", "empty", "missing", "file"])
def test_bad_cache_dir_is_refused(world: World, where: str) -> None:
    (world.root / "empty").mkdir()
    (world.root / "file").write_text("x")
    cache = {
        "home": world.env["HOME"],
        "root": "/",
        "empty": str(world.root / "empty"),
        "missing": str(world.root / "missing"),
        "file": str(world.root / "file"),
    }[where]
    for command in (["collect"], ["collect", "--dry-run"]):
        done = world.uvrefs(*command, check=False, extra_env={"UV_CACHE_DIR": cache})
        line = one_line_error(done)
        assert "UV_CACHE_DIR" in line or "cannot read" in line
    assert (world.root / "file").read_text() == "x"


def test_unwritable_state_dir_warns_but_keeps_uvs_exit_code(world: World) -> None:
    env = world.venv("env")
    blocker = world.root / "blocker"
    blocker.write_text("not a directory")
    done = world.uvrefs(
        "install",
        "-q",
        "-p",
        env,
        *world.offline(),
        "alpha==1.0",
        extra_env={"UVREFS_DIR": str(blocker / "state")},
    )
    assert done.returncode == 0
    assert "not recorded" in one_line_error_text(done) and "UVREFS_DIR" in done.stderr
    world.run(env / "bin/python", "-c", "import alpha")


def one_line_error_text(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_no_cache_runs_are_not_tracked(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "--no-cache", "-p", env, *world.offline(), "alpha==1.0")
    assert world.refs() == []


def test_hostile_refs_names_are_ignored(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    refs_dir = world.refs()[0].parent
    canary = world.root / "canary"
    canary.mkdir()
    (canary / "keep").write_text("x")
    for name in ("...refs", "..%2Fcanary.refs"):
        (refs_dir / name).write_text(
            json.dumps({"format": 1, "entry": "../../canary", "referrers": []})
        )
    # A valid id whose file names another entry (an absolute path), and an entry of another
    # cache (an id this cache does not have): refused, and dropped as stale.
    absolute = {"format": 1, "entry": str(canary), "referrers": []}
    (refs_dir / "Abcdefghijklmnop.refs").write_text(json.dumps(absolute))
    elsewhere = {"format": 1, "entry": "ZZZZZZZZZZZZZZZZ", "referrers": []}
    (refs_dir / "ZZZZZZZZZZZZZZZZ.refs").write_text(json.dumps(elsewhere))
    shutil.rmtree(env)
    done = world.uvrefs("collect", check=False)
    assert (
        done.returncode == 1 and "Abcdefghijklmnop" in done.stderr
    )  # the mismatched file is reported
    assert (canary / "keep").read_text() == "x"
    assert world.archives() == set()
    assert not (refs_dir / "ZZZZZZZZZZZZZZZZ.refs").exists()
