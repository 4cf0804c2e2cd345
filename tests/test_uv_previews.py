"""uv's next cache layouts (uv 0.13.9 preview features), each alone and all together: the
seed, upgrade, local-wheel and project scenarios in symlink mode (where a wrong free
breaks an env), with bytes freed checked against `uv cache size`, the living envs
reinstalled `--offline`, and `uv cache prune` afterwards finding nothing we left."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NO_GRACE, World, collect_json, make_world
from tests.test_uv_versions import FOUND as RELEASES

FEATURES = [
    "content-addressed-cache",
    "centralized-project-envs",
    "venv-redirect-files",
    "relocatable-envs-default",
    "content-addressed-cache,centralized-project-envs,venv-redirect-files,relocatable-envs-default",
]
IDS = ["cac", "centralized", "redirect", "relocatable", "all"]


def preview(world: World, features: str, mode: str = "symlink") -> dict[str, str]:
    """Every uv and uvrefs command of the test runs with these features on."""
    world.env.update(UV_PREVIEW_FEATURES=features, UV_LINK_MODE=mode)
    return {}


# Every scenario here deletes envs made in symlink mode and checks what goes: such an env
# gone from its path may have moved (links and all), so by default what only it used waits
# a grace period; these collects ask for no wait (as `collect_json` does).
NOW = NO_GRACE


def cache_size(world: World) -> int:
    out = world.uv("cache", "size", "--preview-features", "cache-size").stdout
    return int(out.split()[0])


def other_python(world: World) -> str:
    """A second interpreter (another minor version: uv's or pyenv's) if there is one,
    else this one."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for version in ("3.12", "3.11", "3.10", "3.13", "3.9"):
        if version == here:
            continue
        found = world.uv("python", "find", "--no-python-downloads", version, check=False)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip()
        for python in sorted(pyenv.glob(f"{version}.*/bin/python{version}")):
            return str(python)
    return sys.executable


def venv(world: World, name: str, python: str = sys.executable) -> Path:
    path = world.root / name
    world.uv("venv", "-q", "--python", python, path)
    return path


def project(world: World, where: str, *deps: str) -> Path:
    """A project at `where` (below the test's root), named after its directory."""
    path = world.root / where
    path.mkdir(parents=True)
    quoted = ", ".join(f'"{d}"' for d in deps)
    (path / "pyproject.toml").write_text(
        f'[project]\nname = "{path.name}"\nversion = "0.1"\nrequires-python = ">=3.8"\n'
        f"dependencies = [{quoted}]\n[tool.uv]\npackage = false\n"
    )
    return path


def sync(world: World, proj: Path, tracked: bool) -> None:
    args = ["sync", "-q", "-p", sys.executable, *world.offline()]
    if tracked:
        world.uvrefs("uv", *args, cwd=proj)
    else:
        world.uv(*args, cwd=proj)


def env_of(proj: Path) -> Path:
    return Path(os.path.realpath(proj / ".venv"))


def imports(world: World, env: Path, code: str) -> None:
    world.run(env / "bin" / "python", "-c", code)


def collect_measured(world: World) -> dict[str, Any]:
    """A collect, with what it says it freed checked against `uv cache size`."""
    before = cache_size(world)
    done = collect_json(world)
    assert done["errors"] == [], done["errors"]
    assert done["bytes_freed"] == before - cache_size(world), done
    return done


def nothing_for_prune(world: World) -> None:
    """`uv cache prune` finds no archive or blob we left unreferenced, and nothing of
    uvrefs's (its store registry lives where prune keeps it): it removes none (uv's own
    cached environments apart, which it always removes)."""
    blobs = sorted(str(p) for p in world.cache.glob("files-v*/*/*"))
    archives = world.archives()
    # Nor a directory we emptied: prune removes empty fan-out directories of `files-v0`
    # ("Removed 7 directories", after a collect that left them).
    emptied = [d for d in world.cache.glob("files-v*/*") if d.is_dir() and not any(d.iterdir())]
    assert emptied == [], emptied
    pruned = world.uv("cache", "prune", "-v")
    removed = [
        line
        for line in pruned.stderr.splitlines()
        if "Removing" in line and "cached environment" not in line
    ]
    assert removed == []
    assert world.archives() == archives
    assert sorted(str(p) for p in world.cache.glob("files-v*/*/*")) == blobs


