"""Environments: which one a uv command targets, whether it still exists, and which cache
entries it uses, traced from each installed `.dist-info` in every link mode uv has."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Literal

from uvrefs import uv
from uvrefs.cache import Archive, Cache
from uvrefs.errors import UsageError

EnvState = Literal["alive", "gone", "unknown"]
# How a use was proven: the installed file is a symlink into the archive, shares its inode,
# has the same content, or the entry appeared while uv worked on the env (build deps).
How = Literal["symlink", "hardlink", "content", "build"]


@dataclass(frozen=True)
class Target:
    """An environment a uv command installs into, as uv chose it."""

    path: Path
    site_dirs: tuple[Path, ...] = ()  # extra site dirs (system interpreters, --target)


@dataclass(frozen=True)
class EnvScan:
    """What one environment is now: alive / gone / unknown, and the entries it uses."""

    path: Path
    state: EnvState
    detail: str = ""
    uses: Mapping[str, How] = field(default_factory=dict)
    dists: tuple[str, ...] = ()


# ---------------------------------------------------------------- which env a command targets


def pip_target(uvbin: str, args: Sequence[str], environ: Mapping[str, str] = os.environ) -> Target:
    """The environment `uv pip install|sync ARGS` installs into, found the way uv finds it:
    `--target`, `--prefix`, `--python`/`--system` (asked of `uv python find`), else
    `VIRTUAL_ENV`, `CONDA_PREFIX`, or a `.venv` in the working directory or above."""
    cwd = _command_cwd(args)
    target = uv.option_value(args, "--target", "-t")
    if target:
        path = _abs(target, cwd)
        return Target(path, (path,))
    request = uv.option_value(args, "--python", "-p") or environ.get("UV_PYTHON")
    system = uv.has_flag(args, "--system") or uv._truthy(environ.get("UV_SYSTEM_PYTHON"))
    prefix = uv.option_value(args, "--prefix")
    if prefix:
        return Target(_abs(prefix, cwd))
    if request is None and not system:
        found = _active_venv(cwd, environ)
        if found is not None:
            return Target(found)
        raise UsageError("no virtual environment found for uv pip; nothing to track")
    if request is not None:
        as_path = _abs(request, cwd)
        if (as_path / "pyvenv.cfg").is_file():
            return Target(as_path)
    interpreter = uv.python_find(uvbin, request, system, cwd)
    return _target_of_interpreter(interpreter)


def project_target(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> Target:
    """The environment `uv sync ARGS` syncs: `UV_PROJECT_ENVIRONMENT` (relative to the
    workspace root) or the workspace root's `.venv`."""
    start = _abs(uv.option_value(args, "--project") or ".", _command_cwd(args))
    root = workspace_root(start)
    configured = environ.get("UV_PROJECT_ENVIRONMENT")
    if configured:
        return Target(_abs(configured, root))
    return Target(root / ".venv")


def workspace_root(start: Path) -> Path:
    """The nearest project at or above `start`, lifted to the workspace that lists it."""
    project = next((d for d in (start, *start.parents) if (d / "pyproject.toml").is_file()), None)
    if project is None:
        raise UsageError(f"no pyproject.toml in {start} or any parent; nothing to sync")
    for candidate in (project, *project.parents):
        workspace = _read_workspace(candidate / "pyproject.toml")
        if workspace is None:
            continue
        members = workspace.get("members", [])
        excluded = workspace.get("exclude", [])
        if candidate == project or (
            _matches(project, candidate, members) and not _matches(project, candidate, excluded)
        ):
            return candidate
    return project


def _read_workspace(pyproject: Path) -> dict[str, list[str]] | None:
    try:
        with pyproject.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    workspace = data.get("tool", {}).get("uv", {}).get("workspace")
    return workspace if isinstance(workspace, dict) else None


def _matches(project: Path, root: Path, patterns: Iterable[str]) -> bool:
    return any(
        Path(p).resolve() == project.resolve() for pat in patterns for p in glob(str(root / pat))
    )


def _command_cwd(args: Sequence[str]) -> Path:
    directory = uv.option_value(args, "--directory")
    return _abs(directory, Path.cwd()) if directory else Path.cwd()


def _abs(path: str, base: Path) -> Path:
    return Path(os.path.normpath(base / os.path.expanduser(path)))


def _active_venv(cwd: Path, environ: Mapping[str, str]) -> Path | None:
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if environ.get(var):
            return _abs(environ[var], cwd)
    for directory in (cwd, *cwd.parents):
        if (directory / ".venv" / "pyvenv.cfg").is_file():
            return directory / ".venv"
    return None


def _target_of_interpreter(interpreter: Path) -> Target:
    """A venv interpreter means its venv; any other means its own site-packages."""
    for root in (interpreter.parent.parent, interpreter.parent):
        if (root / "pyvenv.cfg").is_file():
            return Target(Path(os.path.normpath(root)))
    import subprocess

    code = "import sys,sysconfig;print(sys.prefix);print(sysconfig.get_path('purelib'));print(sysconfig.get_path('platlib'))"
    out = subprocess.run([str(interpreter), "-c", code], capture_output=True, text=True, check=True)
    prefix, *sites = out.stdout.split("\n")[:3]
    return Target(Path(prefix), tuple(dict.fromkeys(Path(s) for s in sites if s)))


