"""Fixtures that isolate every test from the developer's real cache, state and home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.wheels import build_wheelhouse

# CI never depends on a lucky draw: the same examples every run (a failure found locally is
# pinned with a test or @example); locally, hypothesis keeps exploring.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# UVREFS_TEST_UV runs the suite against another uv release (see tests/test_uv_versions.py).
UV = (
    os.environ.get("UVREFS_TEST_UV")
    or shutil.which("uv", path=str(Path(sys.executable).parent))
    or shutil.which("uv")
)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@dataclass
class World:
    """A throw-away uv cache, refs store and home, with helpers to drive uv and uvrefs."""

    root: Path
    cache: Path
    state: Path
    wheels: Path
    env: dict[str, str]
    uv_bin: str = UV or "uv"

    def run(
        self,
        *args: str | Path,
        check: bool = True,
        cwd: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(a) for a in args],
            cwd=cwd or self.root,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def uv(self, *args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(self.uv_bin, *args, **kw)  # type: ignore[arg-type]

    def uvrefs(self, *args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "uvrefs", *args, **kw)  # type: ignore[arg-type]

    def uvrefs_detached(self, *args: str | Path, extra_env: dict[str, str] | None = None) -> float:
        """Run uvrefs with no pipes to read (a reader would wait for a background
        recorder holding them) and return how long it took to return."""
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "uvrefs", *map(str, args)],
            cwd=self.root,
            env={**self.env, **(extra_env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        return time.monotonic() - started

    def reinstalls_offline(
        self, env: Path, *requirements: str, extra_env: dict[str, str] | None = None
    ) -> None:
        """`uv pip install --offline --reinstall` from the cache alone: the entries are there."""
        self.uv(
            "pip",
            "install",
            "-q",
            "--offline",
            "--reinstall",
            "-p",
            env,
            *self.offline(),
            *requirements,
            extra_env=extra_env,
        )

    def venv(self, name: str) -> Path:
        path = self.root / name
        self.uv("venv", "-q", "--python", sys.executable, path)
        return path

    def offline(self) -> list[str]:
        return ["--no-index", "--find-links", str(self.wheels)]

    def archives(self) -> set[str]:
        bucket = self.cache / "archive-v0"
        return set(os.listdir(bucket)) if bucket.is_dir() else set()

    def archive_of(self, dist: str, version: str) -> set[str]:
        """Ids of archives that hold `<dist>-<version>.dist-info`."""
        return {
            a
            for a in self.archives()
            if (self.cache / "archive-v0" / a / f"{dist}-{version}.dist-info").is_dir()
        }

    def dangling_pointers(self) -> list[Path]:
        """Links in uv's buckets whose target is gone: what breaks local-wheel installs."""
        buckets = [b for b in self.cache.glob("[a-z]*-v[0-9]*") if b.is_dir()]  # not .uvrefs-*
        return [p for b in buckets for p in b.glob("**/*") if p.is_symlink() and not p.exists()]

    def refs(self) -> list[Path]:
        return sorted(self.state.glob("caches/*/refs/*.refs"))

    @contextmanager
    def uv_at_work(self) -> Iterator[subprocess.Popen[str]]:
        """Another process holding uv's cache lock shared, as any running uv command does."""
        holder = (
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR);"
            "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); time.sleep(60)"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", holder, str(self.cache / ".lock")],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout and proc.stdout.readline().strip() == "held"
            yield proc
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture
def world(tmp_path: Path, wheelhouse: Path) -> Iterator[World]:
    assert UV, "uv is a dev dependency: pip install -e '.[dev]'"
    yield make_world(tmp_path, wheelhouse, UV)


def make_world(tmp_path: Path, wheelhouse: Path, uv_bin: str) -> World:
    """An isolated cache, store and home driven by the uv binary `uv_bin`."""
    home = tmp_path / "home"
    home.mkdir()
    env = isolated_env(home, tmp_path / "cache", tmp_path / "state", uv_bin)
    return World(tmp_path, tmp_path / "cache", tmp_path / "state", wheelhouse, env, uv_bin)