@pytest.mark.parametrize("features", FEATURES, ids=IDS)
def test_seed_two_pythons_delete_one_env(world: World, features: str) -> None:
    preview(world, features)
    live, dead = venv(world, "live"), venv(world, "dead", other_python(world))
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "beta", "plat")
    dead_only = world.archive_of("alpha", "1.0") | world.archive_of("plat", "1.0")
    keep = world.archive_of("alpha", "2.0") | world.archive_of("beta", "1.0")
    shutil.rmtree(dead)

    done = collect_measured(world)

    assert {d["entry"] for d in done["freed"]} == dead_only
    assert world.archives() == keep
    imports(world, live, "import alpha, beta; assert alpha.__version__ == '2.0'")
    world.reinstalls_offline(live, "alpha==2.0", "beta")
    imports(world, live, "import alpha, beta")
    nothing_for_prune(world)


@pytest.mark.parametrize("features", FEATURES, ids=IDS)
def test_upgrade_frees_the_old_version(world: World, features: str) -> None:
    preview(world, features)
    env = venv(world, "env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0", "beta")
    old = world.archive_of("alpha", "1.0")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==2.0")

    done = collect_measured(world)

    assert {d["entry"] for d in done["freed"]} == old
    imports(world, env, "import alpha, beta; assert alpha.__version__ == '2.0'")
    world.reinstalls_offline(env, "alpha==2.0", "beta")
    nothing_for_prune(world)


@pytest.mark.parametrize("features", FEATURES, ids=IDS)
def test_local_wheel_goes_with_its_pointers(world: World, features: str) -> None:
    """uv cannot reinstall a local wheel whose archive went without its pointer: the
    pointer goes first, then the archive; a new env installs the same wheel again."""
    preview(world, features)
    wheel = next(world.wheels.glob("tooly-1.0-*.whl"))
    keep, dead = venv(world, "keep"), venv(world, "dead")
    world.uvrefs("install", "-q", "-p", keep, *world.offline(), "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), wheel)
    shutil.rmtree(dead)

    done = collect_measured(world)

    assert {d["dist"] for d in done["freed"]} == {"tooly"}
    assert world.dangling_pointers() == []
    again = venv(world, "again")
    world.uvrefs("install", "-q", "-p", again, *world.offline(), "--offline", wheel)
    imports(world, again, "import tooly")
    imports(world, keep, "import beta")
    nothing_for_prune(world)


@pytest.mark.parametrize("features", FEATURES, ids=IDS)
def test_a_deleted_project_frees_its_environment(world: World, features: str) -> None:
    """Project A synced through uvrefs, project B with plain uv (never seen by uvrefs).
    Deleting A frees its environment (in uv's cache, under centralized-project-envs) and
    what only it used; B keeps working whatever the layout."""
    preview(world, features)
    a = project(world, "proj-a", "alpha==3.0", "beta")
    b = project(world, "proj-b", "alpha==1.0", "beta")
    sync(world, a, tracked=True)
    sync(world, b, tracked=False)
    a_env, b_env = env_of(a), env_of(b)
    centralized = "centralized" in features
    assert world.cache in a_env.parents if centralized else a_env == a / ".venv"
    only_a = world.archive_of("alpha", "3.0")
    shutil.rmtree(a)

    done = collect_measured(world)

    assert {d["entry"] for d in done["freed"]} == only_a
    assert not a_env.exists()
    if centralized:
        assert [e["path"] for e in done["project_envs"]] == [str(a_env)]
        assert "proj-a no longer exists" in done["project_envs"][0]["reason"]
    imports(world, b_env, "import alpha, beta; assert alpha.__version__ == '1.0'")
    world.uv("sync", "-q", "--offline", "-p", sys.executable, *world.offline(), cwd=b)
    imports(world, b_env, "import alpha, beta")
    nothing_for_prune(world)


def test_a_project_synced_again_with_another_python_frees_its_old_environment(
    world: World,
) -> None:
    """centralized-project-envs: one environment per project and interpreter; when the
    project's `.venv` now leads to another one, the old one is dead."""
    preview(world, "centralized-project-envs")
    proj = project(world, "proj", "alpha==2.0")
    sync(world, proj, tracked=True)
    first = env_of(proj)
    other = other_python(world)
    if os.path.realpath(other) == os.path.realpath(sys.executable):
        pytest.skip("a second interpreter is needed")
    world.uvrefs("uv", "sync", "-q", "-p", other, *world.offline(), cwd=proj)
    assert env_of(proj) != first

    done = collect_measured(world)

    assert [e["path"] for e in done["project_envs"]] == [str(first)]
    assert "now uses" in done["project_envs"][0]["reason"]
    assert not first.exists()
    imports(world, env_of(proj), "import alpha")


def test_a_centralized_env_of_a_project_never_seen_is_a_root(world: World) -> None:
    """A project synced with plain uv: its environment in the cache is a root (uvrefs did
    not see it made and knows no project of it), so nothing it uses is freed."""
    preview(world, "centralized-project-envs")
    gone = venv(world, "gone")
    world.uvrefs("install", "-q", "-p", gone, *world.offline(), "alpha==1.0", "beta")
    proj = project(world, "proj", "alpha==1.0", "beta")
    sync(world, proj, tracked=False)
    shutil.rmtree(gone)

    done = collect_json(world)

    assert done["freed"] == [] and done["project_envs"] == []
    states = {d["dist"]: d["state"] for d in done["kept"]}
    assert states == {"alpha": "live", "beta": "live"}
    imports(world, env_of(proj), "import alpha, beta")


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_content_addressed_cache_in_each_link_mode(world: World, mode: str) -> None:
    """A blob's link and other archives' links are the cache's own, not uses: dead
    archives go (with the blobs only they linked), and in hardlink mode an env plain uv
    made and uvrefs cannot see still holds what it links."""
    preview(world, "content-addressed-cache", mode)
    # Deeper than the holders of tracked envs are searched: uvrefs cannot see it.
    live, dead, hidden = venv(world, "live"), venv(world, "dead"), world.root / "a/b/c/hidden"
    hidden.parent.mkdir(parents=True)
    world.uv("venv", "-q", "--python", sys.executable, hidden)
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "beta", "plat")
    world.uv("pip", "install", "-q", "-p", hidden, *world.offline(), "plat")
    assert list(world.cache.glob("files-v*/*/*")), "uv wrote no content-addressed blobs"
    shutil.rmtree(dead)

    done = collect_measured(world)

    freed = {d["dist"] for d in done["freed"]}
    kept = {d["dist"]: d for d in done["kept"]}
    if mode == "hardlink":  # plat's files are hard-linked from the hidden env
        assert freed == {"alpha"} and kept["plat"]["state"] == "held"
    else:
        assert freed == {"alpha", "plat"}
    assert not [p for p in world.cache.glob("files-v*/*/*") if p.stat().st_nlink == 1]
    imports(world, live, "import alpha, beta")
    nothing_for_prune(world)


