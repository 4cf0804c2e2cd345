"""A cache that moves keeps its store (issue 20): a store is found by the cache's identity
(the archive ids it tracks), not only by the cache's path. CI restores the cache and the
store together in a workspace whose path changes between jobs (self-hosted runners,
GitLab's concurrent jobs): the store, keyed by the cache's path, started empty every job,
freed nothing of the previous job's dead and grew a folder a job. Each scenario runs real
uv; the job's cache and state dir are carried between workspaces with `tar`, as
actions/cache does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import World, freed
from tests.test_liveness import intact
from uvrefs.store import locate, stamps


@dataclass
class Job:
    """A CI job's workspace: its uv cache and uvrefs state dir inside it, as docs/ci.md sets
    them (UV_CACHE_DIR and UVREFS_DIR under the workspace)."""

    world: World
    ws: Path
    mode: str = "hardlink"
    state: Path = Path()  # default: the workspace's .uvrefs

    def __post_init__(self) -> None:
        self.cache = self.ws / ".uv-cache"
        if self.state == Path():
            self.state = self.ws / ".uvrefs"

    def env(self, **more: str) -> dict[str, str]:
        return {
            "UV_CACHE_DIR": str(self.cache),
            "UVREFS_DIR": str(self.state),
            "UVREFS_HOST": "ci",
            "UV_LINK_MODE": self.mode,
            **more,
        }

    def uvrefs(self, *args: str | Path, **more: str) -> subprocess.CompletedProcess[str]:
        return self.world.uvrefs(*args, cwd=self.ws, extra_env=self.env(**more))

    def install(self, env: str, *reqs: str) -> Path:
        path = self.ws / env
        if not path.exists():
            self.world.uv("venv", "-q", "--python", sys.executable, path, extra_env=self.env())
        self.uvrefs("install", "-q", "-p", path, *self.world.offline(), *reqs)
        return path

    def collect(self, *args: str) -> dict[str, Any]:
        return json.loads(self.uvrefs("collect", "--json", *args).stdout)  # type: ignore[no-any-return]

    def stores(self) -> list[str]:
        return sorted(os.listdir(self.state / "caches"))

    def archive_of(self, dist: str, version: str) -> set[str]:
        bucket = self.cache / "archive-v0"
        return {a.name for a in bucket.iterdir() if (a / f"{dist}-{version}.dist-info").is_dir()}

    def next_job(self, ws: Path) -> Job:
        """The next job, in a fresh workspace at `ws`: this job's cache and state dir
        saved and restored there as actions/cache does (a tar of both), this workspace
        gone."""
        ws.mkdir(parents=True)
        saved = subprocess.run(
            ["tar", "-C", self.ws, "-cf", "-", ".uv-cache", ".uvrefs"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-C", ws, "-xf", "-"], input=saved, check=True)
        shutil.rmtree(self.ws)
        return Job(self.world, ws, self.mode)


def doctor(job: Job) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for check in json.loads(job.uvrefs("doctor", "--json").stdout)["checks"]:
        found.setdefault(check["name"], []).append(check["detail"])
    return found


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_a_cache_restored_at_another_path_frees_the_previous_jobs_dead(
    world: World, mode: str
) -> None:
    """Three CI jobs, each in a workspace at another path. Job 1 installs alpha 1.0 and
    beta; job 2 (a bump) alpha 2.0 and beta; job 3 the same. The first collect of job 2
    frees exactly what job 1's env (gone with its workspace) used, every living env keeps
    every file it installed, and the state dir holds one store, which says where it came
    from. Before, job 2's store started empty at the new path: "freed 0 entries", and one
    more folder in `caches/` each job."""
    job = Job(world, world.root / "runner-1" / "ws", mode)
    job.ws.mkdir(parents=True)
    job.install(".venv", "alpha==1.0", "beta")
    old = job.archive_of("alpha", "1.0")
    assert freed(job.collect()) == set()
    first_cache = os.path.realpath(job.cache)

    job = job.next_job(world.root / "runner-2" / "ws")
    job.install(".venv", "alpha==2.0", "beta")
    # symlink mode: a gone env may have moved (links and all); `--min-age 0` frees at once
    now = ("--min-age", "0") if mode == "symlink" else ()
    result = job.collect(*now)
    assert freed(result) == {"alpha 1.0"}, result
    assert not job.archive_of("alpha", "1.0") & old
    assert job.stores() == [os.path.basename(stamps.store_dir(str(job.state), str(job.cache)))]
    assert intact(job.ws / ".venv")
    info = json.loads((job.state / "caches" / job.stores()[0] / "store.json").read_text())
    assert info["cache"] == os.path.realpath(job.cache)
    assert [m["from_path"] for m in info["moves"]] == [first_cache]
    from uvrefs.store.schema import StoreInfo

    assert StoreInfo.model_validate(info).moves[0].from_path == first_cache
    place = doctor(job)["store location"]
    assert place[0].startswith(
        f"the store of this cache was made for {first_cache}; the cache moved here on "
    ), place

    job = job.next_job(world.root / "runner-3" / "ws")
    job.install(".venv", "alpha==2.0", "beta")
    assert freed(job.collect(*now)) == set()
    assert len(job.stores()) == 1 and intact(job.ws / ".venv")
    job.world.uv(
        "pip",
        "install",
        "-q",
        "--offline",
        "--reinstall",
        "-p",
        job.ws / ".venv",
        *world.offline(),
        "alpha==2.0",
        "beta",
        extra_env=job.env(),
    )


def test_a_store_moved_in_the_background_and_a_no_op_install_after_the_move(
    world: World,
) -> None:
    """A cache moved with `mv`, its envs staying where they are. The first command after
    the move is an install recorded in the background (a terminal's): it takes the store
    before holding it for the recorder. The next install is a no-op as before the move:
    skipped, loading neither the store's modules nor typer, pydantic or filelock."""
    job = Job(world, world.root / "ws")
    job.ws.mkdir()
    env = job.install("env", "alpha==1.0")
    moved = Job(world, world.root / "elsewhere")
    moved.ws.mkdir()
    job.cache.rename(moved.cache)
    shutil.move(job.state, moved.state)
    moved.uvrefs(
        "install", "-q", "-p", env, *world.offline(), "alpha==1.0", UVREFS_RECORD="background"
    )
    ok = stamps.wait_for_recorders(stamps.store_dir(str(moved.state), str(moved.cache)), 30)
    assert ok and len(moved.stores()) == 1
    code = (
        "import sys\nfrom uvrefs.launch import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
        "    heavy = ('typer', 'pydantic', 'filelock', 'uvrefs.store.refs', 'uvrefs.store.moves')\n"
        "    print('loaded:', [m for m in heavy if m in sys.modules], file=sys.stderr)"
    )
    args = ("-v", "install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    again = world.run(sys.executable, "-c", code, *args, extra_env=moved.env())
    assert "unchanged, skipped" in again.stderr and "loaded: []" in again.stderr, again.stderr
    shutil.rmtree(env)
    assert freed(moved.collect()) == {"alpha 1.0"}


def plain_install(job: Job, env: str, *reqs: str) -> None:
    """Plain uv into the job's cache (no store is made)."""
    path = job.ws / env
    job.world.uv("venv", "-q", "--python", sys.executable, path, extra_env=job.env())
    job.world.uv(
        "pip", "install", "-q", "-p", path, *job.world.offline(), *reqs, extra_env=job.env()
    )


def test_two_caches_never_take_each_others_store(world: World) -> None:
    """Two caches filled with the same packages (each with its own archive ids) and one
    state dir. a's cache is moved away, so the cache its store was made for is gone; b,
    with no store yet, never takes a's (nothing a's store tracks is in b), and a at its
    new path takes its own."""
    state = world.root / "state"
    a, b = Job(world, world.root / "a", state=state), Job(world, world.root / "b", state=state)
    for job in (a, b):
        job.ws.mkdir()
    a.install("env", "alpha==1.0", "beta")
    plain_install(b, "env", "alpha==1.0", "beta")
    a_store = Path(stamps.store_dir(str(state), str(a.cache)))
    moved = Job(world, world.root / "a2", state=state)
    moved.ws.mkdir()
    a.cache.rename(moved.cache)

    b.uvrefs("status")
    b.install("env", "alpha==1.0")
    b_store = Path(stamps.store_dir(str(state), str(b.cache)))
    assert a_store.is_dir() and b_store.is_dir()
    assert json.loads((b_store / "store.json").read_text())["cache"] == os.path.realpath(b.cache)
    assert not set(os.listdir(a_store / "refs")) & set(os.listdir(b_store / "refs"))

    moved.uvrefs("status")
    assert not a_store.exists()
    assert sorted(os.listdir(state / "caches")) == sorted(
        os.path.basename(stamps.store_dir(str(state), str(j.cache))) for j in (moved, b)
    )


def test_a_copy_of_a_live_cache_never_takes_its_store(world: World) -> None:
    """`cp -a` of a cache that stays in use: the copy shares every archive id with the
    original's store, but that store's cache is still there and uses it (its registry
    names the store), so the copy starts its own store; doctor says why."""
    state = world.root / "state"
    a, c = Job(world, world.root / "a", state=state), Job(world, world.root / "c", state=state)
    a.ws.mkdir()
    c.ws.mkdir()
    a.install("env", "alpha==1.0")
    a_store = Path(stamps.store_dir(str(state), str(a.cache)))
    shutil.copytree(a.cache, c.cache, symlinks=True)
    found = doctor(c)
    assert a_store.is_dir() and not Path(stamps.store_dir(str(state), str(c.cache))).exists()
    assert f"its cache {os.path.realpath(a.cache)} is still there and uses it" in " ".join(
        found["store location"]
    ), found
    c.install("env", "alpha==1.0")
    assert json.loads((a_store / "store.json").read_text())["cache"] == os.path.realpath(a.cache)
    assert freed(a.collect()) == set()


def test_a_restored_copy_is_taken_while_another_jobs_workspace_is_still_there(
    world: World,
) -> None:
    """GitLab's concurrent jobs: job 2 restores the cache and state dir job 1 saved, in
    another concurrency slot's workspace, while job 1's workspace (cache, store and env)
    is still on disk. Job 1's cache is a live cache, but the store job 2 restored is a copy
    it does not use (its registry names job 1's own store, not this copy): job 2 takes the
    copy, and its first collect frees what job 1 used that job 2 does not."""
    one = Job(world, world.root / "builds" / "0" / "proj")
    one.ws.mkdir(parents=True)
    one.install(".venv", "alpha==1.0", "beta")
    one.collect()
    two = Job(world, world.root / "builds" / "1" / "proj")
    two.ws.mkdir(parents=True)
    shutil.copytree(one.cache, two.cache, symlinks=True)
    shutil.copytree(one.state, two.state, symlinks=True)
    two.install(".venv", "alpha==2.0", "beta")
    assert freed(two.collect()) == {"alpha 1.0"}
    assert two.stores() == [os.path.basename(stamps.store_dir(str(two.state), str(two.cache)))]
    assert one.archive_of("alpha", "1.0") and intact(one.ws / ".venv")
    assert freed(one.collect()) == set() and len(one.stores()) == 1


def test_commands_racing_to_take_a_moved_store_leave_one(world: World) -> None:
    """Four commands start at once in a restored workspace, each finding no store at the
    cache's key: one takes the store (under its lock), the others find it taken, and
    every one reads it."""
    job = Job(world, world.root / "ws1")
    job.ws.mkdir()
    job.install(".venv", "alpha==1.0")
    job = job.next_job(world.root / "ws2")
    plain_install(job, "other", "alpha==2.0")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "uvrefs", "collect", "--dry-run", "--json", "--min-age", "0"],
            cwd=job.ws,
            env={**world.env, **job.env()},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, results
    assert all(freed(json.loads(out)) == {"alpha 1.0"} for out, _ in results), results
    assert len(job.stores()) == 1


def test_a_store_that_cannot_be_moved_is_one_line(world: World) -> None:
    """A state dir that cannot be written (mounted read-only) holding the store a restored
    cache brought: collect says so in one line and exits 2; a tracked install warns and
    keeps uv's exit code."""
    job = Job(world, world.root / "ws1")
    job.ws.mkdir()
    job.install(".venv", "alpha==1.0")
    job = job.next_job(world.root / "ws2")
    state = str(job.state)
    if subprocess.run(["mount", "--bind", "-o", "ro", state, state], check=False).returncode:
        pytest.skip("bind mounts are not allowed here")
    try:
        done = world.uvrefs("collect", cwd=job.ws, extra_env=job.env(), check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("uvrefs: error: cannot move the store at "), line
        assert "Read-only file system" in line, line
        path = job.ws / ".venv"
        world.uv("venv", "-q", "--python", sys.executable, path, extra_env=job.env())
        args = ("install", "-q", "-p", path, *world.offline(), "alpha==1.0")
        done = world.uvrefs(*args, cwd=job.ws, extra_env=job.env(), check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "uvrefs: warning: environment not recorded: cannot move the store" in done.stderr
    finally:
        subprocess.run(["umount", state], check=True)


# ------------------------------------------------ the rule, on stores made by hand


def fake_cache(root: Path, ids: list[str]) -> Path:
    cache = root / "cache"
    (cache / "archive-v0").mkdir(parents=True)
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55")
    for entry in ids:
        (cache / "archive-v0" / entry).mkdir()
    return cache


def fake_store(state: Path, cache: str, ids: list[str], info: Any = None) -> Path:
    store = Path(stamps.store_dir(str(state), cache))
    (store / "refs").mkdir(parents=True)
    (store / "envs").mkdir()
    document = {"format": 1, "cache": cache} if info is None else info
    (store / "store.json").write_text(json.dumps(document))
    for entry in ids:
        (store / "refs" / f"{entry}.refs").write_text("{}")
    return store


IDS = [f"entry{i:011d}" for i in range(10)]


def test_a_store_is_taken_only_when_most_of_what_it_tracks_is_here(tmp_path: Path) -> None:
    """5 of 10 tracked entries here is not enough, 6 is; of two stores that qualify the
    one sharing more entries is taken."""
    state = tmp_path / "state"
    cache = fake_cache(tmp_path, IDS[:6])
    half = fake_store(state, "/gone/half", IDS[:5] + [f"other{i:011d}" for i in range(5)])
    assert locate.find_store(str(state), str(cache)) == stamps.store_dir(str(state), str(cache))
    assert half.is_dir() and not Path(stamps.store_dir(str(state), str(cache))).exists()
    most = fake_store(state, "/gone/most", IDS[:6] + [f"other{i:011d}" for i in range(4)])
    three = fake_store(state, "/gone/three", IDS[:3])
    from uvrefs.store import moves

    seen = {s.cache: s for s in moves.survey(str(state), str(cache))}
    assert [moves.qualifies(seen[p]) for p in ("/gone/half", "/gone/most", "/gone/three")] == [
        False,
        True,
        True,
    ]
    key = locate.find_store(str(state), str(cache))
    assert not most.exists() and half.is_dir() and three.is_dir()
    info = json.loads((Path(key) / "store.json").read_text())
    assert info["cache"] == os.path.realpath(cache)
    assert [m["from_path"] for m in info["moves"]] == ["/gone/most"]


@pytest.mark.parametrize(
    "kind",
    [
        "newer-format",
        "garbage",
        "store-json-is-a-fifo",
        "relative-path",
        "store-is-a-symlink",
        "refs-is-a-symlink",
    ],
)
def test_a_store_this_uvrefs_did_not_write_is_never_taken(tmp_path: Path, kind: str) -> None:
    """Whatever it tracks: a store.json of a newer format (never rewritten), garbage, a
    FIFO (never waited on), a relative path; a store or its refs planted as a link."""
    state = tmp_path / "state"
    cache = fake_cache(tmp_path, IDS)
    info = {
        "newer-format": {"format": 2, "cache": "/gone"},
        "relative-path": {"format": 1, "cache": "gone"},
    }.get(kind)
    store = fake_store(state, "/gone", IDS, info)
    if kind == "garbage":
        (store / "store.json").write_text("{ not json")
    elif kind == "store-json-is-a-fifo":
        (store / "store.json").unlink()
        os.mkfifo(store / "store.json")
    elif kind == "store-is-a-symlink":
        store.rename(tmp_path / "elsewhere")
        store.symlink_to(tmp_path / "elsewhere")
    elif kind == "refs-is-a-symlink":
        (store / "refs").rename(tmp_path / "refs")
        (store / "refs").symlink_to(tmp_path / "refs")
    key = locate.find_store(str(state), str(cache))
    assert not os.path.lexists(key) and os.path.lexists(store)


def test_a_store_whose_cache_is_there_under_another_name_is_never_taken(tmp_path: Path) -> None:
    """This cache's own directory under another path (a bind mount: realpath cannot tell
    them apart, their identity can): the store made for that path serves it, so it stays
    there (a peer store is a root)."""
    state = tmp_path / "state"
    cache = fake_cache(tmp_path, IDS)
    other = tmp_path / "other"
    other.mkdir()
    if subprocess.run(["mount", "--bind", str(cache), str(other)], check=False).returncode:
        pytest.skip("bind mounts are not allowed here")
    try:
        store = fake_store(state, str(other), IDS)
        from uvrefs.store import moves

        seen = moves.survey(str(state), str(cache))
        assert [s.refused for s in seen] == [
            f"it belongs to this cache as {other} (the same directory)"
        ]
        locate.find_store(str(state), str(cache))
        assert store.is_dir()
    finally:
        subprocess.run(["umount", str(other)], check=True)


def test_doctor_lists_stores_of_caches_not_found_here(world: World) -> None:
    """A state dir saved at changing paths by a uvrefs that did not follow a moved cache
    holds a folder per path; doctor says which stores were made for caches not found here,
    and that one of them tracks entries of this cache."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    (entry,) = world.archive_of("alpha", "1.0")
    fake_store(world.state, "/gone/job-1/.uv-cache", [entry, "unknown000000000"])
    fake_store(world.state, "/gone/job-2/.uv-cache", ["unknown000000001"])
    checks = json.loads(world.uvrefs("doctor", "--json").stdout)["checks"]
    (other,) = [c for c in checks if c["name"] == "other stores"]
    assert other["status"] == "warn"
    assert other["detail"].startswith(
        f"2 stores in {world.state}/caches were made for caches not found here "
        "(/gone/job-1/.uv-cache, /gone/job-2/.uv-cache); 1 of them tracks entries of this "
        "cache"
    ), other
    (place,) = [c for c in checks if c["name"] == "store location"]
    assert place["detail"].endswith(f"made for this cache at {world.cache}"), place


def test_store_json_remembers_the_first_path_and_the_last_moves(tmp_path: Path) -> None:
    """Twelve moves in a row (a CI cache at a new path every job): one store folder, and
    store.json stays bounded: where the store was made and the last nine moves."""
    state = tmp_path / "state"
    cache = fake_cache(tmp_path / "job-0", IDS)
    fake_store(state, str(cache), IDS)
    paths = [str(cache)]
    for job in range(1, 13):
        moved = tmp_path / f"job-{job}" / "cache"
        moved.parent.mkdir()
        cache.rename(moved)
        cache = moved
        paths.append(os.path.realpath(cache))
        key = locate.find_store(str(state), str(cache))
    assert os.listdir(state / "caches") == [os.path.basename(key)]
    info = json.loads((Path(key) / "store.json").read_text())
    assert [m["from_path"] for m in info["moves"]] == [paths[0], *paths[3:12]]
    assert info["cache"] == paths[12]
