"""uv's settings that say where roots live: its tool directory, where it installs Pythons,
and the preview features in effect, read from this process's environment and uv's
configuration files as uv reads them. Every uvrefs command records what it sees in the
store (`RefsStore.remember_settings`), and root finding reads them from there, never from
the environment of whoever runs collect (a scheduler's has none of the user's)."""

from __future__ import annotations

import os
import sys

from uvrefs.files import read_utf8
from uvrefs.store.refs import Settings
from uvrefs.uv import is_truthy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def data_dir(environ: Mapping[str, str] = os.environ) -> str:
    """uv's data directory (`StateStore::from_settings`): `$XDG_DATA_HOME/uv`, else
    `~/.local/share/uv`; on macOS an existing `~/Library/Application Support/uv` first."""
    if sys.platform == "darwin":
        legacy = os.path.expanduser("~/Library/Application Support/uv")
        if os.path.isdir(legacy):
            return legacy
    base = environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):  # a relative XDG path is invalid, as uv reads it
        base = os.path.expanduser("~/.local/share")
    return os.path.join(base, "uv")


def tool_dir(environ: Mapping[str, str] = os.environ) -> str:
    """uv's tool directory, as uv computes it (`UV_TOOL_DIR`, else the data dir's)."""
    if environ.get("UV_TOOL_DIR"):
        return os.path.abspath(os.path.expanduser(environ["UV_TOOL_DIR"]))
    return os.path.join(data_dir(environ), "tools")


def python_dir(environ: Mapping[str, str] = os.environ) -> str:
    """Where uv installs Pythons (`UV_PYTHON_INSTALL_DIR`, else the data dir's)."""
    if environ.get("UV_PYTHON_INSTALL_DIR"):
        return os.path.abspath(os.path.expanduser(environ["UV_PYTHON_INSTALL_DIR"]))
    return os.path.join(data_dir(environ), "python")


def seen(environ: Mapping[str, str] = os.environ, *, config: bool = True) -> Settings:
    """What this process sees: the tool and Python directories its environment names
    (whether they exist yet or not: a tool installed there later is still a root), and
    (reading uv's configuration files, unless `config` is false: the install path skips
    them) the cache-related preview features in effect."""
    from uvrefs.store.refs import own_id

    previews = tuple(sorted(preview_features(environ))) if config else ()
    named = environ.get("UVREFS_HOST")
    hosts = {named: own_id()} if named else {}
    return Settings({tool_dir(environ): 0.0}, {python_dir(environ): 0.0}, previews, hosts)


# uv 0.13.9's preview features that change the cache's layout or what lives in it.
CACHE_PREVIEWS = (
    "content-addressed-cache",
    "centralized-project-envs",
    "venv-redirect-files",
    "relocatable-envs-default",
    "cache-size",
    "cache-physical-space",
)


def preview_features(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Cache-related preview features in effect, and where each was turned on:
    `UV_PREVIEW` / `UV_PREVIEW_FEATURES`, or `preview` / `preview-features` in the user's
    `uv.toml` or this directory's `uv.toml` / `pyproject.toml` (`[tool.uv]`). `tomllib`
    (~2 ms) is loaded only when there is a file to parse."""
    found: dict[str, str] = {}
    if is_truthy(environ.get("UV_PREVIEW")):
        found.update(dict.fromkeys(CACHE_PREVIEWS, "UV_PREVIEW"))
    for name in environ.get("UV_PREVIEW_FEATURES", "").replace(",", " ").split():
        if name in CACHE_PREVIEWS:
            found[name] = "UV_PREVIEW_FEATURES"
    config = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    for path, section in (
        (os.path.join(config, "uv", "uv.toml"), None),
        ("uv.toml", None),
        ("pyproject.toml", "tool.uv"),
    ):
        try:
            text = read_utf8(path)
        except OSError:
            continue
        import tomllib

        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError):
            continue
        for key in (section or "").split(".") if section else ():
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if not isinstance(data, dict):
            continue
        if data.get("preview") is True:
            found.update({n: path for n in CACHE_PREVIEWS if n not in found})
        names = data.get("preview-features", [])
        for name in names if isinstance(names, list) else []:
            if name in CACHE_PREVIEWS:
                found.setdefault(name, path)
    return found
