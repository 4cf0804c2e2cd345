"""Tier 3: real uv on wheels built by the tests, outcomes asserted on disk."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import World

LINK_MODES = ["clone", "hardlink", "copy", "symlink"]


def site_packages(env):
    return next(env.glob("lib/python*/site-packages"))


@pytest.mark.parametrize("mode", LINK_MODES)
def test_collect_frees_exactly_what_a_deleted_env_used(world: World, mode: str) -> None:
    """The issue's scenario in miniature: two envs share beta; the dead one alone used
    alpha 1.0 and plat; collect frees those two and nothing the live env uses.

    clone falls back to hardlink on ext4 (no reflinks), and uvrefs sees it as such."""
    extra = {"UV_LINK_MODE": mode}
    live, dead = world.venv("live"), world.venv("dead")
    world.uvrefs(
        "install", "-q", "-p", live, *world.offline(), "alpha==2.0", "beta", extra_env=extra
    )
    world.uvrefs(
        "install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "beta", "plat", extra_env=extra
    )
    dead_only = world.archive_of("alpha", "1.0") | world.archive_of("plat", "1.0")
    live_entries = world.archive_of("alpha", "2.0") | world.archive_of("beta", "1.0")
    assert len(dead_only) == 2 and len(live_entries) == 2

    shutil.rmtree(dead)
    now: tuple[str, ...] = ()
    if mode == "symlink":  # a symlink-mode env gone from its path may have moved, links and all
        waits = world.uvrefs("collect", extra_env=extra).stdout
        assert "freed 0 entries" in waits and "kept until" in waits and "maybe moved" in waits
        assert world.archives() == live_entries | dead_only
        now = ("--min-age", "0")
    out = world.uvrefs("collect", *now, extra_env=extra).stdout

    assert world.archives() == live_entries
    assert "freed 2 entries" in out
    assert not list(world.cache.glob(".uvrefs-trash*"))
    # The live env still works, and reinstalls from the cache with no index at all.
    world.run(live / "bin/python", "-c", "import alpha, beta; assert alpha.__version__ == '2.0'")
    world.uv(
        "pip",
        "install",
        "-q",
        "-p",
        live,
        "--offline",
        "--reinstall",
        *world.offline(),
        "alpha==2.0",
        "beta",
        extra_env=extra,
    )
    world.run(live / "bin/python", "-c", "import alpha, beta")


def filesystem(path) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
    ).stdout.strip()


def test_link_mode_evidence_is_recorded(world: World) -> None:
    # clone needs reflinks (btrfs, xfs, apfs); on ext4 uv >= 0.10 falls back to hardlink
    # (and older releases to copy); either way uvrefs must see which one happened.
    clone = {"hardlink", "content"} if filesystem(world.root).startswith("ext") else {"content"}
    for mode, how in [
        ("symlink", {"symlink"}),
        ("hardlink", {"hardlink"}),
        ("copy", {"content"}),
        ("clone", clone),
    ]:
        env = world.venv(f"env-{mode}")
        world.uvrefs(
            "install", "-q", "-p", env, *world.offline(), "beta", extra_env={"UV_LINK_MODE": mode}
        )
        (entry,) = world.archive_of("beta", "1.0")
        refs = json.loads(next(p for p in world.refs() if p.stem == entry).read_text())
        recorded = {r["how"] for r in refs["referrers"] if r["env"] == str(env)}
        assert len(recorded) == 1 and recorded <= how, (mode, recorded)
    refs = json.loads(next(p for p in world.refs() if p.stem == entry).read_text())
    assert refs["dist"] == "beta" and refs["version"] == "1.0" and refs["tags"] == ["py3-none-any"]
    assert len(refs["referrers"]) == 4


def test_dry_run_changes_nothing(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    shutil.rmtree(env)

    def snapshot():
        """uv's cache, and every file of the refs store but what any run may add to:
        `sizes.json` (archive sizes, derived data) and `holders.json`/`peers.json` (where
        to look for environments and other stores: what any run learns of them is kept,
        so a later `uv cache prune` cannot make a collect forget them; docs/design.md)."""
        cache = {str(p): p.lstat().st_mtime_ns for p in world.cache.rglob("*")}
        state = {
            str(p): p.lstat().st_mtime_ns
            for p in world.state.rglob("*")
            if p.is_file() and p.name not in ("sizes.json", "holders.json", "peers.json")
        }
        return cache | state

    before = snapshot()
    out = json.loads(world.uvrefs("collect", "--dry-run", "--json").stdout)
    assert snapshot() == before
    assert [d["dist"] for d in out["freed"]] == ["alpha"] and out["dry_run"] is True
    assert out["bytes_freed"] > 0
    assert list(world.state.rglob("sizes.json")), "the dry run remembered the archive's size"
    remembered = json.loads(world.uvrefs("collect", "--dry-run", "--json").stdout)
    assert remembered["bytes_freed"] == out["bytes_freed"]
    real = json.loads(world.uvrefs("collect", "--json").stdout)
    assert real["bytes_freed"] == out["bytes_freed"]


def test_local_wheel_installs_again_after_its_entry_was_collected(world: World) -> None:
    """uv fails on a local-path wheel whose pointer outlives its archive: collect must
    remove the pointer group (symlink, .rev, .lock) together with the archive."""
    wheel = next(world.wheels.glob("beta-1.0-*.whl"))
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, wheel)
    assert list(world.cache.glob("wheels-v*/url/*/beta/*"))
    shutil.rmtree(env)
    world.uvrefs("collect")
    assert world.archives() == set()
    assert not list(world.cache.glob("wheels-v*/url/*/beta/*"))
    again = world.venv("again")
    world.uv("pip", "install", "-q", "-p", again, wheel)
    world.run(again / "bin/python", "-c", "import beta")


def test_sdist_revision_and_build_deps_go_with_the_built_wheel(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "gamma")
    assert world.archive_of("gamma", "1.0") and world.archive_of("tinybackend", "1.0")
    revisions = list(world.cache.glob("sdists-v*/*/*/gamma/1.0/*/src"))
    assert len(revisions) == 1
    refs = {json.loads(p.read_text())["dist"]: json.loads(p.read_text()) for p in world.refs()}
    assert refs["tinybackend"]["referrers"][0]["how"] == "build"

    world.uvrefs("collect")
    assert world.archives() != set()  # live: nothing goes
    shutil.rmtree(env)
    world.uvrefs("collect")
    assert world.archives() == set()
    assert not revisions[0].parent.exists()
    again = world.venv("again")
    world.uv("pip", "install", "-q", "-p", again, *world.offline(), "gamma")
    world.run(again / "bin/python", "-c", "import gamma")


def test_upgrade_in_place_frees_the_old_version(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==2.0")
    old, new = world.archive_of("alpha", "1.0"), world.archive_of("alpha", "2.0")
    out = world.uvrefs("collect").stdout
    assert "no longer uses it" in out
    assert world.archives() == new and not (old & world.archives())


def test_env_changed_by_plain_uv_is_rescanned(world: World) -> None:
    """A tracked env upgraded with plain uv: the old entry goes, the new one is adopted
    by the collect and freed once the env is deleted."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    world.uv("pip", "install", "-q", "-p", env, *world.offline(), "alpha==3.0")
    world.uvrefs("collect")
    assert world.archives() == world.archive_of("alpha", "3.0")
    shutil.rmtree(env)
    world.uvrefs("collect")
    assert world.archives() == set()


