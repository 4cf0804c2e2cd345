"""Adversarial tests: each tries to make `uvrefs collect` free an entry a living env uses,
touch something outside the cache, hang, or crash with a traceback. 26 of these 34 cases
failed on the first mark-from-roots code; the section "defended from the start" passed
then too (docs/reliability.md lists each).

Envs use uv's symlink link mode wherever a wrong free must show: the env's files are links
into the cache, so a freed entry breaks it. `import pkg` alone is not proof (a package dir
whose `__init__.py` link dangles still imports, as a namespace package), so `works` reads
the package's `__version__`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    World,
    as_nobody,
    freed,
    in_process,
    install,
    registry_of,
    tracked_env_on_unmounted_bind_mount,
)
from tests.conftest import collect_json as collect

SYMLINK = {"UV_LINK_MODE": "symlink"}


def works(world: World, env: Path, module: str, version: str) -> bool:
    """The env still imports `module` for real (not as an empty namespace package)."""
    code = f"import {module}; assert {module}.__version__ == {version!r}"
    return world.run(env / "bin/python", "-c", code, check=False).returncode == 0


def store_dir(world: World) -> Path:
    (store,) = world.state.glob("caches/*")
    return store


# ---------------------------------------------------------------- wrong frees


def test_symlink_mode_env_installed_through_a_symlinked_cache_dir_is_seen(world: World) -> None:
    """`~/.cache` being a symlink to another disk is common. uv then writes the env's
    links with the cache path as given (`…/linkc/cache/archive-v0/<id>/…`), while uvrefs
    compares them with the *resolved* cache root: the tracked, living env is seen using
    nothing, and what it uses is freed (also by `--untracked` when nothing else tracks
    it)."""
    real = world.root / "realc"
    real.mkdir()
    (world.root / "linkc").symlink_to(real)
    via_link = {"UV_CACHE_DIR": str(world.root / "linkc" / "cache")}
    world.env.update(via_link)
    live, dead = world.venv("live"), world.venv("dead")
    install(world, live, "alpha==1.0")
    # Another env, in hardlink mode, made alpha 1.0 tracked; it is deleted.
    install(world, dead, "alpha==1.0", extra_env={"UV_LINK_MODE": "hardlink"})
    shutil.rmtree(dead)
    assert works(world, live, "alpha", "1.0")
    result = collect(world)
    assert "alpha 1.0" not in freed(result), "freed what a living tracked env uses"
    assert works(world, live, "alpha", "1.0")


@pytest.mark.parametrize("hidden", ["dist-info", "python-dir"])
def test_a_part_of_an_env_the_collector_cannot_read_keeps(open_world: World, hidden: str) -> None:
    """docs: an env that "cannot be read (at any level)" is unknown and keeps. Run
    unprivileged, with one directory inside a root-owned env made 0700 (a `sudo uv pip
    install` under umask 077 does this): the installed `alpha-1.0.dist-info`, or
    `lib/python3.X`. The scan takes EACCES there for "not installed" (lstat of METADATA
    fails -> no match; `site_dirs` drops a site dir it cannot stat), so the env is alive
    and uses nothing, and its own referrer says "no longer uses it". (A plain uv install
    since the last record makes collect scan the env rather than trust its record.)"""
    world = open_world
    env = world.venv("shared")
    install(world, env, "alpha==1.0")
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "alpha-1.0.dist-info" if hidden == "dist-info" else site.parent).chmod(0o700)
    install(world, env, "beta", tracked=False)  # changed since its record: scanned again
    done = as_nobody(world, "collect", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "alpha 1.0" not in freed(result), result["freed"][0]["reason"]
    assert works(world, env, "alpha", "1.0")


# ---------------------------------------------------------------- hostile peer stores


def plant_peer(world: World, name: str = "evil") -> Path:
    """A 'refs store' any local user may register in the cache's world-writable registry
    (`<cache>/sdists-vN/.uvrefs-stores/`, mode 1777): a directory with a store.json."""
    peer = world.root / name
    (peer / "refs").mkdir(parents=True)
    (peer / "envs").mkdir()
    (peer / "store.json").write_text(json.dumps({"format": 1, "cache": str(world.cache)}))
    registry = registry_of(world)
    assert registry.is_dir()
    (registry / f"{name}0000000000000000"[:20]).write_text(str(peer))
    return peer


def run_with_timeout(
    world: World, *args: str, timeout: float = 15
) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            [sys.executable, "-m", "uvrefs", *args],
            check=False,
            cwd=world.root,
            env=world.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("fifo", ["refs/AAAAAAAAAAAAAAAA.refs", "envs/0123456789abcdef0123.json"])
def test_a_fifo_in_a_registered_peer_store_does_not_hang_collect(world: World, fifo: str) -> None:
    """The registry file itself is read carefully (regular file, O_NONBLOCK, 4 KiB), but
    the peer store it names is then read with plain `open().read()`: a FIFO planted as a
    refs file or an env record blocks every collect (and status, why, envs) forever."""
    env = world.venv("env")
    install(world, env, "alpha==1.0")
    peer = plant_peer(world)
    os.mkfifo(peer / fifo)
    done = run_with_timeout(world, "collect", timeout=4)
    assert done is not None, "`uvrefs collect` hung on a FIFO in a peer store"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("where", ["own-refs", "own-env-record", "peer-refs"])
def test_deeply_nested_json_is_a_one_line_error(world: World, where: str) -> None:
    """`json.loads` raises RecursionError (not ValueError) on deeply nested input; the
    readers catch ValueError/OSError only, so a corrupt file of this kind is a traceback
    instead of "refs unreadable, kept"."""
    env = world.venv("env")
    install(world, env, "alpha==1.0")
    nested = "[" * 100_000
    if where == "own-refs":
        next(store_dir(world).glob("refs/*.refs")).write_text(nested)
    elif where == "own-env-record":
        next(store_dir(world).glob("envs/*.json")).write_text(nested)
    else:
        (plant_peer(world) / "refs" / "AAAAAAAAAAAAAAAA.refs").write_text(nested)
    done = world.uvrefs("collect", check=False)
    assert "Traceback" not in done.stderr, done.stderr[-300:]
    assert len(done.stderr.strip().splitlines()) <= 1, done.stderr
    assert works(world, env, "alpha", "1.0")


# ---------------------------------------------------------------- races


def in_process_collect(world: World, monkeypatch: pytest.MonkeyPatch, before_sweep) -> object:  # type: ignore[no-untyped-def]
    """`collect` in this process, running `before_sweep()` between planning and the sweep
    (where a real collect spends its planning time, uv's lock not yet taken). It waits no
    grace period (as `collect_json`): what it keeps, it keeps for being live."""
    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import Policy

    cache, store = in_process(world, monkeypatch)
    real_sweep = core.sweep

    def sweep(*args, **kw):  # type: ignore[no-untyped-def]
        before_sweep()
        return real_sweep(*args, **kw)

    monkeypatch.setattr(core, "sweep", sweep)
    return core.collect(cache, store, dry_run=False, timeout=10, policy=Policy(grace=0.0))


@pytest.mark.parametrize("store", ["ours", "new"])
def test_an_env_recorded_in_a_new_store_after_planning_is_a_root(
    world: World, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """docs/design.md, sweep step 3: "records written since planning in any store ... are
    new roots". Another user's first tracked install (a store that did not exist at
    planning) links alpha 1.0, a candidate, while the collector plans. The sweep re-reads
    records only from the stores it knew at planning (and never the registry again), so it
    frees what that recorded, living env now uses. (`ours`, the same install recorded in
    the collector's own store, is defended.)"""
    dead = world.venv("dead")
    install(world, dead, "alpha==1.0")
    shutil.rmtree(dead)
    newcomer = world.root / "elsewhere" / "newcomer"
    other = {"UVREFS_DIR": str(world.root / "state-of-another-user")} if store == "new" else {}

    def install_meanwhile() -> None:
        world.venv("elsewhere/newcomer")
        install(world, newcomer, "alpha==1.0", extra_env=other)

    result = in_process_collect(world, monkeypatch, install_meanwhile)
    assert "alpha" not in {d.dist for d in result.freed}, "freed what a recorded env uses"  # type: ignore[attr-defined]
    assert works(world, newcomer, "alpha", "1.0")


# ---------------------------------------------------------------- lying records


def test_a_peer_store_record_cannot_hide_what_a_living_env_uses(world: World) -> None:
    """A peer store's envs are meant to add roots, never to lose one. Any local user can
    register a store; in it, a record for *someone else's* living env (found here by
    discovery, no record of ours) saying it uses nothing, with a stamp equal to the env's
    fingerprint (site dir mtime and dist-info names, world-readable). `Roots.add` lets a
    record replace a record-less root, `scan_or_reuse` then trusts the peer's stamp, and
    the sweep re-scans reused roots only if they are referrers of a candidate: the env's
    packages are freed. (`uvrefs why` scans, so it says "live" for what collect frees.)"""
    from uvrefs.store.refs import host_id
    from uvrefs.store.stamps import env_key
    from uvrefs.targets import Target, fingerprint

    dead = world.venv("dead")
    install(world, dead, "alpha==1.0")
    shutil.rmtree(dead)
    victim = world.venv("victim")  # plain uv, beside the tracked env: a discovered root
    install(world, victim, "alpha==1.0", tracked=False)
    assert "used by" in world.uvrefs("why", "alpha").stdout
    peer = plant_peer(world)
    real = os.path.realpath(victim)
    record = {
        "format": 1,
        "path": real,
        "host": host_id(),
        "site_dirs": [],
        "mount": None,
        "command": "install",
        "recorded_at": "2026-01-01T00:00:00Z",
        "entries": [],
    }
    (peer / "envs" / f"{env_key(real)}.json").write_text(json.dumps(record))
    (peer / "envs" / f"{env_key(real)}.stamp").write_text(fingerprint(Target(real)))
    result = collect(world)
    assert "alpha 1.0" not in freed(result), "a peer's record hid a living env's use"
    assert works(world, victim, "alpha", "1.0")


# ---------------------------------------------------------------- outside the cache


def test_registering_the_store_never_chmods_outside_the_cache(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`register_store` does `registry.mkdir(); os.chmod(registry, 0o1777)` by path, and
    checks for a link only afterwards. Whoever can write the cache root (a shared cache)
    swaps the new `.uvrefs-stores` for a link between the two calls, and the collector
    makes the link's target world-writable. (Every record re-creates a registry someone
    deleted.)"""
    import pathlib

    env = world.venv("env")
    install(world, env, "alpha==1.0")
    shutil.rmtree(registry_of(world))
    outside = world.root / "outside"
    outside.mkdir(mode=0o755)
    outside.chmod(0o755)
    real_mkdir = pathlib.Path.mkdir

    def mkdir_then_swap(self: pathlib.Path, *args, **kw) -> None:  # type: ignore[no-untyped-def]
        real_mkdir(self, *args, **kw)
        if self.name == ".uvrefs-stores":  # the attacker wins the race
            self.rename(self.with_name("stolen"))
            self.symlink_to(outside)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir_then_swap)
    in_process_collect(world, monkeypatch, lambda: None)
    assert oct(outside.stat().st_mode & 0o7777) == "0o755", "chmod followed a link out"


# ---------------------------------------------------------------- renamed projects


@pytest.mark.parametrize("name", [".venv", "venv"])
def test_a_renamed_project_is_followed_whatever_its_env_is_called(world: World, name: str) -> None:
    """README: "The directories holding tracked environments are watched by default (so a
    renamed project is found again)". Only an env named `.venv` is held by the directory
    holding the project; `proj/venv` (the name `python -m venv venv` tutorials use) is
    held by `proj` itself, which the rename removes: the env is judged gone and what it
    uses is freed. (`.venv` is defended.)"""
    projects = world.root / "src"
    env = world.venv(f"src/proj/{name}")
    (projects / "proj" / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    install(world, env, "alpha==1.0")
    (projects / "proj").rename(projects / "renamed")
    moved = projects / "renamed" / name
    assert works(world, moved, "alpha", "1.0")
    result = collect(world)
    assert "alpha 1.0" not in freed(result), result["freed"][0]["reason"]
    assert works(world, moved, "alpha", "1.0")


# ---------------------------------------------------------------- odd characters


@pytest.mark.parametrize("tool_dir", ["tools", "tools::1", "tools::x"])
def test_tool_envs_under_a_tool_dir_with_double_colons(world: World, tool_dir: str) -> None:
    """Tool envs are roots (`UV_TOOL_DIR`). `discover` reads a trailing `::N` in each
    directory as a depth; watched dirs always get one appended, but the tool dir is passed
    bare: `tools::1` is read as `tools`, depth 1 (the tool envs are missed and what they
    use is freed), `tools::x` makes collect crash on `int("x")`. (`tools` is defended.)"""
    dead = world.venv("dead")
    install(world, dead, "tooly")
    shutil.rmtree(dead)
    tools = {
        "UV_TOOL_DIR": str(world.root / "data" / "uv" / tool_dir),  # deeper than holders
        "UV_TOOL_BIN_DIR": str(world.root / "bin"),
    }
    world.env.update(tools)
    world.uv(
        "tool",
        "install",
        "-q",
        "--python",
        sys.executable,
        *world.offline(),
        "tooly",
        extra_env=SYMLINK,
    )
    tool_python = Path(tools["UV_TOOL_DIR"]) / "tooly" / "bin" / "python"
    assert world.run(tool_python, "-c", "import tooly; tooly.main()").stdout == "tooly\n"
    done = world.uvrefs("collect", "--json", check=False)
    assert "Traceback" not in done.stderr, done.stderr.strip().splitlines()[-1]
    assert "tooly 1.0" not in freed(json.loads(done.stdout))
    assert world.run(tool_python, "-c", "import tooly; tooly.main()").stdout == "tooly\n"


def test_an_env_under_a_watched_dir_the_collector_cannot_read_keeps(open_world: World) -> None:
    """docs: every `pyvenv.cfg` under the watched directories is a root, and a root that
    cannot be read is unknown and keeps. Discovery (`_walk_for_venvs`) skips a directory
    it cannot list (`except OSError: continue`), so an unreadable env beside a tracked
    one is no root at all and an entry it shares with a deleted tracked env is freed."""
    world = open_world
    tracked, dead = world.venv("tracked"), world.venv("dead")
    install(world, tracked, "beta")
    install(world, dead, "alpha==1.0")
    shutil.rmtree(dead)
    private = world.venv("private")  # plain uv, another user's: found by discovery only
    install(world, private, "alpha==1.0", tracked=False)
    private.chmod(0o700)
    done = as_nobody(world, "collect", "--json")
    # Said, with exit 1: nothing can be freed while a watched directory cannot be listed.
    assert done.returncode == 1 and "nothing can be freed" in done.stderr, done.stderr
    assert "alpha 1.0" not in freed(json.loads(done.stdout))
    assert works(world, private, "alpha", "1.0")


def test_an_env_recorded_with_a_relative_path_is_not_judged_from_the_cwd(world: World) -> None:
    """The formats accept any string as an env path. A record and referrer naming `live`
    (relative; say written by a script, or by hand after moving the store) are judged
    against the collector's working directory: from anywhere else the living env is
    "gone" and its entries are freed. Either refuse such a record (refs unreadable:
    kept) or never call it gone."""
    env = world.venv("live")
    install(world, env, "alpha==1.0")
    (alpha,) = world.archive_of("alpha", "1.0")
    store = store_dir(world)
    refs = store / "refs" / f"{alpha}.refs"
    doc = json.loads(refs.read_text())
    doc["referrers"][0]["env"] = "live"
    refs.write_text(json.dumps(doc))
    for record in store.glob("envs/*.json"):
        data = json.loads(record.read_text())
        record.unlink()
        data["path"] = "live"
        (store / "envs" / "relative.json").write_text(json.dumps(data))
    elsewhere = world.root / "cron-cwd"
    elsewhere.mkdir()
    done = world.uvrefs("collect", "--json", check=False, cwd=elsewhere)
    assert "alpha 1.0" not in freed(json.loads(done.stdout))
    assert works(world, env, "alpha", "1.0")


# ---------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    "option", [["--max-freed", "inf"], ["--budget", "1e999"], ["--min-age", "nand"]]
)
def test_non_finite_policy_values_are_one_line_errors(world: World, option: list[str]) -> None:
    """`parse_size` does `int(float(x) * unit)`: `inf`/`1e999` raise OverflowError, which
    is not caught (a traceback). `parse_duration` accepts `nan`: `dead_for < nan` is
    False, so `--min-age nand` holds nothing back and frees an entry dead for 0 s."""
    dead = world.venv("dead")
    install(world, dead, "alpha==1.0")
    shutil.rmtree(dead)
    done = world.uvrefs("collect", *option, check=False)
    assert "Traceback" not in done.stderr, done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stdout
    assert world.archive_of("alpha", "1.0"), "freed under a --min-age it could not parse"


def test_registering_the_store_never_writes_through_a_planted_link(
    open_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is world-writable (1777) by design, and `register_store` writes its
    file with `write_atomic`: `open(f"{name}.{pid}.tmp", "w")`, which follows links. An
    unprivileged user plants that name (the pid is guessable; here the test's own) as a
    link to a file of the collector's user: the collector truncates and overwrites it.
    (Linux's fs.protected_symlinks=1 would stop this in a root-owned sticky dir; it is 0
    here, and macOS, which the README supports, has no such protection.)"""
    from uvrefs.store.registry import registry_name

    world = open_world
    env = world.venv("env")
    install(world, env, "alpha==1.0")
    registry = registry_of(world)
    shutil.rmtree(registry)
    registry.mkdir()
    registry.chmod(0o1777)  # as register_store leaves it
    victim = world.root / "victim-home" / ".bashrc"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    before = (victim.read_bytes(), victim.stat().st_mtime_ns)
    store = store_dir(world)
    planted = registry / f"{registry_name(store)}.{os.getpid()}.tmp"
    world.run(
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "ln",
        "-s",
        str(victim),
        str(planted),
    )
    in_process_collect(world, monkeypatch, lambda: None)
    assert (victim.read_bytes(), victim.stat().st_mtime_ns) == before, victim.read_text()


