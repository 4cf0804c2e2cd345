"""Mark from roots: an entry is live if any environment that can be found uses it.

Every case runs real uv in symlink link mode, where a wrongly freed entry breaks the env
(its files are links into the cache): each test ends by importing from the living envs.
Permission cases run the collector as an unprivileged user (root reads everything)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    SYMLINK,
    World,
    as_nobody,
    freed,
    install,
    registry_of,
    tracked_env_on_unmounted_bind_mount,
)
from tests.conftest import collect_json as collect


def imports(world: World, env: Path, *modules: str) -> None:
    """The env works: no installed file is a dangling link (a package whose files dangle
    still imports, as an empty namespace package), and its packages import."""
    site = next(env.glob("lib/python*/site-packages"))
    broken = [p for p in site.rglob("*") if p.is_symlink() and not p.exists()]
    assert not broken, f"{env}: {broken[:3]}"
    world.run(env / "bin/python", "-c", f"import {', '.join(modules)}")


def reasons(result: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {f"{d['dist']} {d['version']}": d["reason"] for d in result["kept"]}


def test_plain_uv_install_into_a_tracked_env_keeps_what_it_now_uses(world: World) -> None:
    """alpha 1.0's refs name only a deleted env; a living tracked env starts using it
    through plain uv. Its scan makes it live, though no refs file lists that env."""
    live, dead = world.venv("live"), world.venv("dead")
    install(world, live, "beta")
    install(world, dead, "alpha==1.0")
    shutil.rmtree(dead)
    install(world, live, "alpha==1.0", tracked=False)
    result = collect(world)
    assert freed(result) == set()
    assert reasons(result)["alpha 1.0"] == f"used by {live}"
    imports(world, live, "alpha", "beta")


def test_uv_cached_environments_are_roots(world: World) -> None:
    """`uv run --with` builds a cached env in the cache whose packages link to archives
    like any venv's: they stay while the cached env does."""
    dead = world.venv("dead")
    install(world, dead, "alpha==1.0", "beta")
    run = ["run", "-q", "--no-project", "--python", sys.executable, *world.offline()]
    run += ["--with", "alpha==1.0", "--with", "beta", "python", "-c"]
    code = "import alpha, beta; print(alpha.__version__)"
    world.uv(*run, code, extra_env=SYMLINK)
    shutil.rmtree(dead)
    result = collect(world)
    assert freed(result) == set()
    assert "uv's cached environment" in reasons(result)["alpha 1.0"]
    out = world.uv("--offline", *run, code)
    assert out.stdout.strip() == "1.0"
    # --untracked and --budget never take what a root uses either.
    result = collect(world, "--untracked", "--budget", "0")
    assert not {d["dist"] for d in result["freed"]} & {"alpha", "beta"}
    world.uv("--offline", *run, code)


def test_env_tracked_through_a_symlink_is_known_by_its_real_path(world: World) -> None:
    real = world.root / "real"
    real.mkdir()
    link = world.root / "link"
    link.symlink_to(real)
    env = world.venv("link/env")
    install(world, env, "alpha==1.0")
    link.unlink()
    result = collect(world)
    assert freed(result) == set()
    assert reasons(result)["alpha 1.0"] == f"used by {real / 'env'}"
    imports(world, real / "env", "alpha")