def test_untracked_envs_keep_their_entries(world: World) -> None:
    """An env made with plain uv beside a tracked one is found (its holder directory is
    watched) and is a root; one out of sight still hard-links what it uses."""
    tracked, beside = world.venv("tracked"), world.venv("beside")
    hidden = world.venv("deep/er/than/watched")
    world.uv("pip", "install", "-q", "-p", beside, *world.offline(), "alpha==3.0")
    world.uv("pip", "install", "-q", "-p", hidden, *world.offline(), "beta")
    world.uvrefs("install", "-q", "-p", tracked, *world.offline(), "beta", "alpha==3.0")
    shutil.rmtree(tracked)
    out = world.uvrefs("collect").stdout
    assert world.archives() == world.archive_of("alpha", "3.0") | world.archive_of("beta", "1.0")
    assert f"used by {beside} (discovered)" in out
    assert "beta 1.0" in out and "hard-linked elsewhere" in out
    world.run(beside / "bin/python", "-c", "import alpha")
    world.run(hidden / "bin/python", "-c", "import beta")


def test_target_and_prefix_installs_are_tracked(world: World) -> None:
    target, prefix = world.root / "target", world.root / "prefix"
    world.uvrefs("install", "-q", "--target", target, *world.offline(), "alpha==1.0")
    world.uvrefs(
        "install", "-q", "-p", sys.executable, "--prefix", prefix, *world.offline(), "alpha==2.0"
    )
    world.uvrefs("collect")
    assert world.archives() == world.archive_of("alpha", "1.0") | world.archive_of("alpha", "2.0")
    shutil.rmtree(target)
    shutil.rmtree(prefix)
    world.uvrefs("collect")
    assert world.archives() == set()