# ---------------------------------------------------------------- defended from the start


# A symlink-mode env gone from its path may have moved out of sight (its links into the
# cache intact): what only it used waits a grace period by default. These tests delete
# envs and check that exactly their entries go, so they ask for no wait.
NOW = ("--min-age", "0")


def live_and_dead(world: World) -> tuple[Path, set[str]]:
    """A live env (alpha 2.0, beta) and a deleted one (alpha 1.0, plat), symlink mode."""
    live, dead = world.venv("live"), world.venv("dead")
    install(world, live, "alpha==2.0", "beta")
    install(world, dead, "alpha==1.0", "plat")
    shutil.rmtree(dead)
    return live, world.archive_of("alpha", "1.0") | world.archive_of("plat", "1.0")


def test_defended_two_collectors_at_once(world: World) -> None:
    live, doomed = live_and_dead(world)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "uvrefs", "collect", *NOW],
            cwd=world.root,
            env=world.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err, err
    assert not doomed & world.archives() and world.dangling_pointers() == []
    assert not list(world.cache.glob(".uvrefs-trash*"))
    assert works(world, live, "alpha", "2.0")


def test_defended_killed_after_the_rename_then_uv_then_collect(world: World) -> None:
    """Killed with the archive in its trash and its refs still there; uv installs the
    same wheel again (a new archive); the next collect empties the trash, keeps the new
    archive and drops the stale refs."""
    live = world.venv("live")
    install(world, live, "beta")
    dead = world.venv("dead")
    install(world, dead, "alpha==1.0")
    shutil.rmtree(dead)
    (old,) = world.archive_of("alpha", "1.0")
    # steps: 4 sidecars, the link, the archive rename; the 7th is after uv's lock is released
    done = world.uvrefs("collect", *NOW, check=False, extra_env={"UVREFS_TEST_KILL_AT": "7"})
    assert done.returncode == -9
    assert old not in world.archives() and list(world.cache.glob(".uvrefs-trash-*"))
    again = world.venv("again")
    install(world, again, "alpha==1.0")
    (new,) = world.archive_of("alpha", "1.0")
    assert new != old
    result = collect(world)
    assert freed(result) == set() and not list(world.cache.glob(".uvrefs-trash*"))
    assert not (store_dir(world) / "refs" / f"{old}.refs").exists()
    assert works(world, again, "alpha", "1.0") and works(world, live, "beta", "1.0")