# ---------------------------------------------------------------- which entries an env uses


def site_dirs(env: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """The directories of an env that hold `.dist-info`s: POSIX and Windows venv layouts,
    a `--prefix` tree, a `--target` directory, plus any recorded `extra` ones."""
    found = [
        Path(p)
        for pattern in (
            "lib/python*/site-packages",
            "lib64/python*/site-packages",
            "Lib/site-packages",
        )
        for p in glob(str(env / pattern))
    ]
    found += [Path(p) for p in extra]
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


class ArchiveIndex:
    """Archives by the name of the `.dist-info` they hold, built in one pass over the
    archive bucket and shared by every env scan of a run (archives never change)."""

    def __init__(self, cache: Cache, archives: Iterable[Archive] | None = None) -> None:
        self.cache = cache
        self.by_dist_info: dict[str, list[Archive]] = {}
        for archive in cache.archives() if archives is None else archives:
            for name in archive.dist_infos:
                self.by_dist_info.setdefault(name, []).append(archive)
        self._stats: dict[Path, os.stat_result | None] = {}

    def stat(self, path: Path) -> os.stat_result | None:
        if path not in self._stats:
            try:
                self._stats[path] = os.stat(path)
            except OSError:
                self._stats[path] = None
        return self._stats[path]


def env_state(path: Path) -> tuple[EnvState, str]:
    """Alive, gone, or unknown. Only a missing path whose parent can be read counts as
    gone: an unreadable path or a missing mount point is unknown, and unknown keeps."""
    try:
        os.stat(path)
        return "alive", ""
    except FileNotFoundError:
        parent = path.parent
        try:
            os.listdir(parent)
        except OSError as exc:
            return "unknown", f"parent {parent} unreadable ({exc.strerror})"
        return "gone", "no longer exists"
    except OSError as exc:
        return "unknown", f"unreadable ({exc.strerror})"


def scan_env(path: Path, index: ArchiveIndex, extra_site_dirs: Iterable[Path] = ()) -> EnvScan:
    """Which archives of `index` the environment at `path` uses, one dist-info at a time."""
    state, detail = env_state(path)
    if state != "alive":
        return EnvScan(path, state, detail)
    uses: dict[str, How] = {}
    dists: list[str] = []
    try:
        for site in site_dirs(path, extra_site_dirs):
            with os.scandir(site) as it:
                names = [e.name for e in it if e.name.endswith(".dist-info")]
            for name in sorted(names):
                dists.append(name)
                for archive_id, how in match_dist_info(site / name, index).items():
                    uses.setdefault(archive_id, how)
    except FileNotFoundError:
        pass  # a site dir vanished while scanning: what was read stands
    except PermissionError as exc:
        return EnvScan(path, "unknown", f"unreadable ({exc.strerror})")
    return EnvScan(path, "alive", "", uses, tuple(dists))


def match_dist_info(installed: Path, index: ArchiveIndex) -> dict[str, How]:
    """The archives an installed `.dist-info` came from.

    symlink mode: METADATA links into the archive. hardlink (and clone falling back to it):
    METADATA shares the archive's inode. clone/copy: METADATA and WHEEL are byte-identical
    and every hashed file in the archive's RECORD appears with the same hash in the
    installed RECORD; several equal archives are all referenced (keeping is safe)."""
    metadata = installed / "METADATA"
    try:
        lst = os.lstat(metadata)
    except OSError:
        return {}
    if stat.S_ISLNK(lst.st_mode):
        target = Path(os.path.normpath(installed / os.readlink(metadata)))
        for bucket in index.cache.archive_dirs:
            if target.is_relative_to(bucket):
                return {target.relative_to(bucket).parts[0]: "symlink"}
        return {}
    candidates = index.by_dist_info.get(installed.name, [])
    for archive in candidates:
        st = index.stat(archive.path / installed.name / "METADATA")
        if st is not None and (st.st_dev, st.st_ino) == (lst.st_dev, lst.st_ino):
            return {archive.id: "hardlink"}
    return {
        a.id: "content"
        for a in candidates
        if _same_content(installed, a.path / installed.name, lst.st_size, index)
    }


def _same_content(installed: Path, cached: Path, metadata_size: int, index: ArchiveIndex) -> bool:
    st = index.stat(cached / "METADATA")
    if st is None or st.st_size != metadata_size:
        return False
    try:
        if (installed / "METADATA").read_bytes() != (cached / "METADATA").read_bytes():
            return False
        if (installed / "WHEEL").read_bytes() != (cached / "WHEEL").read_bytes():
            return False
        cached_record = _record_hashes(cached / "RECORD")
        installed_record = _record_hashes(installed / "RECORD")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: counting it as used keeps it, which is safe
    data_dir = installed.name.removesuffix(".dist-info") + ".data/"
    return all(
        installed_record.get(path) == digest
        for path, digest in cached_record.items()
        if not path.startswith(data_dir)
    )


def _record_hashes(record: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for line in record.read_text("utf-8", errors="replace").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1]:
            hashes[parts[0].strip('"')] = parts[1]
    return hashes