def test_unlinked_blobs_left_by_a_killed_collect_are_freed_next_time(world: World) -> None:
    """Killed after deleting its trash and before removing the blobs, a collect leaves
    blobs no archive links: the next collect removes them under uv's lock and says so."""
    preview(world, "content-addressed-cache")
    env = venv(world, "env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0", "beta")
    archive = world.cache / "archive-v0" / next(iter(world.archive_of("alpha", "1.0")))
    orphaned = [p for p in archive.rglob("*") if p.is_file() and p.stat().st_nlink == 2]
    assert orphaned
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==2.0")
    # What a killed collect leaves: the archive and its pointer gone, its blobs not.
    for pointer in world.cache.glob("wheels-v*/**/1.0-py3-none-any*"):
        if "alpha" in str(pointer):
            pointer.unlink()
    shutil.rmtree(archive)
    lonely = [p for p in world.cache.glob("files-v*/*/*") if p.stat().st_nlink == 1]
    assert lonely

    done = collect_measured(world)

    assert done["content_blobs"]["count"] == len(lonely)
    assert not [p for p in world.cache.glob("files-v*/*/*") if p.stat().st_nlink == 1]
    imports(world, env, "import alpha, beta")


def test_a_redirect_file_is_followed_when_recording(world: World) -> None:
    """venv-redirect-files: a project's `.venv` may be a file naming the env; the env it
    names is recorded (it was 'not recorded: Not a directory')."""
    preview(world, "venv-redirect-files")
    target = venv(world, "elsewhere")
    proj = project(world, "proj", "alpha==1.0")
    (proj / ".venv").write_text(str(target) + "\n")
    done = world.uvrefs("uv", "sync", "-q", "-p", sys.executable, *world.offline(), cwd=proj)
    assert "not recorded" not in done.stderr
    envs = world.uvrefs("envs", "--json").stdout
    assert str(target) in {e["path"] for e in json.loads(envs)["envs"]}