def test_defended_hostile_registry_files(world: World) -> None:
    """Registry files that are a FIFO, a link to /dev/zero, a 1 GiB sparse file, a
    directory, or name a FIFO: read with O_NONBLOCK, regular files only, 4 KiB."""
    live, doomed = live_and_dead(world)
    registry = registry_of(world)
    os.mkfifo(registry / "fifo")
    (registry / "zero").symlink_to("/dev/zero")
    with open(registry / "huge", "wb") as f:
        f.truncate(1 << 30)
    (registry / "adir").mkdir()
    os.mkfifo(world.root / "pipe")
    (registry / "names-a-fifo").write_text(str(world.root / "pipe"))
    done = run_with_timeout(world, "collect", *NOW, timeout=20)
    assert done is not None and done.returncode == 0, done and done.stderr
    assert not doomed & world.archives()
    assert works(world, live, "alpha", "2.0")


def test_defended_watching_the_cache_and_a_symlink_loop(world: World) -> None:
    live, doomed = live_and_dead(world)
    work = world.root / "work"
    (work / "loop").mkdir(parents=True)
    (work / "loop" / "self").symlink_to(work)
    deep = work / "deep"
    deep.mkdir()
    path = deep
    for _ in range(200):
        path = path / "d"
    path.mkdir(parents=True)
    for directory in (work, world.cache, world.cache / "archive-v0"):
        world.uvrefs("watch", "add", directory)
    done = run_with_timeout(world, "collect", *NOW, timeout=30)
    assert done is not None and done.returncode == 0, done and done.stderr
    assert not doomed & world.archives()
    assert works(world, live, "alpha", "2.0") and works(world, live, "beta", "1.0")


