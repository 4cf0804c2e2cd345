"""Adversarial review of "liveness from one place" (issue 18). Each test not marked
"defended" is a sequence after which `collect` freed what a living environment used (one
rewrote a file a newer uvrefs wrote) on the code it was written against (364571d), where
each failed; each passes since its fix (docs/reliability.md lists them). The tests named
`test_defended_*` pin attacks that code withstood.

Every env here uses uv's symlink link mode, where a wrong free breaks it, and the check is
that every file of its installed RECORD still exists (`intact`): a half-freed package can
still import, as an empty namespace package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import SYMLINK, World, collect_json, freed, install
from tests.test_attack import in_process_collect
from tests.test_liveness import a_dead_tracked_user, backdate, intact, store_dir, works


def alpha_freed(result: object) -> bool:
    return any(d.dist == "alpha" for d in result.freed)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- timing windows


def test_a_link_under_a_watched_dir_whose_target_appears_before_the_sweep(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`~/projects/proj -> /data/proj` while /data/proj does not exist yet (a disk not
    mounted, a checkout not made): at planning the link leads nowhere, so the listing of
    `projects` holds no `proj`. While collect waits for uv's lock, /data/proj appears with
    an env using alpha (mounted, or renamed into place). `projects` itself did not change
    (its mtime is the link's creation), so under the lock its listing is reused, `proj`
    is still taken for no directory, the env is never found, and alpha goes."""
    projects = world.root / "projects"
    projects.mkdir()
    (projects / "proj").symlink_to(world.root / "data" / "proj")
    a_dead_tracked_user(world, "alpha==1.0")
    world.uvrefs("watch", "add", projects)
    backdate(projects)
    env = world.root / "data" / "proj" / ".venv"

    def appears_meanwhile() -> None:
        world.venv("staging/proj/.venv")
        install(world, world.root / "staging/proj/.venv", "alpha==1.0", tracked=False)
        (world.root / "data").mkdir()
        (world.root / "staging" / "proj").rename(world.root / "data" / "proj")

    result = in_process_collect(world, monkeypatch, appears_meanwhile)
    assert intact(env), "freed what an env under a watched directory (through a link) uses"
    assert not alpha_freed(result), result.freed  # type: ignore[attr-defined]
    assert works(world, env / "bin" / "python", "alpha", "1.0")


