"""Where a cache's refs store is, for every command: one `lstat` when it is at its key,
else a store the cache brought from an earlier path, moved to its key first
(`uvrefs.store.moves`, loaded only then: tracked installs run this before every command)."""

from __future__ import annotations

import os

from uvrefs.store import stamps


def find_store(state_dir: str, cache_root: str) -> str:
    """Where this cache's store is, for every command (tracked installs, collect, status,
    doctor): `stamps.store_dir`, found with one `lstat` when it is there. When it is not, a store
    this cache brought from an earlier path (a CI cache restored in another workspace, a
    cache moved with `mv`) is recognised by the cache's own archive ids and moved there
    first (`uvrefs.store.moves`); otherwise the store starts there, empty."""
    key = stamps.store_dir(state_dir, cache_root)
    try:
        os.lstat(key)
        return key
    except FileNotFoundError:
        pass
    except OSError:
        return key  # `check_store` says what is wrong with it
    from uvrefs.store.moves import follow

    follow(state_dir, cache_root, key)
    return key
