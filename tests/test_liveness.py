"""Liveness from one place (issue 18): what is alive is decided from the store's records and
the filesystem, never from the environment of whoever runs collect, nor from the moment it
ran, nor through the path it was reached by. Each test is a case where collect freed what
a living environment used; each fails on the code before (the docstring says how it
broke). Envs use symlink link mode, where a wrong free breaks them, and every test checks
that every file of the env's installed RECORD still exists (a half-freed package can still
import, as an empty namespace package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SYMLINK, World, collect_json, freed, in_process, install

# ---------------------------------------------------------------- helpers


def record_files(env: Path) -> list[Path]:
    """Every file an env's installed RECORDs list (its site dirs, or `env` itself for a
    `--target` directory)."""
    sites = list(env.glob("lib/python*/site-packages")) or [env]
    files = []
    for site in sites:
        for record in site.glob("*.dist-info/RECORD"):
            for line in record.read_text().splitlines():
                name = line.rsplit(",", 2)[0]
                if name and not name.startswith(".."):  # scripts outside the site dir
                    files.append(site / name)
    return files


def intact(env: Path) -> bool:
    """Every file of every installed RECORD exists (through its symlink into the cache)."""
    files = record_files(env)
    return bool(files) and all(f.exists() for f in files)


def works(world: World, python: Path, module: str, version: str, path: Path | None = None) -> bool:
    code = f"import {module}; assert {module}.__version__ == {version!r}"
    env = {"PYTHONPATH": str(path)} if path else None
    return world.run(python, "-c", code, check=False, extra_env=env).returncode == 0


def a_dead_tracked_user(world: World, *reqs: str) -> None:
    """Make `reqs` tracked and dead: a tracked env used them and was deleted."""
    dead = world.venv("dead")
    install(world, dead, *reqs)
    shutil.rmtree(dead)


def store_dir(world: World) -> Path:
    (store,) = world.state.glob("caches/*")
    return store


def backdate(*tops: Path, seconds: float = 3600) -> None:
    """Make every directory under `top` look unchanged for a while (so a search under
    uv's lock trusts its listing of them unless they change again): mtimes set back, then
    a wait past the 2 s in which a change (its ctime, which no one can set back) makes a
    listing untrustworthy."""
    then = time.time() - seconds
    for top in tops:
        for path in [top, *top.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                os.utime(path, (then, then))
    time.sleep(2.1)


# ---------------------------------------------------------------- facts of the wrong object


@pytest.mark.parametrize("how", ["tracked", "discovered"])
def test_a_centralized_project_on_an_unmounted_disk_keeps_its_env(world: World, how: str) -> None:
    """Its `.venv` is a link into uv's cache (`centralized-project-envs`). The mount point
    recorded for the project was the one of the link's *target* (the cache), so with the
    project's disk unmounted the project looked deleted: the second collect freed its
    environment and what it used, and after remounting `.venv` led nowhere."""
    real, mnt = world.root / "real", world.root / "mnt"
    real.mkdir()
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(real), str(mnt)], check=False).returncode:
        pytest.skip("bind mounts are not allowed here")
    world.env.update(UV_PREVIEW_FEATURES="centralized-project-envs", **SYMLINK)
    try:
        proj = mnt / "proj"
        proj.mkdir()
        (proj / "pyproject.toml").write_text(
            '[project]\nname = "proj"\nversion = "0.1"\ndependencies = ["alpha==1.0"]\n'
            "[tool.uv]\npackage = false\n"
        )
        sync = ["sync", "-q", "-p", sys.executable, *world.offline()]
        if how == "tracked":
            world.uvrefs("uv", *sync, cwd=proj)
        else:
            world.uv(*sync, cwd=proj)
            world.uvrefs("watch", "add", mnt)
        env = Path(os.path.realpath(proj / ".venv"))
        assert env.is_relative_to(world.cache) and intact(env)
        assert freed(collect_json(world)) == set()  # sees (and records) the project's link
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    for _ in range(2):
        result = collect_json(world)
        assert freed(result) == set() and result["project_envs"] == [], result
    assert env.is_dir() and intact(env)
    subprocess.run(["mount", "--bind", str(real), str(mnt)], check=True)
    try:
        assert os.path.realpath(mnt / "proj" / ".venv") == str(env)
        assert works(world, env / "bin" / "python", "alpha", "1.0") and intact(env)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---------------------------------------------------------------- the caller's environment


def test_tools_in_a_custom_tool_dir_survive_the_scheduled_job(world: World) -> None:
    """uv tools in a custom `UV_TOOL_DIR`: an interactive collect kept them ("tool"); the
    scheduled job, run as cron runs it (`env -i`: no UV_TOOL_DIR), did not search there
    and freed what they used, and the tool stopped working. Now every uvrefs command
    records where it sees uv keep tools, and the job searches every such place."""
    tools = world.root / "data" / "uv" / "custom-tools"  # deeper than any holder searches
    user = {"UV_TOOL_DIR": str(tools), **SYMLINK}
    world.uv("tool", "install", "-q", *world.offline(), "tooly", extra_env=user)
    tool_env = tools / "tooly"
    assert intact(tool_env)
    # A tracked env (deleted since) used tooly too, so its entry is tracked and dead, and
    # the tracked install saw the user's UV_TOOL_DIR.
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "tooly", extra_env=user)
    shutil.rmtree(dead)
    cron = {
        "HOME": world.env["HOME"],
        "PATH": "/usr/bin:/bin",
        "UV_CACHE_DIR": str(world.cache),
        "UVREFS_DIR": str(world.state),
        "UVREFS_UV": world.uv_bin,
    }
    collect = ["collect", "--no-wait", "--min-age", "0", "--json"]
    job = subprocess.run(
        [
            "env",
            "-i",
            *(f"{k}={v}" for k, v in cron.items()),
            sys.executable,
            "-m",
            "uvrefs",
            *collect,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=world.root,
    )
    assert job.returncode == 0, job.stderr
    assert freed(json.loads(job.stdout)) == set(), job.stdout
    assert intact(tool_env)
    assert world.run(tool_env / "bin" / "tooly").stdout == "tooly\n"


# ---------------------------------------------------------------- symlinked and moved paths


def test_a_project_under_a_watched_directory_through_a_symlink_is_a_root(world: World) -> None:
    """`~/src/proj -> /data/proj`: discovery never followed directory links, so the env
    made there with plain uv was no root and what it used was freed ("every env under
    ~/src is a root", the README says). It is listed once, by its real path."""
    data = world.root / "data" / "proj"
    data.mkdir(parents=True)
    env = world.venv("data/proj/.venv")
    install(world, env, "alpha==1.0", tracked=False)
    src = world.root / "src"
    src.mkdir()
    (src / "proj").symlink_to(data)
    a_dead_tracked_user(world, "alpha==1.0")
    world.uvrefs("watch", "add", src)
    result = collect_json(world)
    assert freed(result) == set(), result
    assert intact(env) and works(world, env / "bin" / "python", "alpha", "1.0")
    listed = json.loads(world.uvrefs("envs", "--json").stdout)["envs"]
    assert [v["path"] for v in listed].count(str(env)) == 1
    assert not [v for v in listed if "src/proj" in v["path"]], listed


def test_an_env_is_listed_once_when_a_folder_above_it_is_reached_through_a_link(
    world: World,
) -> None:
    """A tracked project moved and linked back (`mv proj /data/proj; ln -s /data/proj
    proj`): its record names the old path, which now leads through the link, and the
    search finds it at its real path. It is one env, scanned and listed once."""
    env = world.venv("projects/proj/.venv")
    (world.root / "projects" / "proj" / "pyproject.toml").write_text("[project]\nname='p'\n")
    install(world, env, "alpha==1.0")
    moved = world.root / "data" / "proj"
    moved.parent.mkdir()
    (world.root / "projects" / "proj").rename(moved)
    (world.root / "projects" / "proj").symlink_to(moved)
    result = collect_json(world)
    assert freed(result) == set()
    listed = [v["path"] for v in json.loads(world.uvrefs("envs", "--json").stdout)["envs"]]
    assert listed == [str(moved / ".venv")], listed
    assert intact(moved / ".venv")


def test_a_tracked_project_moved_out_of_sight_waits_a_grace_period(world: World) -> None:
    """`mv ~/projects/proj /elsewhere/proj` (nowhere watched): the next collect freed what
    it used at once ("no longer exists"), and 38 of the env's 48 files became dangling
    links while `import pkg` still "worked", as a namespace package. In symlink mode an
    env gone from its path may have moved, links and all: its entries wait a grace
    period, and collect, why and status say until when and what to do."""
    proj = world.root / "projects" / "proj"
    env = world.venv("projects/proj/.venv")
    (proj / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    install(world, env, "alpha==1.0", "big")
    elsewhere = world.root / "elsewhere"
    elsewhere.mkdir()
    proj.rename(elsewhere / "proj")
    moved = elsewhere / "proj" / ".venv"
    result = collect_json(world, grace=True)
    assert freed(result) == set(), result
    kept = {d["dist"]: d for d in result["kept"]}
    assert kept["alpha"]["state"] == "held"
    assert "kept until " in kept["alpha"]["reason"]
    assert f"gone from {env}, maybe moved" in kept["alpha"]["reason"]
    assert "`--min-age 0`" in kept["alpha"]["reason"]
    assert "kept until " in world.uvrefs("why", "alpha").stdout
    status = json.loads(world.uvrefs("status", "--json").stdout)
    assert status["held"]["entries"] == 2 and status["dead"]["entries"] == 0
    assert intact(moved) and works(world, moved / "bin" / "python", "alpha", "1.0")
    # Said where it went: a root again, at its new place.
    world.uvrefs("watch", "add", elsewhere)
    result = collect_json(world)
    assert freed(result) == set() and intact(moved)
    assert {d["reason"] for d in result["kept"]} == {f"used by {moved}"}


def test_a_deleted_hardlink_mode_venv_is_still_freed_at_once(world: World) -> None:
    """The seed scenario (uv's default link mode falls back to hard links here): a deleted
    venv's files were its own, so nothing can break: freed by a default collect."""
    live, dead = world.venv("live"), world.venv("dead")
    mode = {"UV_LINK_MODE": "hardlink"}
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "beta", extra_env=mode)
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", extra_env=mode)
    shutil.rmtree(dead)
    assert freed(collect_json(world, grace=True)) == {"alpha 1.0"}


# ---------------------------------------------------------------- timing windows


def test_an_env_made_under_a_watched_dir_while_collect_waits_for_the_lock_is_a_root(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An env made with plain uv at a new path under a watched directory while collect
    waits for uv's lock (the wait can last UV_LOCK_TIMEOUT): the search was not run again
    under the lock, so what it used was freed. Now the search runs again under the lock
    for every directory that changed since planning."""
    from tests.test_attack import in_process_collect

    projects = world.root / "projects"
    projects.mkdir()
    world.venv("projects/old/.venv")
    world.uvrefs("watch", "add", projects)
    a_dead_tracked_user(world, "alpha==1.0")
    backdate(projects)  # nothing changed there for an hour: its listings are trusted
    made = projects / "new" / ".venv"

    def made_meanwhile() -> None:
        world.venv("projects/new/.venv")
        install(world, made, "alpha==1.0", tracked=False)

    result = in_process_collect(world, monkeypatch, made_meanwhile)
    assert not [d for d in result.freed if d.dist == "alpha"], result.freed  # type: ignore[attr-defined]
    assert intact(made) and works(world, made / "bin" / "python", "alpha", "1.0")


def test_the_sweep_finds_roots_with_the_planners_finder(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's re-mark under uv's lock found roots with its own code, which had drifted
    from the planner's (a peer store's records were "tracked" in one, "peer" in the
    other). Now one root finder runs at both moments: on a quiet cache both find the same
    roots, kind by kind, and the second reads no directory again."""
    from uvrefs.gc.roots import find_roots
    from uvrefs.store.refs import host_id

    peer = {"UVREFS_DIR": str(world.root / "state-of-another-user")}
    install(world, world.venv("projects/a/.venv"), "alpha==1.0")
    install(world, world.venv("projects/b/.venv"), "beta", extra_env=peer)
    install(world, world.venv("projects/plain/.venv"), "alpha==2.0", tracked=False)
    tools = world.root / "tools"
    tool_dir = {"UV_TOOL_DIR": str(tools)}
    world.uv("tool", "install", "-q", *world.offline(), "tooly", extra_env=tool_dir)
    world.uvrefs("status", extra_env=tool_dir)  # sees the tool dir
    backdate(world.root / "projects", tools)
    cache, store = in_process(world, monkeypatch)  # (it set os.environ for good before)
    planned = find_roots(cache, store, host_id())
    again = find_roots(cache, store, host_id(), previous=planned)
    fresh = find_roots(cache, store, host_id())
    assert again.kinds() == planned.kinds() == fresh.kinds()
    kinds = planned.kinds()
    assert kinds[str(world.root / "projects/a/.venv")] == "tracked"
    assert kinds[str(world.root / "projects/b/.venv")] == "peer"
    assert kinds[str(world.root / "projects/plain/.venv")] == "discovered"
    assert kinds[str(tools / "tooly")] == "tool"
    assert again.discovery is not None and again.discovery.relisted == 0
    assert all(v.parsed for v in again.views)


# ---------------------------------------------------------------- records lost, rewritten, newer


def target_install(world: World) -> tuple[Path, Path]:
    """`uvrefs install --target DIR alpha==1.0` in symlink mode, beside a dead tracked user
    of alpha 1.0 (so only DIR's record says it is used); (DIR, its record)."""
    a_dead_tracked_user(world, "alpha==1.0")
    target = world.root / "target"
    world.uvrefs(
        "install", "-q", "--target", target, *world.offline(), "alpha==1.0", extra_env=SYMLINK
    )
    from uvrefs.store.stamps import env_key

    record = store_dir(world) / "envs" / f"{env_key(str(target))}.json"
    assert record.is_file() and intact(target)
    return target, record


def newer(record: Path) -> bytes:
    doc = json.loads(record.read_text())
    doc.update(format=2, shiny_new_field={"kept": True})
    raw = json.dumps(doc).encode()
    record.write_bytes(raw)
    return raw


@pytest.mark.parametrize("record_is", ["deleted", "newer", "corrupt"])
def test_a_target_dirs_lost_or_unreadable_record_keeps_what_it_uses(
    world: World, record_is: str
) -> None:
    """`uv pip install --target DIR`: only the env's record says where its packages live.
    With the record deleted or of a newer format, a collect scanned DIR as a venv, found
    it "no longer uses" alpha and freed it; with the record corrupt, collect held alpha,
    then `doctor --repair` rewrote the record with no site dirs and the next collect
    freed it. Now the env is unknown and alpha held, and repair rebuilds only what it can
    prove (the record is left as it is)."""
    target, record = target_install(world)
    if record_is == "deleted":
        record.unlink()
    elif record_is == "newer":
        before = newer(record)
    else:
        before = b'{"format": 1, "path": '
        record.write_bytes(before)
    for _ in range(2):
        result = collect_json(world, check=False)
        assert freed(result) == set(), result
        assert intact(target) and works(world, Path(sys.executable), "alpha", "1.0", target)
        repaired = world.uvrefs("doctor", "--repair", check=False)
        assert "Traceback" not in repaired.stderr
        if record_is != "deleted":
            assert record.read_bytes() == before  # never rewritten by repair
    if record_is == "newer":
        said = world.uvrefs("collect", "--min-age", "0", check=False).stderr
        assert said.count("newer uvrefs") == 1, said


def test_a_renamed_target_dir_waits_a_grace_period(world: World) -> None:
    """A renamed `--target` dir was judged deleted (it has no pyvenv.cfg, so no search
    finds it again) and its entries were freed: in symlink mode it may have moved."""
    target, _ = target_install(world)
    renamed = world.root / "renamed"
    target.rename(renamed)
    result = collect_json(world, grace=True)
    assert freed(result) == set() and "maybe moved" in json.dumps(result["kept"])
    assert intact(renamed) and works(world, Path(sys.executable), "alpha", "1.0", renamed)


def test_files_a_newer_uvrefs_wrote_are_never_rewritten(world: World) -> None:
    """An env record or `watch.json` with `"format": 2` and a field this version does not
    know was rewritten as format 1 by collect, a tracked install and `watch add`, and the
    field was gone. Now each file stays as it is, its env stays as it says (unknown: its
    entries held), and commands say once that a newer uvrefs wrote it."""
    env = world.venv("projects/env")
    install(world, env, "alpha==1.0")
    a_dead_tracked_user(world, "alpha==1.0")
    from uvrefs.store.stamps import env_key

    store = store_dir(world)
    record = store / "envs" / f"{env_key(str(env))}.json"
    raw_record = newer(record)
    watch = store / "watch.json"
    raw_watch = json.dumps({"format": 2, "dirs": [str(world.root)], "depths": {"x": 9}}).encode()
    watch.write_bytes(raw_watch)
    done = world.uvrefs("collect", "--min-age", "0", "--json", check=False)
    assert freed(json.loads(done.stdout)) == set() and done.stderr.count("newer uvrefs") == 1
    install(world, env, "beta")  # a tracked install into that env
    added = world.uvrefs("watch", "add", world.root / "projects", check=False)
    assert added.returncode != 0 and "newer uvrefs" in added.stderr
    assert added.stderr.count("\n") == 1 and "Traceback" not in added.stderr
    assert record.read_bytes() == raw_record and watch.read_bytes() == raw_watch
    assert intact(env) and works(world, env / "bin" / "python", "alpha", "1.0")


@pytest.mark.parametrize("refs_are", ["newer", "truncated"])
def test_repair_never_turns_another_hosts_held_entry_into_an_untracked_one(
    world: World, refs_are: str
) -> None:
    """`doctor --repair` set aside a refs file it could not read (here one of a newer
    format, naming another host's env); afterwards `collect --untracked` freed that host's
    live entry although the host's env record in the same store still listed it. Now a
    newer file is never set aside, and an entry set aside (a truncated refs file) but
    listed in any env record is held, not untracked."""
    env = world.venv("on-host-b")
    install(world, env, "alpha==1.0", extra_env={"UVREFS_HOST": "host-b"})
    (entry,) = world.archive_of("alpha", "1.0")
    refs = store_dir(world) / "refs" / f"{entry}.refs"
    if refs_are == "newer":
        newer(refs)
    else:
        refs.write_bytes(refs.read_bytes()[:40])
    world.uvrefs("doctor", "--repair", check=False)
    assert refs.exists() == (refs_are == "newer")
    result = collect_json(world, "--untracked", check=False)
    assert freed(result) == set(), result
    assert intact(env) and works(world, env / "bin" / "python", "alpha", "1.0")