def test_doctor_names_buckets_of_the_new_layouts(world: World) -> None:
    preview(world, "content-addressed-cache,centralized-project-envs")
    env = venv(world, "env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "beta")
    proj = project(world, "proj", "beta")
    sync(world, proj, tracked=False)
    checks = json.loads(world.uvrefs("doctor", "--json", check=False).stdout)["checks"]
    detail = {c["name"]: c for c in checks}["uv preview layouts"]["detail"]
    assert "files-v0" in detail and "environments-v2" in detail
    assert "frees nothing" not in detail


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_a_project_synced_with_plain_uv_and_seen_once_is_freed_when_deleted(
    world: World, mode: str
) -> None:
    """centralized-project-envs: a project uvrefs never saw synced (plain uv), next to a
    tracked env so its directory is watched. A collect finds its `.venv` link and records
    it; once the project is deleted, its environment and what only it used are freed, and
    the dry run says beforehand exactly what the collect then frees."""
    preview(world, "centralized-project-envs", mode)
    live = venv(world, "live")
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "beta")
    proj = project(world, "plain", "alpha==3.0", "beta")
    sync(world, proj, tracked=False)
    env = env_of(proj)
    assert world.cache in env.parents
    first = collect_json(world)
    assert first["freed"] == [] and first["project_envs"] == []
    only_it = world.archive_of("alpha", "3.0")
    shutil.rmtree(proj)

    dry = collect_json(world, "--dry-run")
    done = collect_measured(world)

    assert [e["path"] for e in done["project_envs"]] == [str(env)]
    assert {d["entry"] for d in done["freed"]} == only_it
    assert not env.exists()
    assert dry["bytes_freed"] == done["bytes_freed"], (dry, done)
    imports(world, live, "import beta")
    world.reinstalls_offline(live, "beta")
    nothing_for_prune(world)


def test_a_project_env_killed_mid_sweep_is_never_left_broken(world: World) -> None:
    """Killed at every step of a sweep that frees a dead project's environment in uv's
    cache (symlink mode): no environment is ever left in place linking an archive that
    went, and the next collect finishes the job."""
    preview(world, "centralized-project-envs")
    steps = 0
    while True:
        steps += 1
        proj = project(world, f"p{steps}", "alpha==3.0")
        sync(world, proj, tracked=True)
        env = env_of(proj)
        shutil.rmtree(proj)
        killed = world.uvrefs(
            "collect", *NOW, check=False, extra_env={"UVREFS_TEST_KILL_AT": str(steps)}
        )
        if killed.returncode == 0:  # ran to the end: no more kill points
            break
        if env.exists():  # whole: every file it links is still there
            dangling = [p for p in env.rglob("*") if p.is_symlink() and not p.exists()]
            assert dangling == [], f"killed at step {steps}: {dangling[:3]}"
        assert world.dangling_pointers() == []
        world.uvrefs("collect", *NOW)
        assert not env.exists()
    assert steps > 2


@pytest.mark.parametrize("features", ["content-addressed-cache", FEATURES[-1]], ids=["cac", "all"])
def test_status_splits_a_content_addressed_cache_by_archive(world: World, features: str) -> None:
    """status under content-addressed-cache: an archive's blobs are its bytes (they were all
    uv's own), the parts add up to `uv cache size`, and dead is what the collect frees (in
    copy mode: a symlink-mode env gone from its path would wait a grace period)."""
    preview(world, features, "copy")
    live, dead = venv(world, "live"), venv(world, "dead")
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "big", "gamma")
    shutil.rmtree(dead)

    out = json.loads(world.uvrefs("status", "--json").stdout)

    assert out["total_bytes"] == cache_size(world)
    parts = ("live", "dead", "held", "untracked")
    assert sum(out[p]["bytes"] for p in parts) + out["uv_own_bytes"] == out["total_bytes"]
    assert out["live"]["entries"] == 2 and out["live"]["bytes"] > 0
    assert out["dead"]["entries"] == 3 and out["dead"]["bytes"] > 2**20
    assert out["uv_own_bytes"] < out["dead"]["bytes"]
    freed = collect_measured(world)["bytes_freed"]
    assert freed == out["dead"]["frees_bytes"]


