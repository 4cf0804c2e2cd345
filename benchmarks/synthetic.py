"""Synthetic uv caches at scale, laid out as uv 0.13 lays them out (archive-v0 entries with a
dist-info, wheels-v8 symlinks with their sidecars), with venvs that hard-link their files
from the archives, as uv's default link mode does on ext4, and refs recorded by uvrefs."""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


@dataclass
class World:
    root: Path
    cache: Path
    state: Path
    envs: list[Path]
    dead_paths: list[Path]  # exactly what freeing the dead entries removes
    files: int


def hardlinked_venv(env: Path, archives: list[Path]) -> None:
    """A venv whose site-packages hard-links every file of `archives`, as uv does on ext4."""
    site = env / "lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (env / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for archive in archives:
        for src in archive.rglob("*"):
            dst = site / src.relative_to(archive)
            if src.is_dir():
                dst.mkdir(exist_ok=True)
            else:
                os.link(src, dst)


def build(
    root: Path,
    entries: int,
    files_per_entry: int,
    envs: int,
    seed: int = 0,
    cached_envs: int = 0,
    dead_referrers: int = 0,
) -> World:
    """`entries` archives of `files_per_entry` files; each env uses 1/envs of them alone plus
    a shared tenth; the first half of the envs is deleted after recording. Optionally
    `cached_envs` uv cached environments (`environments-v2` -> an archive holding a venv
    that hard-links 5 shared entries) and `dead_referrers` referrers of deleted envs spread
    over the shared entries' refs (a CI runner's history)."""
    from uvrefs.cache import Cache
    from uvrefs.envs import ArchiveIndex
    from uvrefs.store.refs import RefsStore
    from uvrefs.store.stamps import write_stamp
    from uvrefs.targets import Target, fingerprint, site_dirs
    from uvrefs.track import record_env

    rng = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    cache, state = root / "cache", root / "state"
    (cache / "archive-v0").mkdir(parents=True)
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    ids, names = [], []
    for n in range(entries):
        entry = "".join(rng.choice(ALPHABET) for _ in range(16))
        name = f"pkg{n:05d}"
        archive = cache / "archive-v0" / entry
        info = archive / f"{name}-1.0.dist-info"
        (archive / name).mkdir(parents=True)
        info.mkdir()
        for f in range(files_per_entry - 3):
            (archive / name / f"m{f}.py").write_bytes(b"x = 1\n" * 40)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "WHEEL").write_text(
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        (info / "RECORD").write_text("")
        key = cache / "wheels-v8" / "pypi" / name / "1.0-py3-none-any"
        key.parent.mkdir(parents=True)
        key.symlink_to(f"../../../archive-v0/{entry}")
        for suffix in (".http", ".lock"):
            Path(f"{key}{suffix}").write_bytes(entry.encode())
        ids.append(entry)
        names.append(name)
    shared = list(range(0, entries, 10))[:20]  # a few entries every env uses
    own = [i for i in range(entries) if i not in set(shared)]
    env_paths = []
    for e in range(envs):
        env = root / "envs" / f"env{e:04d}"
        hardlinked_venv(env, [cache / "archive-v0" / ids[i] for i in own[e::envs] + shared])
        env_paths.append(env)
    c = Cache.open(cache)
    store = RefsStore(state, c.root)
    index = ArchiveIndex(c)
    day_ago = time.time() - 86400
    for env in env_paths:  # as `uvrefs install` does: record, then stamp the fingerprint
        target = Target(str(env))
        record_env(c, store, target, "install", index=index)
        # Installed a day ago, stamped since (by a collect): a stamp taken within 2 s of
        # an env's change vouches for nothing (`stamps.settled`) until one is taken later.
        for site in site_dirs(target.path):
            os.utime(site, (day_ago, day_ago))
        write_stamp(store.stamp_path(target.path), fingerprint(target), time.time_ns())
    for n in range(cached_envs):
        entry = "".join(rng.choice(ALPHABET) for _ in range(16))
        used = [cache / "archive-v0" / ids[i] for i in shared[n % len(shared) :][:5]]
        hardlinked_venv(cache / "archive-v0" / entry, used)
        link = cache / "environments-v2" / f"{n:016x}" / "env"
        link.parent.mkdir(parents=True)
        link.symlink_to(f"../../archive-v0/{entry}")
    if dead_referrers:
        import json

        from uvrefs.envs import mount_namespace, mount_point

        per_entry = dead_referrers // len(shared)
        gone = [root / "gone" / f"job{j:05d}" / ".venv" for j in range(per_entry)]
        for env in gone:  # each recorded as `uvrefs install` records: the record first
            used = sorted(ids[i] for i in shared)
            store.save_env(
                str(env), [], mount_point(root), "install", used, mntns=mount_namespace()
            )
        for i in shared:
            refs = Path(store.refs_path(ids[i]))
            doc = json.loads(refs.read_text())
            doc["referrers"] += [{**doc["referrers"][0], "env": str(env)} for env in gone]
            refs.write_text(json.dumps(doc))
    dead_envs = env_paths[: envs // 2]
    dead_entries = [i for e in range(envs // 2) for i in own[e::envs]]
    for env in dead_envs:
        shutil.rmtree(env)
    dead_paths = []
    for i in dead_entries:
        key = cache / "wheels-v8" / "pypi" / names[i] / "1.0-py3-none-any"
        dead_paths += [Path(f"{key}.http"), Path(f"{key}.lock"), key, cache / "archive-v0" / ids[i]]
    files = sum(len(fs) + len(ds) for _, ds, fs in os.walk(cache))
    return World(root, cache, state, env_paths[envs // 2 :], dead_paths, files)


def add_hosts(world: World, hosts: int, envs_per_host: int, expired: int, seed: int = 1) -> int:
    """Records of `hosts` other hosts sharing the cache's store, `envs_per_host` envs each
    (local to them: not on this machine), each env using the entries every env uses and
    one more: its own for the first `expired` hosts' envs, one of the rest for the
    others'. Each host has a lease, the first `expired` last renewed 60 days ago (their envs are judged gone at the default --host-lease). Written
    as uvrefs writes them: records by `RefsStore.save_env`, leases by `hosts.renew`, and
    every entry's refs file once with all its new referrers. The number of referrers."""
    import json
    import time

    from uvrefs.cache import Cache
    from uvrefs.hosts import lease_path, renew
    from uvrefs.store.refs import RefsStore

    rng = random.Random(seed)
    cache = Cache.open(world.cache)
    store = RefsStore(world.state, cache.root)
    refs_files = sorted(Path(store.refs_path("x")).parent.glob("*.refs"))
    docs = {p: json.loads(p.read_text()) for p in refs_files}
    by_count = sorted(docs, key=lambda p: -len(docs[p]["referrers"]))
    common = by_count[:20]  # the entries every env uses
    rest = by_count[20:]
    when = "2026-10-01T00:00:00Z"
    added = 0
    saved = os.environ.get("UVREFS_HOST")
    try:
        for h in range(hosts):
            host = f"{rng.getrandbits(128):032x}:host{h:03d}"
            os.environ["UVREFS_HOST"] = host  # what save_env and renew name the host
            for e in range(envs_per_host):
                env = f"/home/user{h:03d}/job{e:02d}/.venv"
                k = h * envs_per_host + e
                alone = expired * envs_per_host
                used = [*common, rest[k] if h < expired else rest[alone + k % (len(rest) - alone)]]
                entries = [docs[p]["entry"] for p in used]
                store.save_env(env, [], "/", "install", entries)
                for p in used:
                    docs[p]["referrers"].append(
                        {"env": env, "host": host, "how": "hardlink", "command": "install",
                         "recorded_at": when, "identity": None}
                    )  # fmt: skip
                    added += 1
            renew(str(store.dir), host, every=0)
            if h < expired:
                old = time.time() - 60 * 86400
                os.utime(lease_path(str(store.dir), host), (old, old))
    finally:
        if saved is None:
            os.environ.pop("UVREFS_HOST", None)
        else:
            os.environ["UVREFS_HOST"] = saved
    for p, doc in docs.items():
        p.write_text(json.dumps(doc))
    return added
