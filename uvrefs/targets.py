"""Which environment a uv command installs into, found the way uv finds it, and a cheap
fingerprint of what is installed there. Runs before every tracked install, so it uses
`os.path` strings and imports nothing heavy."""

from __future__ import annotations

import os
import stat

from uvrefs import uv
from uvrefs.errors import UsageError, UvrefsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import TypeVar

    T = TypeVar("T")


class Target:
    """An environment: its root, plus site directories that cannot be inferred from the
    root (a system interpreter's, a `--target` directory)."""

    __slots__ = ("path", "site_dirs")

    def __init__(self, path: str, site_dirs: tuple[str, ...] = ()) -> None:
        self.path = path
        self.site_dirs = site_dirs

    def __repr__(self) -> str:
        return f"Target({self.path!r}, {self.site_dirs!r})"


def pip_target(uvbin: str, args: Sequence[str], environ: Mapping[str, str] = os.environ) -> Target:
    """The environment `uv pip install|sync ARGS` installs into: `--target`, `--prefix`,
    `--python`/`--system` (asked of `uv python find` unless it names a venv), else
    `VIRTUAL_ENV`, `CONDA_PREFIX`, or the venv the working directory is in or has a `.venv`
    (there or above)."""
    cwd = _command_cwd(args, environ)
    target = uv.option_value(args, "--target", "-t")
    if target:
        path = _abs(target, cwd)
        return Target(path, (path,))
    prefix = uv.option_value(args, "--prefix")
    if prefix:
        return Target(_abs(prefix, cwd))
    request = uv.option_value(args, "--python", "-p") or environ.get("UV_PYTHON")
    system = uv.has_flag(args, "--system") or uv.is_truthy(environ.get("UV_SYSTEM_PYTHON"))
    if request is None and not system:
        found = _active_venv(cwd, environ)
        if found is None:
            raise UsageError("no virtual environment found for uv pip; nothing to track")
        return Target(found)
    # uv reads a request as a path only when it looks like one (`3.11` is a version even if
    # a directory of that name exists); then a venv directory means that venv.
    looks_like_path = request is not None and (os.sep in request or request.startswith((".", "~")))
    if (
        request is not None
        and looks_like_path
        and os.path.isfile(os.path.join(_abs(request, cwd), "pyvenv.cfg"))
    ):
        return Target(_abs(request, cwd))
    return target_of_interpreter(uv.python_find(uvbin, request, system, cwd))


def script_target(uvbin: str, args: Sequence[str], cache_root: str) -> Target | None:
    """The environment of `uv sync|add|remove --script S`: uv keeps it in its cache
    (`environments-v*/`) and names its interpreter in `uv python find --script S`. None
    when uv names no environment there (it made none, or it would use another Python)."""
    script = uv.option_value(args, "--script")
    if not script:
        return None
    cwd = _command_cwd(args)
    try:
        interpreter = uv.query(uvbin, ["python", "find", "--script", _abs(script, cwd)], cwd=cwd)
    except UvrefsError:
        return None
    env = os.path.realpath(os.path.dirname(os.path.dirname(interpreter)))  # not the link's base
    inside = os.path.join(os.path.realpath(cache_root), "")
    if not env.startswith(inside) or not os.path.isfile(os.path.join(env, "pyvenv.cfg")):
        return None
    return Target(env)


