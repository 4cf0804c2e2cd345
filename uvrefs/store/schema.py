"""The on-disk formats of the refs store, each a versioned pydantic model.

Every file carries `format`; a reader accepts its own version (and migrates older ones
when there are any) and refuses newer ones, so an old uvrefs never rewrites, and so never
loses, what a newer one recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT: Literal[1] = 1


class Referrer(BaseModel):
    """One environment that uses an entry: where it is, on which host, how the use was
    proven (symlink, hardlink, content, or build: appeared while uv built for it), by which
    uvrefs command and when first recorded, and the `[st_dev, st_ino]` of the env's
    directory then (an env made since at the same path is another env: the one recorded
    may have moved away). `identity` came after format 1 was first written."""

    model_config = ConfigDict(frozen=True)

    env: str
    host: str
    how: Literal["symlink", "hardlink", "content", "build"]
    command: str
    recorded_at: datetime
    identity: tuple[int, int] | None = None


class EntryRefs(BaseModel):
    """`refs/<entry>.refs`: the environments that use cache entry `archive-v*/<entry>`.

    An empty `referrers` list means the entry was tracked and nobody uses it any more,
    which is what makes it collectable; an entry with no file is untracked and kept."""

    format: Literal[1] = FORMAT
    entry: str
    dist: str | None = None
    version: str | None = None
    tags: list[str] = Field(default_factory=list)
    referrers: list[Referrer] = Field(default_factory=list)


class EnvRecord(BaseModel):
    """`envs/<hash>.json`: an environment uvrefs recorded (by its real path), with the extra
    site directories it cannot infer from the path (system interpreters, `--target`), the
    mount point and mount namespace it was recorded in (so an unmounted disk or another
    container's env is not mistaken for a deleted one), its directory's `[st_dev, st_ino]`
    (the same env after a rename), the local source trees it was built from (whose build
    backends stay live with it), the entries it used at the last record, and, for a
    project environment kept in uv's cache (preview `centralized-project-envs`), the
    project `.venv` links (or redirect files) seen leading to it, each with its mount point:
    the environment lives while one of them does, and, on a filesystem other hosts mount
    too (NFS, sshfs, ...), where it is on it (`[family, source, path within]`), so any
    host that mounts it judges the env. (Its fingerprint lives beside it in a plain
    `.stamp` file.) The last five fields came after format 1 was first written; files
    without them read as empty."""

    format: Literal[1] = FORMAT
    path: str
    host: str
    site_dirs: list[str] = Field(default_factory=list)
    mount: str | None = None
    command: str
    recorded_at: datetime
    entries: list[str] = Field(default_factory=list)
    mntns: str | None = None
    identity: tuple[int, int] | None = None
    sources: list[str] = Field(default_factory=list)
    projects: list[tuple[str, str | None]] = Field(default_factory=list)
    shared: tuple[str, str, str] | None = None


class Watched(BaseModel):
    """`watch.json`: directories the user asked uvrefs to search for environments
    (`uvrefs watch add`); each environment found there is a root and is tracked."""

    format: Literal[1] = FORMAT
    dirs: list[str] = Field(default_factory=list)


class Holders(BaseModel):
    """`holders.json`: directories that held tracked environments (searched two levels
    deep at every collect), remembered while they exist, so an env renamed after its
    record was dropped is still found where it was."""

    format: Literal[1] = FORMAT
    dirs: list[str] = Field(default_factory=list)


class Peers(BaseModel):
    """`peers.json`: other refs stores seen tracking the same cache (from the registry in
    the cache, which `uv cache prune` deletes, so they are remembered here too)."""

    format: Literal[1] = FORMAT
    stores: list[str] = Field(default_factory=list)


class StoreMove(BaseModel):
    """One move of a store's cache: the path it was at, and when the store followed it."""

    from_path: str
    at: datetime


class StoreInfo(BaseModel):
    """`store.json`: which cache this part of the store belongs to (its real path), and
    the paths that cache was at before, with when the store followed it to the next
    (`uvrefs.store.moves`: the first, where the store was made, and the last 9). `moves` came
    after format 1 was first written; files without it read as empty."""

    format: Literal[1] = FORMAT
    cache: str
    moves: list[StoreMove] = Field(default_factory=list)


class ArchiveSizes(BaseModel):
    """`sizes.json`: what each archive occupied when first measured and the dist-infos it
    holds, keyed by entry, with the inode and mtime (ns) of its directory so a recreated
    archive is measured again, then (`footprints.Footprint`) every directory below it with
    its mtime (null: walk it again), ranges of its files' inodes (first, last, ...) and
    whether it shared a file with another archive. A cache for dry runs and policies (uv
    never changes an archive once written); what a collect frees is measured as it deletes.
    Records of 4 items (before directories were kept) are read and walked again."""

    format: Literal[1] = FORMAT
    archives: dict[
        str,
        tuple[int, int, int, list[str]]
        | tuple[int, int, int, list[str], list[tuple[str, int]] | None, list[int], bool],
    ] = Field(default_factory=dict)