def test_active_and_discovered_venvs_match_uv(world: World) -> None:
    """No --python: uvrefs tracks the env uv chose, from VIRTUAL_ENV or a .venv above."""
    project = world.root / "project"
    (project / "deep/er").mkdir(parents=True)
    world.uv("venv", "-q", "--python", sys.executable, project / ".venv")
    world.uvrefs("install", "-q", *world.offline(), "alpha==1.0", cwd=project / "deep/er")
    other = world.venv("other")
    world.uvrefs(
        "install", "-q", *world.offline(), "alpha==2.0", extra_env={"VIRTUAL_ENV": str(other)}
    )
    envs = {r["env"] for p in world.refs() for r in json.loads(p.read_text())["referrers"]}
    assert envs == {str(project / ".venv"), str(other)}


def test_uvrefs_sync_tracks_the_project_environment(world: World) -> None:
    project = world.root / "proj"
    member = project / "packages/member"
    member.mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.8"\n'
        'dependencies = ["alpha==2.0", "member"]\n'
        '[tool.uv]\npackage = false\n[tool.uv.workspace]\nmembers = ["packages/*"]\n'
        "[tool.uv.sources]\nmember = { workspace = true }\n"
    )
    (member / "pyproject.toml").write_text(
        '[project]\nname = "member"\nversion = "0.1"\nrequires-python = ">=3.8"\n'
        'dependencies = ["beta"]\n'
        '[build-system]\nrequires = ["tinybackend"]\nbuild-backend = "tinybackend"\n'
    )
    (member / "member").mkdir()
    (member / "member/__init__.py").write_text("")
    world.uvrefs("sync", "-q", "--python", sys.executable, *world.offline(), cwd=member)
    envs = {r["env"] for p in world.refs() for r in json.loads(p.read_text())["referrers"]}
    assert envs == {str(project / ".venv")}
    kept = world.archives()
    world.uvrefs("collect")
    assert world.archives() == kept
    shutil.rmtree(project / ".venv")
    world.uvrefs("collect")
    assert not (world.archive_of("alpha", "2.0") | world.archive_of("beta", "1.0"))