def project_target(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> Target:
    """The environment `uv sync ARGS` syncs: `UV_PROJECT_ENVIRONMENT` (relative to the
    workspace root) or the workspace root's `.venv`; the project is `--project` or
    `UV_PROJECT`, relative to where uv runs."""
    project = uv.option_value(args, "--project") or environ.get("UV_PROJECT") or "."
    start = _abs(project, _command_cwd(args, environ))
    root = workspace_root(start)
    configured = environ.get("UV_PROJECT_ENVIRONMENT")
    return Target(_abs(configured, root) if configured else os.path.join(root, ".venv"))


# `uv venv` options that take a value, so the path is found among the other words.
_VENV_VALUE_OPTIONS = {
    "-p",
    "--python",
    "--prompt",
    "--index",
    "--index-url",
    "--default-index",
    "-i",
    "--extra-index-url",
    "--find-links",
    "-f",
    "--link-mode",
    "--index-strategy",
    "--keyring-provider",
    "--exclude-newer",
    "--cache-dir",
    "--directory",
    "--project",
    "--config-file",
    "--color",
    "--allow-insecure-host",
    "--python-preference",
}


def venv_target(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> Target:
    """The environment `uv venv [PATH]` creates: PATH, else `UV_PROJECT_ENVIRONMENT` or
    `.venv` (relative to `--directory`)."""
    words: list[str] = []
    it = iter(args)
    for arg in it:
        if arg in _VENV_VALUE_OPTIONS:
            next(it, None)
        elif not arg.startswith("-"):
            words.append(arg)
    path = (
        words[1]
        if len(words) > 1 and words[0] == "venv"
        else environ.get("UV_PROJECT_ENVIRONMENT") or ".venv"
    )
    return Target(_abs(path, _command_cwd(args)))


def workspace_root(start: str) -> str:
    """The nearest project at or above `start`, lifted to the workspace that lists it."""
    project = next(
        (d for d in _ancestors(start) if os.path.isfile(os.path.join(d, "pyproject.toml"))), None
    )
    if project is None:
        raise UsageError(f"no pyproject.toml in {start} or any parent; nothing to sync")
    for candidate in _ancestors(project):
        workspace = _read_workspace(os.path.join(candidate, "pyproject.toml"))
        if workspace is None:
            continue
        if candidate == project or (
            _matches(project, candidate, workspace.get("members", []))
            and not _matches(project, candidate, workspace.get("exclude", []))
        ):
            return candidate
    return project


def _ancestors(path: str) -> list[str]:
    found = [path]
    while os.path.dirname(found[-1]) != found[-1]:
        found.append(os.path.dirname(found[-1]))
    return found


def _read_workspace(pyproject: str) -> dict[str, list[str]] | None:
    """The `[tool.uv.workspace]` table of a pyproject.toml; None if it has none or cannot
    be read. A file that never spells `workspace` has none, and then tomllib is not loaded:
    its import costs ~9 ms, on every sync. (A TOML key can also be spelled with escapes,
    `"work\\u0073pace"`: a file with a backslash is parsed too.)"""
    from uvrefs.files import read_utf8

    try:
        text = read_utf8(pyproject)
    except OSError:
        return None
    if "workspace" not in text and "\\" not in text:
        return None
    import tomllib

    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return None
    workspace: object = data
    for key in ("tool", "uv", "workspace"):  # a table only if each level is one
        workspace = workspace.get(key) if isinstance(workspace, dict) else None
    return workspace if isinstance(workspace, dict) else None


def _matches(project: str, root: str, patterns: Iterable[str]) -> bool:
    from glob import glob

    real = os.path.realpath(project)
    return any(
        os.path.realpath(p) == real for pat in patterns for p in glob(os.path.join(root, pat))
    )


def _command_cwd(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> str:
    """Where uv runs the command (`uv.working_dir`)."""
    return uv.working_dir(args, environ)


def _abs(path: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _active_venv(cwd: str, environ: Mapping[str, str]) -> str | None:
    """As uv finds it: `VIRTUAL_ENV`, `CONDA_PREFIX`, then walking up from `cwd`, a
    directory that is itself a venv (uv run from inside one) or that holds a `.venv`."""
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        if environ.get(var):
            return _abs(environ[var], cwd)
    for directory in _ancestors(cwd):
        if os.path.isfile(os.path.join(directory, "pyvenv.cfg")):
            return directory
        if os.path.isfile(os.path.join(directory, ".venv", "pyvenv.cfg")):
            return os.path.join(directory, ".venv")
    return None


def target_of_interpreter(interpreter: str) -> Target:
    """A venv's interpreter means its venv; any other means its own site-packages, asked
    of it. Only an executable file named like an interpreter (`python`, `python3.11`,
    `pypy3`, `python3.13t`, `graalpy`) is ever run, isolated (`-I`) and for at most
    `uv.QUERY_TIMEOUT` seconds."""
    bindir = os.path.dirname(interpreter)
    for root in (os.path.dirname(bindir), bindir):
        if os.path.isfile(os.path.join(root, "pyvenv.cfg")):
            return Target(os.path.normpath(root))
    if not (looks_like_python(interpreter) and os.path.isfile(interpreter)):
        raise UsageError(
            f"{interpreter} is not a Python environment or interpreter (no pyvenv.cfg, "
            "site-packages or dist-info, and not named python*, pypy* or graalpy*)"
        )
    import subprocess

    code = (
        "import sys, sysconfig as s; print(sys.prefix); "
        "print(s.get_path('purelib')); print(s.get_path('platlib'))"
    )
    try:
        out = subprocess.run(
            [interpreter, "-I", "-c", code],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            check=True,
            timeout=uv.QUERY_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"{interpreter} did not answer within {uv.QUERY_TIMEOUT:g}s; is it a Python "
            "interpreter?"
        ) from None
    except (OSError, subprocess.CalledProcessError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else uv.last_line(exc.stderr)
        raise UsageError(f"{interpreter} is not a working Python interpreter: {why}") from None
    prefix, *sites = out.stdout.split("\n")[:3]
    if not os.path.isabs(prefix):
        raise UsageError(f"{interpreter} is not a working Python interpreter: no sys.prefix")
    return Target(prefix, tuple(dict.fromkeys(s for s in sites if s)))


def looks_like_python(path: str) -> bool:
    """Named like a Python interpreter: python, python3, python3.11, python3.13t, pypy3,
    graalpy (`.exe` on Windows)."""
    name = os.path.basename(path).removesuffix(".exe")
    for stem in ("python", "pypy", "graalpy"):
        if name.startswith(stem):
            return all(c in "0123456789." for c in name[len(stem) :].rstrip("dmtu"))
    return False


def site_dirs(env: str, extra: Iterable[str] = (), *, strict: bool = False) -> list[str]:
    """The directories of an env that hold `.dist-info`s: POSIX (`lib*/python*/`) and
    Windows (`Lib/`) layouts, which also covers `--prefix` trees, plus `extra`. With
    `strict`, a directory on the way that exists but cannot be read raises (then what the
    env uses is unknown, not "nothing"); otherwise it is skipped."""
    found: list[str] = []
    for lib in ("lib", "lib64"):
        names = _checked(os.listdir, os.path.join(env, lib), strict) or []
        found += [
            os.path.join(env, lib, n, "site-packages")
            for n in sorted(names)
            if n.startswith("python")
        ]
    found += [os.path.join(env, "Lib", "site-packages"), *extra]
    unique: dict[str, str] = {}
    for path in found:
        st = _checked(os.stat, path, strict)
        if st is not None and stat.S_ISDIR(st.st_mode):
            unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def _checked(call: Callable[[str], T], path: str, strict: bool) -> T | None:
    """`call(path)`, None if the path is missing; another error raises if `strict`."""
    try:
        return call(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        if strict:
            raise
        return None


def fingerprint(target: Target) -> str:
    """What is installed, cheaply: each site dir's mtime and its dist-info names. Installing,
    removing or reinstalling a package changes both."""
    parts = []
    for site in site_dirs(target.path, target.site_dirs):
        try:
            names = sorted(n for n in os.listdir(site) if n.endswith(".dist-info"))
            parts.append(f"{site}\t{os.stat(site).st_mtime_ns}\t{','.join(names)}")
        except OSError:
            parts.append(f"{site}\t?")
    return "\n".join(parts)


def target_of_path(path: str) -> Target:
    """What a user means by an environment path: a venv (or `--prefix` tree) root, its
    interpreter, or a `--target` directory holding dist-infos directly."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(os.path.join(path, "pyvenv.cfg")) or site_dirs(path):
        return Target(path)
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return target_of_interpreter(path)
    try:
        if os.path.isdir(path) and any(n.endswith(".dist-info") for n in os.listdir(path)):
            return Target(path, (path,))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    raise UsageError(
        f"{path} is not a Python environment (no pyvenv.cfg, site-packages or dist-info)"
    )


REDIRECT_MAX = 4096  # a `.venv` redirect file holds one path


def follow_redirect(path: str) -> str:
    """The environment a `.venv` redirect file (PEP 832; uv's preview `venv-redirect-files`)
    names, relative to the file's directory; any other path as it is. Read as a small
    regular file only, never through a link or from a FIFO."""
    from uvrefs.files import read_file

    try:
        text = read_file(path, REDIRECT_MAX).decode("utf-8", errors="replace")
    except OSError:
        return path
    # As uv reads it: the text is the path, one line ending dropped; no `~`, no trimming.
    text = text.removesuffix("\n").removesuffix("\r")
    if not text or "\n" in text or "\0" in text:
        return path
    return os.path.normpath(os.path.join(os.path.dirname(path), text))


def project_link(path: str) -> str | None:
    """A project's `.venv` link (or redirect file) as uvrefs records it: its directory's
    real path (a project reached through a symlinked directory is the same project) and
    `.venv`. None for any other path: uv links only a workspace root's `.venv`, beside
    its `pyproject.toml`; another link to an environment is no project of it."""
    directory, name = os.path.split(os.path.abspath(path))
    if name != ".venv":
        return None
    real = os.path.realpath(directory)
    if not os.path.isfile(os.path.join(real, "pyproject.toml")):
        return None
    return os.path.join(real, name)