def test_defended_a_dotvenv_that_is_a_symlink_and_a_renamed_project(world: World) -> None:
    real = world.venv("venvs/proj-env")
    project = world.root / "src" / "proj"
    project.mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    (project / ".venv").symlink_to(real)
    install(world, project / ".venv", "alpha==1.0")
    dead = world.venv("dead")
    install(world, dead, "alpha==1.0", "beta")
    shutil.rmtree(dead)
    project.rename(project.with_name("renamed"))
    assert freed(collect(world)) == {"beta 1.0"}
    assert works(world, project.with_name("renamed") / ".venv", "alpha", "1.0")


@pytest.mark.parametrize("untracked", [True, False], ids=["untracked", "tracked-dead"])
def test_nothing_is_freed_that_an_unknown_root_may_use(open_world: World, untracked: bool) -> None:
    """A discovered env (plain uv, beside a tracked one) whose site-packages the
    unprivileged collector cannot read is found (its pyvenv.cfg is visible) but scanned as
    unknown. Unknown roots add nothing to the live set and, never recorded, have no
    record or referrer to fall back on: `--untracked` takes the untracked alpha 3.0 it
    uses ("no root uses it"), and a plain collect takes alpha 1.0, which it shares with a
    deleted tracked env."""
    world = open_world
    tracked = world.venv("tracked")
    install(world, tracked, "beta")
    version = "3.0" if untracked else "1.0"
    if not untracked:
        dead = world.venv("dead")
        install(world, dead, "alpha==1.0")
        shutil.rmtree(dead)
    private = world.venv("private")
    install(world, private, f"alpha=={version}", tracked=False)
    next((private / "lib").glob("python3*/site-packages")).chmod(0o700)
    done = as_nobody(world, "collect", "--json", *(["--untracked"] if untracked else []))
    # Said, with exit 1: what the unreadable env uses cannot be known.
    assert done.returncode == 1 and "nothing can be freed" in done.stderr, done.stderr
    assert f"alpha {version}" not in freed(json.loads(done.stdout))
    assert works(world, private, "alpha", version)