def test_a_renamed_project_is_followed(world: World) -> None:
    """A project renamed with `mv` is found again in the directory that held it (watched
    by default), and the old path is said to have moved there."""
    projects = world.root / "src"
    env = world.venv("src/proj/.venv")
    (projects / "proj" / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\n')
    install(world, env, "alpha==1.0")
    (projects / "proj").rename(projects / "renamed")
    moved = projects / "renamed" / ".venv"
    assert f"{env} moved to {moved}" in world.uvrefs("why", "alpha").stdout
    result = collect(world)
    assert freed(result) == set()
    assert reasons(result)["alpha 1.0"] == f"used by {moved} (discovered)"
    assert f"used by {moved}" in world.uvrefs("why", "alpha").stdout
    # The renamed env is tracked from now on: delete it and its entries go.
    shutil.rmtree(projects / "renamed")
    assert freed(collect(world)) == {"alpha 1.0"}


def test_an_env_the_collector_cannot_read_keeps_its_entries(open_world: World) -> None:
    """Run as an unprivileged user: an env (or its parent) it may not read is unknown,
    not empty, so what it used stays."""
    world = open_world
    shut, hidden, dead = world.venv("shut"), world.venv("private/env"), world.venv("dead")
    install(world, shut, "alpha==2.0", "beta")
    install(world, hidden, "alpha==3.0")
    install(world, dead, "alpha==1.0", "beta")
    shutil.rmtree(dead)
    shut.chmod(0o700)
    (world.root / "private").chmod(0o700)
    done = as_nobody(world, "collect", "--json", "--min-age", "0")
    unlisted = f"{world.root / 'private'}, under a watched directory, cannot be listed"
    # Said, once, with exit 1: nothing can be freed until that is fixed.
    assert done.returncode == 1 and done.stderr.count(unlisted) == 1, done.stderr
    result = json.loads(done.stdout)
    why = reasons(result)
    assert "Permission denied" in why["alpha 2.0"] and "Permission denied" in why["beta 1.0"]
    assert "Permission denied" in why["alpha 3.0"]
    # `private` cannot be listed, and it sits where environments are searched for: an env
    # in it would be invisible, so nothing is freed, not even the deleted env's alpha 1.0.
    assert freed(result) == set()
    assert unlisted in why["alpha 1.0"]
    imports(world, shut, "alpha", "beta")
    imports(world, hidden, "alpha")


def test_an_unmounted_bind_mount_on_the_same_filesystem_keeps(world: World) -> None:
    """`st_dev` cannot tell a bind mount of a directory on the same filesystem; the mount
    table can. Unmounted, the env is unknown, not gone."""
    tracked_env_on_unmounted_bind_mount(world)
    mnt = world.root / "mnt"
    result = collect(world)
    assert freed(result) == set()
    assert f"its filesystem {mnt} is not mounted" in reasons(result)["alpha 1.0"]


def test_an_env_recorded_in_another_mount_namespace_keeps(world: World) -> None:
    """An env made inside a container or mount namespace that shares the cache: its path
    means nothing here, so it is unknown, not gone."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    inner = world.root / "inner"
    inner.mkdir()
    script = (
        f"mount -t tmpfs none {inner} && "
        f"{world.uv_bin} venv -q --python {sys.executable} {inner}/env && "
        f"UV_LINK_MODE=symlink {sys.executable} -m uvrefs install -q -p {inner}/env "
        f"{' '.join(world.offline())} alpha==1.0"
    )
    done = world.run("unshare", "-m", "--propagation", "private", "sh", "-c", script, check=False)
    if done.returncode and "unshare failed" in done.stderr:
        pytest.skip(f"mount namespaces are not allowed here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result = collect(world)
    assert freed(result) == set()
    assert "another mount namespace" in reasons(result)["alpha 1.0"]


def test_every_refs_store_of_a_cache_is_read(world: World) -> None:
    """Two stores on one cache (two users, or two UVREFS_DIR values): a collect with
    either keeps what the other's living envs use, also after `uv cache prune` removed
    the registry in the cache (each store remembers the peers it saw)."""
    other = {"UVREFS_DIR": str(world.root / "state2")}
    live, dead = world.venv("a/live"), world.venv("b/dead")
    install(world, live, "beta", "alpha==2.0")
    install(world, dead, "beta", "alpha==1.0", extra_env=other)
    shutil.rmtree(dead)
    result = collect(world, "--dry-run", extra_env=other)
    assert freed(result) == {"alpha 1.0"}
    assert reasons(result)["beta 1.0"] == f"used by {live}"
    shutil.rmtree(registry_of(world))  # as `uv cache clean`, or an older uvrefs's after prune
    result = collect(world, extra_env=other)
    assert freed(result) == {"alpha 1.0"} and "beta 1.0" in reasons(result)
    imports(world, live, "alpha", "beta")


def test_a_peer_store_that_cannot_be_read_blocks_every_free(open_world: World) -> None:
    world = open_world
    theirs = world.root / "theirs"
    live, dead = world.venv("live"), world.venv("dead")
    install(world, live, "beta", extra_env={"UVREFS_DIR": str(theirs)})
    install(world, dead, "beta", "alpha==1.0")
    shutil.rmtree(dead)
    theirs.chmod(0o700)
    done = as_nobody(world, "collect", "--json", "--min-age", "0")
    # Said, once, with exit 1 (it said nothing, note null: issue 19).
    assert done.returncode == 1 and "nothing can be freed: the refs store" in done.stderr
    result = json.loads(done.stdout)
    assert freed(result) == set() and "cannot be read" in " ".join(result["warnings"])
    assert "cannot be read" in reasons(result)["alpha 1.0"]
    imports(world, live, "beta")


def write_project(path: Path, name: str) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "1.0"\n'
        '[build-system]\nrequires = ["tinybackend"]\nbuild-backend = "tinybackend"\n'
    )
    (path / name).mkdir()
    (path / name / "__init__.py").write_text("")
    return path


def test_build_backends_stay_while_a_living_env_builds_from_local_source(world: World) -> None:
    """tinybackend is charged to the first env whose build unpacked it; a second project
    built with it later adds no new archive. Deleting the first env must not take the
    backend the second still needs to rebuild offline."""
    first, second = world.venv("first"), world.venv("second")
    p1 = write_project(world.root / "p1", "pone")
    p2 = write_project(world.root / "p2", "ptwo")
    install(world, first, str(p1))
    install(world, second, str(p2))
    shutil.rmtree(first)
    result = collect(world)
    assert "tinybackend 1.0" not in freed(result)
    assert "build dependency" in reasons(result)["tinybackend 1.0"]
    assert world.archive_of("tinybackend", "1.0") and not world.dangling_pointers()
    world.uv("pip", "install", "-q", "--offline", "--reinstall", "-p", second, *world.offline(), p2)
    imports(world, second, "ptwo")


def test_short_lived_envs_leave_a_bounded_store(world: World) -> None:
    """A CI runner making a new env per job: gone envs' referrers and records are dropped
    under the exclusive lock, so the shared entry's refs name only the living env."""
    live = world.venv("live")
    install(world, live, "beta")
    for job in range(8):
        env = world.venv(f"job{job}")
        install(world, env, "beta")
        shutil.rmtree(env)
    (beta,) = world.archive_of("beta", "1.0")
    refs = next(world.state.rglob(f"refs/{beta}.refs"))
    assert len(json.loads(refs.read_text())["referrers"]) == 9
    collect(world)
    assert [r["env"] for r in json.loads(refs.read_text())["referrers"]] == [str(live)]
    assert len(list(world.state.rglob("envs/*.json"))) == 1
    imports(world, live, "beta")


def test_untracked_budget_never_takes_what_a_discovered_env_uses(world: World) -> None:
    """`--budget 0` frees untracked entries, but only those no root uses: an env made
    with plain uv beside a tracked one is a root (symlink mode: no link count shows it)."""
    tracked, plain = world.venv("tracked"), world.venv("plain")
    install(world, tracked, "beta")
    install(world, plain, "alpha==3.0", tracked=False)
    result = collect(world, "--budget", "0")
    assert "alpha 3.0" not in freed(result) and "beta 1.0" not in freed(result)
    imports(world, plain, "alpha")
    imports(world, tracked, "beta")


def test_watch_add_finds_envs_deeper_than_the_default(world: World) -> None:
    """`uvrefs watch add DIR` searches DIR deeper than tracked envs' holders; envs found
    there are roots, and tracked at once."""
    deep = world.venv("work/a/b/c/env")
    install(world, deep, "alpha==3.0", tracked=False)
    tracked = world.venv("tracked")
    install(world, tracked, "alpha==3.0")
    shutil.rmtree(tracked)
    assert freed(collect(world, "--dry-run")) == {"alpha 3.0"}
    added = world.uvrefs("watch", "add", world.root / "work")
    assert added.stdout == f"watching {world.root / 'work'}: 1 environment found and tracked\n"
    watched = f"{world.root / 'work'}\twatched (4 levels deep)"
    assert watched in world.uvrefs("watch", "list").stdout.splitlines()
    result = collect(world)
    assert freed(result) == set()
    assert reasons(result)["alpha 3.0"] == f"used by {deep}"
    world.uvrefs("watch", "remove", world.root / "work")
    assert watched not in world.uvrefs("watch", "list").stdout.splitlines()
    imports(world, deep, "alpha")


def test_killed_recorder_leaves_a_root(world: World) -> None:
    """The env record is written before the refs: a recorder killed in between (here: its
    refs deleted by hand) leaves a root whose scan still holds what it uses."""
    live, dead = world.venv("live"), world.venv("dead")
    install(world, dead, "alpha==1.0")
    install(world, live, "alpha==1.0")
    shutil.rmtree(dead)
    (alpha,) = world.archive_of("alpha", "1.0")
    refs = next(world.state.rglob(f"refs/{alpha}.refs"))
    doc = json.loads(refs.read_text())
    doc["referrers"] = [r for r in doc["referrers"] if r["env"] != str(live)]
    refs.write_text(json.dumps(doc))
    for stamp in world.state.rglob("envs/*.stamp"):
        stamp.unlink()
    result = collect(world)
    assert freed(result) == set() and reasons(result)["alpha 1.0"] == f"used by {live}"
    imports(world, live, "alpha")


def test_nothing_is_recorded_for_peer_envs(world: World) -> None:
    """A collect records the roots it found for its own store only: a peer's envs stay
    the peer's (its collect tidies them)."""
    other = {"UVREFS_DIR": str(world.root / "state2")}
    env = world.venv("a/env")
    install(world, env, "beta", extra_env=other)
    collect(world)
    assert not list(world.state.rglob("refs/*.refs"))