@pytest.mark.skipif(not RELEASES, reason="no uv releases fetched (make test fetches them)")
@pytest.mark.parametrize("uv_bin", RELEASES, ids=[p.parent.name for p in RELEASES])
def test_every_preview_on_uv_release(uv_bin: Path, tmp_path: Path, wheelhouse: Path) -> None:
    """The version matrix: a dead venv and a deleted project with every cache preview the
    release knows on (0.11.33 and 0.13.8 know all four; 0.9.30 refuses all but
    relocatable-envs-default)."""
    world = make_world(tmp_path, wheelhouse, str(uv_bin))
    known = [
        f
        for f in FEATURES[-1].split(",")
        if world.run(uv_bin, "--preview-features", f, "--version", check=False).returncode == 0
    ]
    preview(world, ",".join(known))  # 0.9.30 knows only relocatable-envs-default
    live, dead = venv(world, "live"), venv(world, "dead")
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "plat")
    a = project(world, "proj-a", "alpha==3.0", "beta")
    sync(world, a, tracked=True)
    a_env = env_of(a)
    assert (world.cache in a_env.parents) == ("centralized-project-envs" in known)
    gone = world.archive_of("alpha", "1.0") | world.archive_of("plat", "1.0")
    gone |= world.archive_of("alpha", "3.0")
    shutil.rmtree(dead)
    shutil.rmtree(a)

    done = collect_measured(world)

    assert {d["entry"] for d in done["freed"]} == gone
    assert not a_env.exists()
    imports(world, live, "import alpha, beta; assert alpha.__version__ == '2.0'")
    world.reinstalls_offline(live, "alpha==2.0", "beta")
    nothing_for_prune(world)


def test_a_project_env_named_directly_is_not_its_own_project(world: World) -> None:
    """`uvrefs install -p <the env in uv's cache>` records no project link (the env itself
    would then be its own project, alive forever): deleting the project still frees it."""
    preview(world, "centralized-project-envs")
    proj = project(world, "proj", "alpha==3.0")
    sync(world, proj, tracked=True)
    env = env_of(proj)
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "beta")
    shutil.rmtree(proj)

    done = collect_json(world)

    assert [e["path"] for e in done["project_envs"]] == [str(env)]
    assert not env.exists()


def test_a_script_env_in_uv_cache_is_a_cached_env_not_a_project_env(world: World) -> None:
    """uv keeps a script's environment as a real directory in `environments-v2`, named
    `<script>-<digest>` (no Python version, unlike a project's): a root while it exists,
    called uv's cached environment, never 'whose project is not known'."""
    preview(world, "centralized-project-envs")
    gone = venv(world, "gone")
    world.uvrefs("install", "-q", "-p", gone, *world.offline(), "alpha==1.0")
    script = world.root / "s.py"
    script.write_text('# /// script\n# dependencies = ["alpha==1.0"]\n# ///\nimport alpha\n')
    world.uv("run", "-q", *world.offline(), "-p", sys.executable, "--script", script)
    [env] = [p for p in world.cache.glob("environments-v*/*") if (p / "pyvenv.cfg").is_file()]
    shutil.rmtree(gone)

    done = collect_json(world)

    assert done["freed"] == [] and done["project_envs"] == []
    [kept] = [d for d in done["kept"] if d["dist"] == "alpha"]
    assert kept["state"] == "live" and "uv's cached environment" in kept["reason"], kept
    envs = {e["path"]: e for e in json.loads(world.uvrefs("envs", "--json").stdout)["envs"]}
    assert envs[str(env)]["kind"] == "uv-cached", envs[str(env)]
    world.run(env / "bin" / "python", "-c", "import alpha")


def test_a_project_reached_through_a_symlinked_directory_keeps_its_env(world: World) -> None:
    """Synced through a symlinked directory that is later removed: the project is where it
    really is, and its environment stays (it was freed as 'no longer exists')."""
    preview(world, "centralized-project-envs")
    proj = project(world, "real/proj", "alpha==1.0")
    (world.root / "lnk").symlink_to(proj.parent)
    via = world.root / "lnk" / "proj"
    world.uvrefs("uv", "sync", "-q", "--project", via, "-p", sys.executable, *world.offline())
    env = env_of(proj)
    (world.root / "lnk").unlink()

    done = collect_json(world)

    assert done["project_envs"] == [] and done["freed"] == []
    imports(world, env, "import alpha")
    world.run(proj / ".venv" / "bin" / "python", "-c", "import alpha")