def isolated_env(home: Path, cache: Path, state: Path, uv_bin: str) -> dict[str, str]:
    """This process's environment without uv's, uvrefs's or a venv's variables, with its
    own home, uv cache and refs store, driving the uv binary `uv_bin`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "UVREFS_", "VIRTUAL_ENV", "CONDA"))
    }
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_STATE_HOME=str(home / ".local/state"),
        XDG_CONFIG_HOME=str(home / ".config"),
        UV_CACHE_DIR=str(cache),
        UVREFS_DIR=str(state),
        UVREFS_UV=uv_bin,
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_CONFIG="1",
        NO_COLOR="1",
        PATH=str(Path(uv_bin).parent) + os.pathsep + env.get("PATH", ""),
    )
    return env


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def open_world(wheelhouse: Path) -> Iterator[World]:
    """A world under a directory every user can traverse (pytest's tmp dirs are 0700),
    for code run as an unprivileged user: root reads even `chmod 000` directories, so a
    permission test run as root proves nothing."""
    import tempfile

    assert UV
    base = Path(tempfile.mkdtemp(prefix="uvrefs-open-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield make_world(base, wheelhouse, UV)
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(
    world: World, *args: str, owned_by_root: Sequence[Path] = ()
) -> subprocess.CompletedProcess[str]:
    """`uvrefs ARGS` as an unprivileged user that owns the cache and the store, except
    for `owned_by_root` (made 0700, so that user cannot read them)."""
    for path in (world.cache, world.state):
        subprocess.run(["chown", "-R", "65534:65534", str(path)], check=True)
    for path in owned_by_root:
        os.chown(path, 0, 0)
        path.chmod(0o700)
    argv, env = unprivileged_uvrefs()
    return world.run(*NOBODY, *argv, *args, check=False, extra_env=env)


_UNPRIVILEGED: dict[str, Any] = {}


def unprivileged_uvrefs() -> tuple[list[str], dict[str, str]]:
    """How the unprivileged user (NOBODY) runs this uvrefs: the argv before its
    arguments and the environment to add. This interpreter and package, when that user
    can import them; otherwise (a clone under a mode-700 directory, run as root: "No
    module named uvrefs") a copy of the package and its dependencies in a world-readable
    temp dir, run by an interpreter of the same version that user can run. Skips the
    test, saying why, when there is none."""
    if not _UNPRIVILEGED:
        _UNPRIVILEGED.update(_find_unprivileged_uvrefs())
    if "skip" in _UNPRIVILEGED:
        pytest.skip(_UNPRIVILEGED["skip"])
    return _UNPRIVILEGED["argv"], _UNPRIVILEGED["env"]


def _find_unprivileged_uvrefs() -> dict[str, Any]:
    import tempfile

    probe = "import sys, uvrefs.launch, typer, pydantic; print(sys.implementation.cache_tag)"
    # as uvrefs finds uv (`os.access`), which a path through a private directory fails
    reach_uv = ["sh", "-c", 'test -x "$0" && "$0" --version', str(UV)]
    uv_runs = UV is not None and _runs_as_nobody(reach_uv, {}, expect="uv ")
    if _runs_as_nobody([sys.executable, "-c", probe], {}) and uv_runs:
        return {"argv": [sys.executable, "-m", "uvrefs"], "env": {}}
    base = Path(tempfile.mkdtemp(prefix="uvrefs-nobody-", dir="/tmp"))
    _UNPRIVILEGED["cleanup"] = base
    _copy_runtime(base)
    env = {"PYTHONPATH": str(base)}
    if UV is not None and not uv_runs:  # tracked commands run uv: a copy they can reach
        (base / "bin").mkdir()
        env["UVREFS_UV"] = str(shutil.copy2(UV, base / "bin" / "uv"))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    candidates = [
        os.path.realpath(sys.executable),
        getattr(sys, "_base_executable", ""),
        shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}") or "",
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
    ]
    for python in dict.fromkeys(c for c in candidates if c):
        if _runs_as_nobody([python, "-c", probe], env):
            return {"argv": [python, "-m", "uvrefs"], "env": env}
    return {
        "skip": f"no Python {sys.implementation.cache_tag} the unprivileged user (uid "
        "65534) may run: the unprivileged collector's tests need one"
    }


def _runs_as_nobody(argv: list[str], env: dict[str, str], expect: str = "") -> bool:
    """Whether the unprivileged user can run `argv`, which prints `expect` first (by
    default this interpreter's cache tag: the same Python)."""
    done = subprocess.run(
        [*NOBODY, *argv],
        cwd="/",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and done.stdout.startswith(
        expect or sys.implementation.cache_tag + "\n"
    )


def _copy_runtime(base: Path) -> None:
    """uvrefs (without bytecode) and every distribution it needs to run, as installed
    here, into `base`."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    import uvrefs

    package = Path(uvrefs.__file__).parent
    shutil.copytree(package, base / "uvrefs", ignore=shutil.ignore_patterns("__pycache__"))
    seen: set[str] = set()
    todo = [req for req in distribution("uvrefs").requires or []]
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        dist = distribution(req.name)
        if dist.metadata["Name"] in seen:
            continue
        seen.add(dist.metadata["Name"])
        todo += dist.requires or []
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
                continue
            (base / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, base / file)


def pytest_unconfigure(config: pytest.Config) -> None:
    if "cleanup" in _UNPRIVILEGED:
        shutil.rmtree(_UNPRIVILEGED["cleanup"], ignore_errors=True)


# The reflink suite (tests/test_reflink.py) and the multi-host suite (tests/test_hosts.py):
# their fixtures, and a line for each saying whether it ran (the first needs root, loop
# devices and mkfs.xfs or mkfs.btrfs, the second root, /dev/fuse, sshd and sshfs; without
# them they skip).
def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("tests.fsimage")
    config.pluginmanager.import_plugin("tests.hosts")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests import fsimage, hosts

    terminalreporter.write_line(f"reflink suite: {fsimage.summary(terminalreporter.stats)}")
    terminalreporter.write_line(f"multi-host suite: {hosts.summary(terminalreporter.stats)}")


def suite_summary(outcome: str, stats: dict[str, list[pytest.TestReport]], *test_files: str) -> str:
    """`outcome` ("ran on ...", "skipped (why)", "not selected"), with the counts of
    `test_files`' results when it ran: "ran on xfs (3 passed, 1 xfailed)"."""
    if not outcome.startswith("ran"):
        return outcome
    counts = {
        kind: n
        for kind in ("passed", "failed", "error", "xfailed", "xpassed", "skipped")
        if (n := sum(1 for r in stats.get(kind, []) if any(f in r.nodeid for f in test_files)))
    }
    return f"{outcome} ({', '.join(f'{n} {k}' for k, n in counts.items())})" if counts else outcome


# ------------------------------------------------ hostile input (tests/test_hostile.py)

BOUND = 60.0  # seconds: a command that has not finished by then is taken to hang


@dataclass
class Bounded:
    """A command run with a time limit: `code` is None if it had to be killed."""

    args: tuple[str, ...]
    code: int | None
    stdout: str
    stderr: str
    seconds: float

    def quiet_failure(self) -> str | None:
        """What is wrong for any command, whatever its input: a hang or a traceback."""
        if self.code is None:
            return f"{self.args}: still running after {BOUND:g}s"
        if "Traceback" in self.stderr:
            return f"{self.args}: traceback\n{self.stderr}"
        return None


def run_bounded(args: list[str], env: dict[str, str], cwd: Path, timeout: float = BOUND) -> Bounded:
    started = time.monotonic()
    try:
        done = subprocess.run(
            args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return Bounded(tuple(args), None, out, err, time.monotonic() - started)
    return Bounded(
        tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started
    )


def plant(path: Path, kind: str, outside: Path) -> None:
    """Put hostile `kind` in place of the store file `path`: a FIFO, JSON nested too deep
    to parse, NUL bytes (raw, or escaped inside a valid document), a sparse 8 GiB file, or
    a symlink to `outside`."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "nested":
        path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    elif kind == "nul":
        path.write_bytes(b'{"format": 1,\x00 "entry": "x"}')
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(8 << 30)
    elif kind == "symlink":
        path.symlink_to(outside)
    else:
        raise AssertionError(kind)


# ------------------------------------------------ symlink-mode helpers (roots, attack tests)


def registry_of(world: World) -> Path:
    """Where the stores of the world's cache register (`registry.registry_dir`)."""
    from uvrefs.cache import Cache
    from uvrefs.store.registry import registry_dir

    return registry_dir(Cache.open(world.cache))


SYMLINK = {"UV_LINK_MODE": "symlink"}  # the mode in which a wrongly freed entry breaks an env


def in_process(world: World, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """The world's cache and refs store, for calling uvrefs's core in this process, with
    the world's environment set (undone after the test): (Cache, RefsStore)."""
    from uvrefs.cache import Cache
    from uvrefs.store.refs import RefsStore

    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    cache = Cache.open(world.cache)
    return cache, RefsStore(world.state, cache.root)


def install(world: World, env: Path, *reqs: str | Path, tracked: bool = True, **kw: Any) -> None:
    """`uvrefs install` (tracked) or plain `uv pip install`, offline, in symlink mode."""
    args = ["-q", "-p", env, *world.offline(), *reqs]
    extra = {**SYMLINK, **kw.pop("extra_env", {})}
    if tracked:
        world.uvrefs("install", *args, extra_env=extra, **kw)
    else:
        world.uv("pip", "install", *args, extra_env=extra, **kw)


NO_GRACE = ("--min-age", "0")


def collect_json(world: World, *args: str, grace: bool = False, **kw: Any) -> dict[str, Any]:
    """`collect --json ARGS`. An env deleted in symlink mode may have moved (links and
    all), so by default what only it used waits a grace period: a safety test asserting
    that an entry is kept would pass for that reason alone. So unless ARGS say
    `--min-age` or `grace` is true, this collect waits for nothing."""
    extra = () if grace or "--min-age" in args else NO_GRACE
    return json.loads(world.uvrefs("collect", "--json", *extra, *args, **kw).stdout)  # type: ignore[no-any-return]


def freed(result: dict[str, Any]) -> set[str]:
    """`dist version` of every entry a collect freed."""
    return {f"{d['dist']} {d['version']}" for d in result["freed"]}


def tracked_env_on_unmounted_bind_mount(world: World) -> Path:
    """A tracked symlink-mode env (alpha 1.0) made on a bind mount of a directory on the
    same filesystem, which is then unmounted (skips where bind mounts are not allowed)."""
    real, mnt = world.root / "real", world.root / "mnt"
    real.mkdir()
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(real), str(mnt)], check=False).returncode:
        pytest.skip("bind mounts are not allowed here")
    try:
        env = world.venv("mnt/env")
        install(world, env, "alpha==1.0")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return env