def test_schedule_with_an_infinite_interval_is_a_one_line_error(world: World) -> None:
    """Same root cause in `schedule install --every 1e999d` (OverflowError, a traceback)."""
    done = world.uvrefs("schedule", "install", "--every", "1e999d", "--dry-run", check=False)
    assert "Traceback" not in done.stderr, done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- dry run vs collect


def test_dry_run_says_what_collect_then_does(world: World) -> None:
    """docs/design.md: a dry run reports what the real run then frees. A file of a dead
    archive hard-linked from outside (as `hardlink`/`rdfind` dedup leaves caches): the dry
    run, which walks the archive, keeps it ("still hard-linked elsewhere"); the real run
    checks only METADATA's link count and frees it."""
    dead = world.venv("dead")
    install(world, dead, "big")
    shutil.rmtree(dead)
    (entry,) = world.archive_of("big", "1.0")
    os.link(world.cache / "archive-v0" / entry / "big" / "data.bin", world.root / "dedup.bin")
    planned = collect(world, "--dry-run")
    done = collect(world)
    assert freed(planned) == freed(done), (planned["kept"], done["freed"])


def test_a_project_renamed_while_collect_plans_is_followed_later(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project renamed before a collect is followed (its holder is watched). Renamed
    while a collect plans, it is judged gone under the lock and `forget_gone` drops its
    record and referrers; with them goes the only reason its holder was watched, so the
    next collect never finds the renamed project, and the entry it uses, now tracked by
    nobody, is freed."""
    projects = world.root / "src"
    env = world.venv("src/proj/.venv")
    (projects / "proj" / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    install(world, env, "alpha==1.0")
    moved = projects / "renamed" / ".venv"
    in_process_collect(world, monkeypatch, lambda: (projects / "proj").rename(moved.parent))
    assert works(world, moved, "alpha", "1.0")
    result = collect(world)
    assert "alpha 1.0" not in freed(result), result["freed"][0]["reason"]
    assert works(world, moved, "alpha", "1.0")


def test_an_env_record_this_uvrefs_cannot_read_does_not_make_its_env_gone(world: World) -> None:
    """An env on a bind mount, tracked, then unmounted: its record's mount point makes it
    unknown (kept). A record this uvrefs cannot read (a newer format, or any field it does
    not validate) is silently skipped by `env_records`; the env is then a root by its
    referrers alone, judged with no mount or namespace, so "gone", and its entries are
    freed; remounted, the env is broken. (Refs of a newer format are kept; records are
    not.)"""
    env = tracked_env_on_unmounted_bind_mount(world)
    real, mnt = world.root / "real", world.root / "mnt"
    (record,) = store_dir(world).glob("envs/*.json")
    data = json.loads(record.read_text())
    data["format"] = 2  # written by a newer uvrefs
    record.write_text(json.dumps(data))
    result = collect(world, check=False)  # exit 1: it says a newer uvrefs wrote the record
    assert "alpha 1.0" not in freed(result), result["freed"][0]["reason"]
    subprocess.run(["mount", "--bind", str(real), str(mnt)], check=True)
    try:
        assert works(world, env, "alpha", "1.0")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