def test_an_alias_of_a_project_env_is_not_its_project(world: World) -> None:
    """A symlink to a project's environment used with a tracked command is no project of
    it: removing the alias frees nothing (the env, made by plain uv in a directory nobody
    watches, stays a root)."""
    preview(world, "centralized-project-envs")
    proj = project(world, "x/y/z/proj", "alpha==1.0")
    sync(world, proj, tracked=False)
    env = env_of(proj)
    aliases = world.root / "aliases"
    aliases.mkdir()
    (aliases / "myenv").symlink_to(env)
    world.uvrefs("uv", "pip", "install", "-q", "-p", aliases / "myenv", *world.offline(), "gamma")
    (aliases / "myenv").unlink()

    done = collect_json(world)

    assert done["project_envs"] == [] and done["freed"] == []
    imports(world, env, "import alpha, gamma")


def test_a_redirect_file_is_read_as_uv_reads_it(world: World) -> None:
    """venv-redirect-files: uv takes the text as the path (no `~` expansion), relative to
    the project; uvrefs records the environment uv used, not `$HOME/...`."""
    preview(world, "venv-redirect-files")
    proj = project(world, "proj", "alpha==1.0")
    literal = venv(world, "proj/~/tenv")
    home = Path(world.env["HOME"]) / "tenv"
    world.uv("venv", "-q", "--python", sys.executable, home)
    (proj / ".venv").write_text("~/tenv\n")
    world.uvrefs("uv", "sync", "-q", "-p", sys.executable, *world.offline(), cwd=proj)
    assert (literal / "bin").is_dir()
    envs = {e["path"] for e in json.loads(world.uvrefs("envs", "--json").stdout)["envs"]}
    assert str(literal) in envs and str(home) not in envs


def test_a_project_env_made_while_collect_plans_is_a_root(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """centralized-project-envs: a project synced with plain uv between planning and the
    sweep (while collect waits for uv's lock) makes an environment in uv's cache that
    links a candidate: the sweep marks it as a root and keeps the candidate (symlink mode,
    so a wrong free breaks the import). Found by an attack."""
    from tests.test_attack import in_process_collect

    preview(world, "centralized-project-envs")
    dead = venv(world, "dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0")
    shutil.rmtree(dead)
    proj = project(world, "far/away/p3", "alpha==1.0")

    result = in_process_collect(world, monkeypatch, lambda: sync(world, proj, tracked=False))

    assert "alpha" not in {d.dist for d in result.freed}  # type: ignore[attr-defined]
    imports(world, env_of(proj), "import alpha")


def test_a_fifo_planted_in_a_cache_env_hangs_nothing(world: World) -> None:
    """A FIFO as `direct_url.json` in a project environment in uv's cache: collect, its
    dry run and status read it without waiting (they hung; found by an attack)."""
    from tests.conftest import run_bounded

    preview(world, "centralized-project-envs")
    proj = project(world, "proj", "alpha==1.0")
    sync(world, proj, tracked=True)
    [info] = env_of(proj).glob("lib/python*/site-packages/alpha-1.0.dist-info")
    os.mkfifo(info / "direct_url.json")
    for args in (["collect", "--dry-run"], ["status"], ["collect"]):
        done = run_bounded([sys.executable, "-m", "uvrefs", *args], world.env, world.root, 60)
        assert done.quiet_failure() is None and done.code == 0, done
    imports(world, env_of(proj), "import alpha")


def test_a_dry_run_counts_blobs_that_only_going_archives_share(
    world: World, tmp_path: Path
) -> None:
    """content-addressed-cache: three dead packages share one 20 KB file (one blob, linked
    from three archives). No archive frees it alone, all three together do: the dry run
    says what the collect then frees (it said 20 KB less; found by an attack)."""
    from tests.wheels import build_wheel

    preview(world, "content-addressed-cache")
    shared = os.urandom(20_000)
    extra = tmp_path / "extra"
    extra.mkdir()
    for name in ("sharea", "shareb", "sharec"):
        build_wheel(extra, name, "1.0", files={f"{name}/common.bin": shared})
    dead = venv(world, "dead")
    links = ["--find-links", str(extra)]
    world.uvrefs(
        "install", "-q", "-p", dead, *world.offline(), *links, "sharea", "shareb", "sharec"
    )
    shutil.rmtree(dead)

    dry = collect_json(world, "--dry-run")
    done = collect_measured(world)

    assert {d["dist"] for d in done["freed"]} == {"sharea", "shareb", "sharec"}
    assert dry["bytes_freed"] == done["bytes_freed"], (dry["bytes_freed"], done["bytes_freed"])