def test_an_env_restored_under_a_watched_dir_with_its_mtime_kept_before_the_sweep(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rsync -a backup/projects/ projects/` (or `tar -x`, `cp -a`) while collect waits for
    uv's lock: a project with its env comes back under the watched `projects`, and the
    tool sets the mtime of `projects` back to the one it had (rsync -a restores the mtime
    of every directory it copies, the top one included). Under the lock the listing of
    `projects` is reused on the strength of (st_dev, st_ino, st_mtime_ns), which did not
    change; st_ctime_ns did (it cannot be set back), but is not looked at."""
    projects = world.root / "projects"
    world.venv("projects/old/.venv")
    a_dead_tracked_user(world, "alpha==1.0")
    world.uvrefs("watch", "add", projects)
    backdate(projects)
    before = os.stat(projects)
    env = projects / "restored" / ".venv"

    def restored_meanwhile() -> None:
        world.venv("backup/restored/.venv")
        install(world, world.root / "backup/restored/.venv", "alpha==1.0", tracked=False)
        (world.root / "backup" / "restored").rename(projects / "restored")
        os.utime(projects, ns=(before.st_atime_ns, before.st_mtime_ns))  # as rsync -a does

    result = in_process_collect(world, monkeypatch, restored_meanwhile)
    assert os.stat(projects).st_ctime_ns != before.st_ctime_ns
    assert intact(env), "freed what an env under a watched directory uses"
    assert not alpha_freed(result), result.freed  # type: ignore[attr-defined]


# ---------------------------------------------------------------- the caller's environment


def cron(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    """`uvrefs ARGS` as the scheduled job runs it: `env -i` with only what
    `schedule install` pins (the cache, the store, uv) and HOME, PATH."""
    pinned = {
        "HOME": world.env["HOME"],
        "PATH": "/usr/bin:/bin",
        "UV_CACHE_DIR": str(world.cache),
        "UVREFS_DIR": str(world.state),
        "UVREFS_UV": world.uv_bin,
    }
    return subprocess.run(
        [
            "env",
            "-i",
            *(f"{k}={v}" for k, v in pinned.items()),
            sys.executable,
            "-m",
            "uvrefs",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=world.root,
    )


def test_a_tool_dir_missing_for_a_moment_is_forgotten_and_its_tools_freed(world: World) -> None:
    """Every command records where it sees uv keep tools (settings.json), "kept while they
    exist": `Settings.merge` drops a recorded directory that does not exist at that
    moment. UV_TOOL_DIR on a disk that is not mounted (or a tool dir renamed for a
    minute) while any uvrefs command runs -- here a tracked install elsewhere -- and the
    directory is forgotten for good. Back in place, the scheduled job (`env -i`) no
    longer searches it, and frees what the tools installed there with plain uv use."""
    tools = world.root / "data" / "uv" / "custom-tools"
    user = {"UV_TOOL_DIR": str(tools), **SYMLINK}
    world.uv("tool", "install", "-q", *world.offline(), "tooly", extra_env=user)
    tool_env = tools / "tooly"
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "tooly", extra_env=user)
    settings = store_dir(world) / "settings.json"
    assert str(tools) in json.loads(settings.read_text())["tool_dirs"]
    away = world.root / "data" / "uv" / "away"
    tools.rename(away)  # the disk is unplugged for a while
    other = world.venv("other")
    world.uvrefs("install", "-q", "-p", other, *world.offline(), "beta", extra_env=user)
    away.rename(tools)  # and back
    shutil.rmtree(dead)
    assert intact(tool_env)
    job = cron(world, "collect", "--no-wait", "--min-age", "0", "--json")
    assert job.returncode == 0, job.stderr
    assert intact(tool_env), f"the tool's entries were freed: {freed(json.loads(job.stdout))}"
    assert world.run(tool_env / "bin" / "tooly").stdout == "tooly\n"


def test_a_tool_dir_made_after_the_last_uvrefs_command_is_never_searched(world: World) -> None:
    """`settings.seen()` records the tool directory the user's environment names only if
    it exists at that moment. UV_TOOL_DIR set in the user's shell profile, tracked
    installs run before any tool was installed (the directory does not exist yet: not
    recorded), then `uv tool install` (plain uv) makes it: the scheduled job never
    learns of it and frees what the tools use. Searching a directory that does not exist
    yet costs nothing; the setting could be recorded as the user's environment says."""
    tools = world.root / "data" / "uv" / "custom-tools"
    user = {"UV_TOOL_DIR": str(tools), **SYMLINK}
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "tooly", extra_env=user)
    world.uv("tool", "install", "-q", *world.offline(), "tooly", extra_env=user)
    tool_env = tools / "tooly"
    shutil.rmtree(dead)
    assert intact(tool_env)
    job = cron(world, "collect", "--no-wait", "--min-age", "0", "--json")
    assert job.returncode == 0, job.stderr
    assert intact(tool_env), f"the tool's entries were freed: {freed(json.loads(job.stdout))}"


def test_the_scheduled_job_judges_envs_as_another_host_when_uvrefs_host_is_set(
    world: World,
) -> None:
    """`host_id()` comes from the caller's environment (`UVREFS_HOST`, which the docs tell
    CI runners sharing a cache to set), and `schedule install` does not pin it: on such a
    machine the scheduled job (`env -i`) is another host. Records of this machine's envs
    made with UVREFS_HOST set are then "on host ci": not roots. An env on this very disk,
    tracked under UVREFS_HOST=ci, into which alpha was later installed with plain uv, is
    never scanned; alpha's only referrer of the job's host is a deleted env, and the job
    frees alpha. (Any collect, status or dry run with UVREFS_HOST=ci scans the env, keeps
    alpha, and remembers the env's directory as a holder, which the job then searches; the
    job alone, with only the runner's tracked installs between, does not.)"""
    ci = {"UVREFS_HOST": "ci", **SYMLINK}
    env = world.venv("runner/jobs/42/env")  # below what any holder searches
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "beta", extra_env=ci)
    install(world, env, "alpha==1.0", tracked=False)  # a job's plain `uv pip install`
    dead = world.venv("dead")  # tracked once from a shell without UVREFS_HOST
    world.uvrefs(
        "install",
        "-q",
        "-p",
        dead,
        *world.offline(),
        "alpha==1.0",
        extra_env={"UV_LINK_MODE": "hardlink"},
    )
    shutil.rmtree(dead)
    job = cron(world, "collect", "--no-wait", "--min-age", "0", "--json")
    assert job.returncode == 0, job.stderr
    assert intact(env), (
        f"freed what a living env of this machine uses: {freed(json.loads(job.stdout))}"
    )


# ---------------------------------------------------------------- the grace period


DAY = 86400.0


def collect_on_day(world: World, monkeypatch: pytest.MonkeyPatch, days: float) -> object:
    """A default `collect` (grace 7 days) run `days` from now (negative: ago): only its
    clock is moved (what it stamps in dead-since.json, and the ages it judges by, are
    what a collect on that day would stamp and judge)."""
    import types

    from uvrefs.cache import Cache
    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import Policy
    from uvrefs.store.refs import RefsStore

    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    then = time.time() + days * DAY
    clock = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if n[0] != "_"})
    clock.time = lambda: then
    with monkeypatch.context() as patched:
        patched.setattr(core, "time", clock)
        cache = Cache.open(world.cache)
        return core.collect(
            cache, RefsStore(world.state, cache.root), dry_run=False, timeout=10, policy=Policy()
        )


def test_an_env_moved_today_loses_its_grace_to_an_entry_seen_dead_last_week(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grace period of a maybe-moved env is measured from when its *entry* was first
    seen dead (dead-since.json is keyed by entry), not from when the env was first seen
    gone. Last week a symlink-mode env using alpha was deleted and a collect saw alpha
    dead (kept: grace). Today a new tracked env installs alpha (uv reuses the cached
    archive) and its project is moved with `mv` out of sight; no collect ran in between.
    Today's default collect finds alpha "dead for 8 days", past the 7-day grace, and
    frees it at once: the project moved minutes ago breaks."""
    a_dead_tracked_user(world, "alpha==1.0")
    week_ago = collect_on_day(world, monkeypatch, -8)
    assert not alpha_freed(week_ago)  # kept then: the deleted env may have moved
    proj = world.root / "projects" / "proj"
    env = world.venv("projects/proj/.venv")
    (proj / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    install(world, env, "alpha==1.0")
    elsewhere = world.root / "elsewhere" / "deeper" / "still"
    elsewhere.mkdir(parents=True)
    proj.rename(elsewhere / "proj")
    moved = elsewhere / "proj" / ".venv"
    result = collect_json(world, grace=True)  # the default: 7 days for maybe-moved envs
    assert intact(moved), f"moved minutes ago, freed at once: {result['freed']}"
    assert freed(result) == set()


def test_one_collect_with_a_clock_set_back_ends_every_grace_period_it_starts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine whose clock is wrong for a while (no RTC battery, offline at boot: the
    timer fires `OnBootSec=15min` before time sync; a VM restored from a snapshot)
    runs a collect that stamps a project moved out of sight as "first seen dead" a month
    ago. Once the clock is right, the next collect finds it dead for 30 days and frees
    what it used at once, minutes after the move. The stamp is trusted although the env
    was recorded alive (its referrer's `recorded_at`) after the time it claims."""
    proj = world.root / "projects" / "proj"
    env = world.venv("projects/proj/.venv")
    (proj / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    install(world, env, "alpha==1.0")
    elsewhere = world.root / "elsewhere" / "deeper" / "still"
    elsewhere.mkdir(parents=True)
    proj.rename(elsewhere / "proj")
    moved = elsewhere / "proj" / ".venv"
    wrong_clock = collect_on_day(world, monkeypatch, -30)
    assert not alpha_freed(wrong_clock)  # kept: maybe moved
    result = collect_json(world, grace=True)  # the clock is right again
    assert intact(moved), f"moved minutes ago, freed at once: {freed(result)}"


def test_an_env_moved_away_and_replaced_at_its_path_loses_its_grace(world: World) -> None:
    """`mv ~/projects/app ~/old/2025/app` (out of sight), then a fresh checkout at
    ~/projects/app with a new `.venv` (other packages). The record at ~/projects/app/.venv
    names a directory identity the new env does not have, yet the path is "alive": every
    referrer of the old env is judged by the new env's scan, "no longer uses it", dead
    and not maybe moved, so what only the moved env used is freed by a default collect,
    with no grace, and the moved project breaks."""
    app = world.root / "projects" / "app"
    env = world.venv("projects/app/.venv")
    (app / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "0"\n')
    install(world, env, "alpha==1.0")
    old = world.root / "old" / "2025" / "deeper"
    old.mkdir(parents=True)
    app.rename(old / "app")
    moved = old / "app" / ".venv"
    fresh = world.venv("projects/app/.venv")  # the new checkout's env
    (app / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n')
    install(world, fresh, "beta")
    result = collect_json(world, grace=True)  # the default: a moved env waits 7 days
    assert intact(moved), f"the moved project lost {freed(result)} at once"
    assert works(world, moved / "bin" / "python", "alpha", "1.0")


# ---------------------------------------------------------------- facts of the wrong object


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A directory on another filesystem (tmpfs), where `mv` copies and deletes."""
    import tempfile

    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = Path(tempfile.mkdtemp(prefix="uvrefs-a18-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_env_moved_to_another_disk_is_taken_for_the_new_env_that_reused_its_inode(
    world: World, other_fs: Path
) -> None:
    """`mv ~/venvs/e /mnt/usb/e` across filesystems copies and deletes: e's directory inode
    is freed, and ext4 hands it to the next directory made there (here at once). A new
    env `~/venvs/f` gets it. `note_moves` takes the recorded (st_dev, st_ino) of e for
    proof that e was renamed to f ("moved to f"), which also drops e's `maybe_moved`: what
    only e used is freed with no grace, and e, alive on the other disk, breaks."""
    e = world.venv("venvs/e")
    install(world, e, "alpha==1.0")
    old = os.stat(e)
    moved = other_fs / "e"
    shutil.copytree(e, moved, symlinks=True)  # what `mv` does across filesystems
    shutil.rmtree(e)
    for n in range(200):  # the next directory made in venvs/ (ext4: the first one)
        candidate = world.root / "venvs" / f"f{n}"
        candidate.mkdir()
        if os.stat(candidate).st_ino == old.st_ino:
            break
    else:
        pytest.skip("this filesystem did not reuse the inode")
    f = world.root / "venvs" / "f"
    candidate.rename(f)
    for other in (world.root / "venvs").glob("f[0-9]*"):
        other.rmdir()
    world.uv("venv", "-q", "--allow-existing", "--python", sys.executable, f)
    install(world, f, "beta")
    assert (os.stat(f).st_dev, os.stat(f).st_ino) == (old.st_dev, old.st_ino)
    result = collect_json(world, grace=True)  # the default: a moved env waits 7 days
    assert intact(moved), f"e, moved to another disk, lost {freed(result)}"
    assert works(world, moved / "bin" / "python", "alpha", "1.0")


def target_install(world: World) -> Path:
    """`uvrefs install --target DIR alpha==1.0` in symlink mode, beside a dead tracked user
    of alpha 1.0 (so only DIR's record says it is used)."""
    a_dead_tracked_user(world, "alpha==1.0")
    target = world.root / "target"
    world.uvrefs(
        "install", "-q", "--target", target, *world.offline(), "alpha==1.0", extra_env=SYMLINK
    )
    assert intact(target)
    return target


def test_a_target_dir_moved_and_linked_back_is_recorded_with_the_links_site_dir(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mv ~/lib/target /data/target; ln -s /data/target ~/lib/target` (moved, a link left
    for compatibility), a collect, then the link is removed. The collect folded the
    record of ~/lib/target onto the real path and `tidy_refs` wrote a record of
    /data/target with the alias's facts: `site_dirs: [~/lib/target]` (and its mount).
    Once the link is gone, /data/target -- alive, where it was recorded -- is scanned
    with a site dir that no longer exists, "no longer uses" alpha, and alpha is freed
    (today with `--min-age 0`, which the "maybe moved" message of the old path suggests;
    by a default collect once the grace period of the old path is over)."""
    target = target_install(world)
    real = world.root / "data" / "target"
    real.parent.mkdir()
    target.rename(real)
    target.symlink_to(real)
    assert freed(collect_json(world, grace=True)) == set()
    from uvrefs.store.stamps import env_key

    record = json.loads((store_dir(world) / "envs" / f"{env_key(str(real))}.json").read_text())
    assert record["entries"] and record["site_dirs"] == [str(real)]  # its own, not the link's
    target.unlink()  # the compatibility link is no longer needed
    assert freed(collect_json(world, grace=True)) == set()  # the old path: maybe moved
    later = collect_on_day(world, monkeypatch, 8)  # a week on: its grace is over
    assert intact(real), f"/data/target, alive and recorded there, lost {later.freed}"  # type: ignore[attr-defined]
    assert works(world, Path(sys.executable), "alpha", "1.0", real)


def test_a_project_moved_to_a_disk_and_linked_back_is_judged_gone_when_the_disk_is_out(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracked project moved to another disk and linked back (`mv ~/projects/proj
    /mnt/disk/proj; ln -s /mnt/disk/proj ~/projects/proj`). A collect folds the record
    onto the real path and `tidy_refs` records /mnt/disk/proj/.venv with the mount point
    of the *alias's* record (the home's filesystem), not of the disk. Unplug the disk:
    the env is judged gone from a mounted filesystem ("maybe moved") instead of unknown
    ("its filesystem /mnt/disk is not mounted", kept as long as it takes), so once the
    grace period is over its entries go; plugged back in, it is broken."""
    real, mnt = world.root / "real", world.root / "mnt"
    real.mkdir()
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(real), str(mnt)], check=False).returncode:
        pytest.skip("bind mounts are not allowed here")
    mounted = True
    try:
        a_dead_tracked_user(world, "alpha==1.0")
        proj = world.root / "projects" / "proj"
        env = world.venv("projects/proj/.venv")
        (proj / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
        install(world, env, "alpha==1.0")
        shutil.copytree(proj, mnt / "proj", symlinks=True)  # `mv` onto another disk
        shutil.rmtree(proj)
        proj.symlink_to(mnt / "proj")
        assert freed(collect_json(world, grace=True)) == set()
        from uvrefs.store.stamps import env_key

        moved = mnt / "proj" / ".venv"
        record = store_dir(world) / "envs" / f"{env_key(str(moved))}.json"
        assert json.loads(record.read_text())["mount"] == str(mnt)  # its own, not the alias's
        subprocess.run(["umount", str(mnt)], check=True)
        mounted = False
        assert freed(collect_json(world, grace=True)) == set()
        later = collect_on_day(world, monkeypatch, 8)  # the disk is out for a week
        subprocess.run(["mount", "--bind", str(real), str(mnt)], check=True)
        mounted = True
        assert intact(moved), f"an env on an unplugged disk lost {later.freed}"  # type: ignore[attr-defined]
        assert works(world, moved / "bin" / "python", "alpha", "1.0")
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


# ---------------------------------------------------------------- newer formats


def from_the_future(path: Path, doc: Mapping[str, object]) -> bytes:
    """`doc` as a newer uvrefs would write it at `path`: format 2, a field unknown here."""
    raw = json.dumps({**doc, "format": 2, "from_the_future": {"kept": True}}).encode()
    path.write_bytes(raw)
    return raw


def every_command(world: World, env: Path) -> None:
    """Every command that may write the store: dry run, status, envs, why, collect, a
    tracked install, adopt, watch add and remove, doctor --repair."""
    for args in (
        ("collect", "--dry-run"),
        ("status",),
        ("envs",),
        ("why", "alpha"),
        ("collect", "--min-age", "0"),
        ("adopt", str(env)),
        ("watch", "add", str(world.root)),
        ("watch", "remove", str(world.root / "projects")),
        ("doctor", "--repair"),
    ):
        done = world.uvrefs(*args, check=False)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    install(world, env, "gamma")


def test_a_stamp_a_newer_uvrefs_wrote_is_rewritten(world: World) -> None:
    """Stamps (`envs/<key>.stamp`) are the one store file with no `format` and no
    `NewerFile` check: `write_stamp` replaces whatever is there. A stamp a newer uvrefs
    wrote is rewritten by collect (tidy_refs), a tracked install, adopt... (Low stakes:
    a stamp only spares a scan; but it is a file a newer uvrefs wrote, rewritten.)"""
    from uvrefs.store.stamps import env_key

    env = world.venv("projects/env")
    install(world, env, "alpha==1.0")
    stamp = store_dir(world) / "envs" / f"{env_key(str(env))}.stamp"
    raw = from_the_future(stamp, {"fingerprint": "what a newer uvrefs keeps"})
    install(world, env, "beta", tracked=False)  # changed since: the next command rescans it
    every_command(world, env)
    assert stamp.read_bytes() == raw


# ---------------------------------------------------------------- records lost or overridden


@pytest.mark.parametrize("own_record", ["deleted", "newer"])
def test_a_planted_peer_record_overrides_an_unknown_env_of_ours(
    world: World, own_record: str
) -> None:
    """A `--target` dir whose record in our store was lost (or is of a newer format) is
    unknown and what it uses is held: only its record says where its packages live. Any
    local user can register a peer store (the registry is 1777) holding a record of the
    same path with this host's id and no site dirs. `Roots.add` lets a record replace a
    root that has none -- and an unknown root of ours has none -- so the target dir is
    scanned as a venv by the planted record's word, uses nothing, and alpha, which our
    own referrer names, is "no longer used" and freed."""
    from tests.test_attack import plant_peer
    from uvrefs.store.refs import host_id
    from uvrefs.store.stamps import env_key

    target = target_install(world)
    record = store_dir(world) / "envs" / f"{env_key(str(target))}.json"
    if own_record == "deleted":
        record.unlink()
    else:
        from_the_future(record, json.loads(record.read_text()))
    peer = plant_peer(world)
    (peer / "envs" / f"{env_key(str(target))}.json").write_text(
        json.dumps(
            {
                "format": 1,
                "path": str(target),
                "host": host_id(),
                "site_dirs": [],
                "mount": "/",
                "command": "install",
                "recorded_at": "2026-01-01T00:00:00Z",
                "entries": [],
            }
        )
    )
    result = collect_json(world, check=False)
    assert intact(target), f"freed what an unknown env of ours uses: {freed(result)}"


# ---------------------------------------------------------------- permissions (unprivileged)


def test_a_watched_directory_the_collector_cannot_list_hides_every_env_in_it(
    open_world: World,
) -> None:
    """A directory below a searched one that cannot be listed blocks every free ("an env
    there would be invisible") -- but not the searched directory itself: `_walk` drops an
    unlistable top silently (`if current != top.path`). A shared `/srv/projects` (mode
    0711: members traverse it, no one else lists it) is watched; a project in it, made
    with plain uv, uses alpha. `watch add` says "0 environments found" (no error), and
    every collect frees alpha: the env was never seen."""
    from tests.conftest import as_nobody

    world = open_world
    a_dead_tracked_user(world, "alpha==1.0")
    projects = world.root / "srv" / "shared" / "projects"  # below what any holder searches
    projects.mkdir(parents=True)
    watched = as_nobody(world, "watch", "add", str(projects))  # listable then: watched
    assert watched.returncode == 0, watched.stderr
    env = world.venv("srv/shared/projects/proj/.venv")  # made since, with plain uv
    install(world, env, "alpha==1.0", tracked=False)
    projects.chmod(0o711)  # and made private: no one else lists it now
    added = as_nobody(world, "watch", "add", str(projects))  # refused now, in one line
    assert added.returncode == 2 and "cannot list" in added.stderr, added.stderr
    done = as_nobody(world, "collect", "--min-age", "0", "--json")
    assert "alpha 1.0" not in freed(json.loads(done.stdout)), (added.stdout, done.stderr)
    assert done.returncode == 1 and "cannot be listed" in done.stderr, done.stderr
    assert intact(env)


# ---------------------------------------------------------------- defended (these pass)


def test_defended_store_files_a_newer_uvrefs_wrote_are_left_byte_for_byte(world: World) -> None:
    """watch.json, holders.json, peers.json, settings.json, dead-since.json, sizes.json,
    store.json, an env record and a refs file, each of format 2 with a field this version
    does not know, through every command that writes the store: none is rewritten or
    deleted, and what the refs file and the record hold stays (the record's env deleted)."""
    from uvrefs.store.stamps import env_key

    env = world.venv("projects/env")
    install(world, env, "alpha==1.0")
    gone = world.venv("projects/gone")
    install(world, gone, "beta")
    a_dead_tracked_user(world, "alpha==2.0")
    store = store_dir(world)
    (Path(world.env["XDG_DATA_HOME"]) / "uv" / "tools").mkdir(parents=True)  # a setting to add
    files = {
        store / name: from_the_future(store / name, doc)
        for name, doc in (
            ("watch.json", {"dirs": [str(world.root / "projects")]}),
            ("holders.json", {"dirs": ["/nonexistent-holder"]}),
            ("peers.json", {"stores": []}),
            ("settings.json", {"tool_dirs": [], "python_dirs": []}),
            ("dead-since.json", {"dead_since": {}}),
            ("sizes.json", {"archives": {}}),
            ("store.json", {"cache": str(world.cache)}),
        )
    }
    record = store / "envs" / f"{env_key(str(gone))}.json"
    files[record] = from_the_future(record, json.loads(record.read_text()))
    (entry,) = world.archive_of("alpha", "1.0")
    refs = store / "refs" / f"{entry}.refs"
    files[refs] = from_the_future(refs, json.loads(refs.read_text()))
    beta = world.archive_of("beta", "1.0")
    shutil.rmtree(gone)
    every_command(world, env)
    changed = [p.name for p, raw in files.items() if not p.exists() or p.read_bytes() != raw]
    assert changed == []
    assert world.archive_of("alpha", "1.0") == {entry} and world.archive_of("beta", "1.0") == beta
    assert intact(env)


def test_defended_a_moved_env_keeps_its_grace_through_every_other_command(world: World) -> None:
    """A tracked symlink-mode project moved out of sight, then: collect, a dry run with
    `--min-age 0`, status, why, envs, doctor --repair, a tracked install elsewhere, watch
    add and remove of another directory, and collect again. Its entries stay (graced),
    and so do its record and referrers (what holds them through the grace period)."""
    from uvrefs.store.stamps import env_key

    proj = world.root / "projects" / "proj"
    env = world.venv("projects/proj/.venv")
    (proj / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    install(world, env, "alpha==1.0")
    (entry,) = world.archive_of("alpha", "1.0")
    store = store_dir(world)
    record = store / "envs" / f"{env_key(str(env))}.json"
    refs = store / "refs" / f"{entry}.refs"
    elsewhere = world.root / "elsewhere" / "deeper" / "still"
    elsewhere.mkdir(parents=True)
    proj.rename(elsewhere / "proj")
    moved = elsewhere / "proj" / ".venv"
    other = world.root / "other"
    other.mkdir()
    for step in (
        ("collect",),
        ("collect", "--dry-run", "--min-age", "0"),
        ("status",),
        ("why", "alpha"),
        ("envs",),
        ("doctor", "--repair"),
        ("watch", "add", str(other)),
        ("watch", "remove", str(other)),
        ("collect",),
    ):
        done = world.uvrefs(*step, check=False)
        assert "Traceback" not in done.stderr, (step, done.stderr)
        assert record.is_file() and str(env) in refs.read_text(), step
        assert world.archive_of("alpha", "1.0") == {entry}, step
        if step == ("doctor", "--repair"):
            install(world, world.venv("elsewhere-env"), "beta")
    assert intact(moved) and works(world, moved / "bin" / "python", "alpha", "1.0")


def test_defended_changes_the_sweep_sees_again_under_the_lock(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While collect waits for uv's lock, under a watched directory whose listings were
    trusted at planning: a filesystem is bind-mounted on an empty directory (its parent's
    mtime does not change, but the mount point's identity does), an env appears in the
    target of a symlinked directory (the target's mtime changes), and an env appears
    three levels below an unchanged directory. Each uses an entry a deleted tracked env
    used; the sweep finds all three."""
    a_dead_tracked_user(world, "alpha==1.0", "beta", "plat")
    watched = world.root / "watched"
    (watched / "mnt").mkdir(parents=True)
    (watched / "a" / "b").mkdir(parents=True)
    (world.root / "data").mkdir()
    (watched / "link").symlink_to(world.root / "data")
    world.uvrefs("watch", "add", watched)
    backdate(watched, world.root / "data")
    real = world.root / "real"
    mounted: list[Path] = []

    def meanwhile() -> None:
        env = world.venv("real/proj/.venv")
        install(world, env, "alpha==1.0", tracked=False)
        bind = ["mount", "--bind", str(real), str(watched / "mnt")]
        if subprocess.run(bind, check=False).returncode:
            pytest.skip("bind mounts are not allowed here")
        mounted.append(watched / "mnt")
        install(world, world.venv("data/proj/.venv"), "beta", tracked=False)
        install(world, world.venv("watched/a/b/c/.venv"), "plat", tracked=False)

    try:
        result = in_process_collect(world, monkeypatch, meanwhile)
        assert result.freed == ()  # type: ignore[attr-defined]
        for env in (
            watched / "mnt/proj/.venv",
            watched / "link/proj/.venv",
            watched / "a/b/c/.venv",
        ):
            assert intact(env), env
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], check=False)


def test_defended_fifos_under_a_watched_directory_never_hang(world: World) -> None:
    """A FIFO as a project's `.venv` (read as a redirect file), a `.venv` link to a FIFO,
    and a FIFO as `pyvenv.cfg`, under a watched directory: collect, status, envs, why and
    watch add finish, with no traceback."""
    from tests.test_attack import run_with_timeout

    install(world, world.venv("live"), "alpha==1.0")
    watched = world.root / "watched"
    for name in ("p1", "p2", "p3"):
        (watched / name).mkdir(parents=True)
        (watched / name / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    os.mkfifo(watched / "p1" / ".venv")
    os.mkfifo(watched / "fifo")
    (watched / "p2" / ".venv").symlink_to(watched / "fifo")
    (watched / "p3" / ".venv").mkdir()
    os.mkfifo(watched / "p3" / ".venv" / "pyvenv.cfg")
    centralized = {"UV_PREVIEW_FEATURES": "centralized-project-envs,venv-redirect-files"}
    world.env.update(centralized)
    for args in (
        ("watch", "add", str(watched)),
        ("collect", "--min-age", "0"),
        ("status",),
        ("envs",),
        ("why", "alpha"),
    ):
        done = run_with_timeout(world, *args, timeout=30)
        assert done is not None, f"{args} hung"
        assert "Traceback" not in done.stderr, (args, done.stderr)


def test_defended_an_env_found_under_a_watched_dir_stays_a_root_after_watch_remove(
    world: World,
) -> None:
    """`watch remove` says "environments found there stay tracked": a plain-uv env found
    by `watch add` (tracked at once), the directory no longer watched, is still a root."""
    a_dead_tracked_user(world, "alpha==1.0")
    watched = world.root / "srv" / "deep" / "watched"  # below what any holder searches
    env = world.venv("srv/deep/watched/a/b/.venv")
    install(world, env, "alpha==1.0", tracked=False)
    world.uvrefs("watch", "add", watched)
    world.uvrefs("watch", "remove", watched)
    assert freed(collect_json(world)) == set()
    assert intact(env)