def test_unchanged_env_is_not_rerecorded(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    again = world.uvrefs("-v", "install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    assert "unchanged, skipped" in again.stderr


def test_uv_exit_code_and_output_pass_through(world: World) -> None:
    env = world.venv("env")
    done = world.uvrefs("install", "-p", env, *world.offline(), "nosuchpackage", check=False)
    plain = world.uv("pip", "install", "-p", env, *world.offline(), "nosuchpackage", check=False)
    assert done.returncode == plain.returncode != 0
    assert "nosuchpackage" in done.stderr and "Traceback" not in done.stderr


def test_collect_waits_for_uv_and_gives_up_after_uv_lock_timeout(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    shutil.rmtree(env)
    with world.uv_at_work():
        done = world.uvrefs("collect", check=False, extra_env={"UV_LOCK_TIMEOUT": "1"})
    assert done.returncode == 3
    assert "waiting for the lock" in done.stderr and "UV_LOCK_TIMEOUT" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2 and "Traceback" not in done.stderr
    assert world.archive_of("alpha", "1.0")  # nothing deleted without the lock
    world.uvrefs("collect")
    assert not world.archive_of("alpha", "1.0")


def test_reported_bytes_match_uv_cache_size(world: World) -> None:
    """The figure collect reports is what `uv cache size` sees disappear, to the byte."""
    keep, dead = world.venv("keep"), world.venv("dead")
    world.uvrefs("install", "-q", "-p", keep, *world.offline(), "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "big", "beta", "gamma")

    def cache_size() -> int:
        out = world.uv("cache", "size", "--preview-features", "cache-size").stdout
        return int(out.strip().splitlines()[-1])

    shutil.rmtree(dead)
    before = cache_size()
    dry = json.loads(world.uvrefs("collect", "--dry-run", "--json").stdout)
    done = json.loads(world.uvrefs("collect", "--json").stdout)
    assert done["bytes_freed"] == dry["bytes_freed"] == before - cache_size() > 2**20
    assert {d["dist"] for d in done["freed"]} == {"big", "gamma", "tinybackend"}


def test_a_stale_env_record_never_frees_what_the_env_uses(world: World) -> None:
    """Planning believes the record of an env whose fingerprint is unchanged, instead of
    scanning it; the sweep re-scans under the lock every env it relies on. So a record
    that lies can add a candidate to the plan, but never lose a live entry. (Copy mode:
    with hard links, the link count alone would keep the entry.)"""
    env = world.venv("env")
    world.uvrefs("install", "-q", "--link-mode", "copy", "-p", env, *world.offline(), "alpha==1.0")
    # A stamp taken within 2 s of the env's last change vouches for nothing (`settled`):
    # the next collect scans the env and stamps it anew, as a collect long after does.
    time.sleep(2.1)
    world.uvrefs("collect")
    before = world.archives()
    (record,) = world.state.rglob("envs/*.json")
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "entries": []}))
    dry = json.loads(world.uvrefs("collect", "--dry-run", "--json").stdout)
    assert [d["dist"] for d in dry["freed"]] == ["alpha"]  # the record was believed...
    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert out["freed"] == [] and world.archives() == before  # ...but not by the sweep
    assert [d["reason"] for d in out["kept"]] == [f"used by {env}"]
    world.reinstalls_offline(env, "alpha==1.0")


def test_an_env_changed_by_plain_uv_is_scanned_not_trusted(world: World) -> None:
    """uv changing an env outside uvrefs changes its fingerprint, so collect scans it."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    world.uv("pip", "install", "-q", "-p", env, *world.offline(), "alpha==2.0")
    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert [(d["dist"], d["version"]) for d in out["freed"]] == [("alpha", "1.0")]
    world.run(env / "bin/python", "-c", "import alpha")


def test_background_recording_holds_the_lock_until_the_refs_are_written(world: World) -> None:
    """In a terminal, uvrefs returns once uv is done and records in a child that inherits
    uv's cache lock. A collect started at once must wait for that child, then see the new
    env's use, and keep the entry that a deleted env also used."""
    dead, new = world.venv("dead"), world.venv("new")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0")
    shutil.rmtree(dead)
    entry = world.archive_of("alpha", "1.0")
    returned = world.uvrefs_detached(
        "install",
        "-q",
        "--link-mode",
        "copy",
        "-p",
        new,
        *world.offline(),
        "alpha==1.0",
        extra_env={"UVREFS_RECORD": "background", "UVREFS_TEST_RECORD_DELAY": "1.5"},
    )  # copy mode: no hard link keeps the entry, only the lock and the re-check do
    started = time.monotonic() - returned
    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert returned < 1.5, "the install waited for its recorder"
    assert time.monotonic() - started >= 1.5, "collect did not wait for the recorder"
    assert out["freed"] == [] and world.archive_of("alpha", "1.0") == entry
    assert [d["reason"] for d in out["kept"]] == [f"used by {new}"]
    world.reinstalls_offline(new, "alpha==1.0")


def test_recording_stays_in_the_foreground_for_scripts(world: World) -> None:
    """Without a terminal (scripts, CI), the refs are on disk when uvrefs returns."""
    env = world.venv("env")
    world.uvrefs_detached(
        "install",
        "-q",
        "-p",
        env,
        *world.offline(),
        "alpha==1.0",
        extra_env={"UVREFS_TEST_RECORD_DELAY": "5"},
    )
    assert len(world.refs()) == 1  # a background recorder would still be asleep


def test_readers_wait_for_a_background_recorder(world: World) -> None:
    """`why` run right after a background install shows that install: like `envs`,
    `status` and `collect`, it waits for the recorder (a lock in the store it inherits)."""
    env = world.venv("env")
    returned = world.uvrefs_detached(
        "install",
        "-q",
        "-p",
        env,
        *world.offline(),
        "alpha==1.0",
        extra_env={"UVREFS_RECORD": "background", "UVREFS_TEST_RECORD_DELAY": "1.5"},
    )
    started = time.monotonic() - returned
    assert returned < 1.5
    (view,) = json.loads(world.uvrefs("why", "alpha", "--json").stdout)["entries"]
    assert time.monotonic() - started >= 1.5
    assert [r["env"] for r in view["referrers"]] == [str(env)]


@pytest.mark.skipif(not shutil.which("script"), reason="needs script(1) from util-linux")
def test_a_background_recorder_survives_its_terminal_closing(world: World) -> None:
    """`script -qc "uvrefs install ..." /dev/null` is a terminal that closes as soon as the
    command returns (an IDE task, `ssh -t host uvrefs sync`). The recorder forked there
    was killed by the SIGHUP the closing sends when it had not yet left the terminal's
    session (it left it only after its parent exited): 3 of 5 installs went unrecorded."""
    envs = [world.venv(f"env{i}") for i in range(5)]
    for env in envs:
        command = [sys.executable, "-m", "uvrefs", "install", "-q", "-p", str(env)]
        command += [*world.offline(), "alpha==1.0"]
        subprocess.run(
            ["script", "-qc", shlex.join(command), "/dev/null"],
            cwd=world.root,
            env={**world.env, "SHELL": "/bin/sh"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=True,
        )
    (view,) = json.loads(world.uvrefs("why", "alpha", "--json").stdout)["entries"]  # waits
    assert sorted(r["env"] for r in view["referrers"]) == [str(e) for e in envs]


@pytest.mark.parametrize("variable", ["UV_PROJECT", "UV_WORKING_DIR"])
def test_a_project_named_by_uv_environment_variable_is_tracked(world: World, variable: str) -> None:
    """`UV_PROJECT=P uvrefs uv sync` (or `UV_WORKING_DIR`) run from elsewhere syncs P, as
    uv does: its env is recorded, so a dead env's collect keeps what P uses (symlink mode:
    a wrong free would break P's imports). It used to record nothing."""
    world.env["UV_LINK_MODE"] = "symlink"
    proj = world.root / "deep" / "down" / "proj"  # deeper than holders are searched
    proj.mkdir(parents=True)
    (proj / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.8"\n'
        'dependencies = ["alpha==1.0"]\n[tool.uv]\npackage = false\n'
    )
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0")
    elsewhere = world.root / "elsewhere"
    elsewhere.mkdir()
    args = ["uv", "sync", "-q", "-p", sys.executable, *world.offline()]
    world.uvrefs(*args, cwd=elsewhere, extra_env={variable: str(proj)})
    shutil.rmtree(dead)

    world.uvrefs("collect")

    assert world.archive_of("alpha", "1.0")
    world.run(proj / ".venv" / "bin" / "python", "-c", "import alpha")
