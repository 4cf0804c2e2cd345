"""Whole sequences, property-tested against an oracle: random tracked and plain-uv
installs, uninstalls, moves, renames through symlinks, deletions and moves out of sight
over several envs, with real uv in symlink mode. After every collect the oracle scans
every env:

- nothing a living env uses is gone (no installed file is a dangling link, every file of
  every installed RECORD exists, and every installed package imports), and that includes
  envs moved out of sight (a plain `mv` to an unwatched place) after a default collect;
- every entry that was tracked before the collect and that no living env uses is freed:
  by a `--min-age 0` collect, all of them; by a default collect, those whose referrers'
  envs all still exist (the others wait a grace period: their env may have moved).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import UV, World, make_world

SYMLINK = {"UV_LINK_MODE": "symlink"}
SLOTS = ("e0", "e1", "e2")
PACKAGES = {"alpha==1.0": "alpha", "alpha==2.0": "alpha", "beta": "beta", "plat": "plat"}

ops = st.one_of(
    st.tuples(st.just("track"), st.sampled_from(SLOTS), st.sampled_from(sorted(PACKAGES))),
    st.tuples(st.just("plain"), st.sampled_from(SLOTS), st.sampled_from(sorted(PACKAGES))),
    st.tuples(st.just("uninstall"), st.sampled_from(SLOTS), st.sampled_from(["alpha", "beta"])),
    st.tuples(st.just("delete"), st.sampled_from(SLOTS), st.just("")),
    st.tuples(st.just("move"), st.sampled_from(SLOTS), st.sampled_from(SLOTS)),
    st.tuples(st.just("away"), st.sampled_from(SLOTS), st.just("")),
    st.tuples(st.just("alias"), st.sampled_from(SLOTS), st.sampled_from(sorted(PACKAGES))),
    st.tuples(st.just("collect"), st.just(""), st.just("")),
    st.tuples(st.just("collect"), st.just("now"), st.just("")),
)


class Sequence:
    def __init__(self, world: World) -> None:
        self.world = world
        self.home = world.root / "projects"
        self.home.mkdir()
        self.away = world.root / "elsewhere"  # moved out of sight: never watched
        self.away.mkdir()
        world.venv("scratch")  # uv makes its cache

    def env(self, slot: str) -> Path:
        return self.home / slot / ".venv"

    def ensure(self, slot: str) -> Path:
        env = self.env(slot)
        if not (env / "pyvenv.cfg").exists():
            env.parent.mkdir(exist_ok=True)
            self.world.uv("venv", "-q", "--python", sys.executable, env)
        return env

    def install(self, path: Path, package: str, tracked: bool) -> None:
        args = ["-q", "-p", path, *self.world.offline(), package]
        if tracked:
            self.world.uvrefs("install", *args, extra_env=SYMLINK)
        else:
            self.world.uv("pip", "install", *args, extra_env=SYMLINK)

    def apply(self, op: str, a: str, b: str) -> None:
        env = self.env(a) if a and op != "collect" else None
        if op in ("track", "plain"):
            self.install(self.ensure(a), b, tracked=op == "track")
        elif op == "uninstall" and env and env.exists():
            self.world.uv("pip", "uninstall", "-q", "-p", env, b)
        elif op == "delete" and env:
            shutil.rmtree(env.parent, ignore_errors=True)
        elif op == "move" and env and env.exists() and a != b:
            target = self.home / b
            if not target.exists():
                env.parent.rename(target)
        elif op == "away" and env and env.exists():  # `mv` out of every watched directory
            env.parent.rename(self.away / f"{a}-{len(list(self.away.iterdir()))}")
        elif op == "alias":  # track through a symlink to the project, then drop the link
            self.ensure(a)
            link = self.home / f"link-{a}"
            link.symlink_to(self.home / a)
            self.install(link / ".venv", b, tracked=True)
            link.unlink()
        elif op == "collect":
            self.collect_and_check(now=a == "now")

    def living(self, away: bool = False) -> list[Path]:
        """The envs in sight (and, with `away`, those moved out of sight too)."""
        found = sorted(p.parent for p in self.home.glob("*/.venv/pyvenv.cfg"))
        return found + (
            sorted(p.parent for p in self.away.glob("*/.venv/pyvenv.cfg")) if away else []
        )

    def used(self, away: bool = False) -> set[str]:
        """Oracle: the archives every living env's files link into."""
        bucket = self.world.cache / "archive-v0"
        used = set()
        for env in self.living(away):
            for path in env.rglob("*"):
                if path.is_symlink():
                    target = Path(os.readlink(path))
                    if target.is_relative_to(bucket):
                        used.add(target.relative_to(bucket).parts[0])
        return used

    def tracked(self) -> dict[str, set[str]]:
        """entry -> the envs its refs name."""
        return {
            p.stem: {r["env"] for r in json.loads(p.read_text())["referrers"]}
            for p in self.world.refs()
        }

    def replaced(self, env: str) -> bool:
        """Whether a referrer of `env` names another directory than the one there now."""
        try:
            st = os.stat(env)
        except OSError:
            return False
        here = [st.st_dev, st.st_ino]
        return any(
            r["env"] == env and r.get("identity") not in (None, here)
            for p in self.world.refs()
            for r in json.loads(p.read_text())["referrers"]
        )

    def collect_and_check(self, now: bool) -> None:
        tracked = self.tracked()
        args = ("--min-age", "0") if now else ()
        done = self.world.uvrefs("collect", "--json", *args, check=False)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        # A default collect keeps what envs moved out of sight use; `--min-age 0` says
        # not to wait for them (they break then, as documented): forget them.
        archives, used = self.world.archives(), self.used(away=not now)
        assert used <= archives, f"freed while in use: {used - archives}"
        # ... and what an env used that another env has replaced at its path since (its
        # directory's identity changed: the one recorded may have moved away, and waits).
        due = {
            entry
            for entry, envs in tracked.items()
            if now or all(os.path.lexists(env) and not self.replaced(env) for env in envs)
        }
        assert not (archives & due) - used, f"tracked, unused, kept: {json.loads(done.stdout)}"
        for env in self.living(away=not now):
            site = next(env.glob("lib/python*/site-packages"))
            broken = [p for p in site.rglob("*") if p.is_symlink() and not p.exists()]
            assert not broken, broken
            for record in site.glob("*.dist-info/RECORD"):  # every file installed is there
                for line in record.read_text().splitlines():
                    name = line.rsplit(",", 2)[0]
                    assert os.path.exists(site / name) or name.startswith(".."), (env, name)
            modules = [m for m in ("alpha", "beta", "plat") if (site / m).exists()]
            if modules:
                self.world.run(env / "bin/python", "-c", f"import {', '.join(modules)}")
        if now:
            subprocess.run(["rm", "-rf", str(self.away)], check=False)
            self.away.mkdir()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(ops, min_size=3, max_size=9))
# Found by this test once moves out of sight were drawn: the env's entries were freed at
# once, and on a second collect its referrers (dropped as "gone") no longer held them.
@example(steps=[("track", "e0", "alpha==1.0"), ("away", "e0", ""), ("collect", "", "")])
def test_random_sequences_never_free_a_used_entry_and_free_every_unused_tracked_one(
    wheelhouse: Path, steps: list[tuple[str, str, str]]
) -> None:
    assert UV
    base = Path(tempfile.mkdtemp(prefix="uvrefs-seq-"))
    try:
        sequence = Sequence(make_world(base, wheelhouse, UV))
        for step in [*steps, ("collect", "", ""), ("collect", "now", "")]:
            sequence.apply(*step)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
