"""Second attack on the one-snapshot collect (uvrefs/store/snapshot.py, uvrefs/gc/collect.py
`records_now` / `write_back`, uvrefs/gc/mark.py `scan_or_reuse`): the fingerprint stamps a
collect writes back, and the records it trusts from them.

Envs use uv's symlink link mode: a wrongly freed entry breaks the env, which `intact`
(every file of every installed RECORD exists) shows."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import SYMLINK, World, collect_json, freed, in_process, install
from tests.test_liveness import intact


def _site(env: Path) -> Path:
    (site,) = env.glob("lib/python*/site-packages")
    return site


def test_a_stamp_written_back_in_the_same_mtime_tick_as_a_change_vouches_for_a_stale_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collect scans an env whose fingerprint no longer matches its stamp, and writes the
    scan back as the env's record with the fingerprint taken just before the scan as its
    stamp. The fingerprint is the site dir's mtime and its dist-info names. If the env
    changes after the scan within the same mtime tick as that fingerprint (one second on
    ext3, HFS+, many NFS servers; a jiffy elsewhere: simulated here by giving the site dir
    back its mtime), e.g. `uv pip install --reinstall` of the same version from another
    wheel (same dist-info names, a new archive), the fingerprint is unchanged: the sweep
    keeps the planning scan, the write-back stamps a record that names the OLD archive.
    Every later collect trusts that record (`scan_or_reuse`: stamp == fingerprint) and
    never scans again, so the NEW archive, which the env's files link to, is untracked
    and, by the record, unused: `collect --untracked` frees it and the env is broken.
    The store's own reads treat a file changed within RACY_NS of a read as possibly
    changed unseen (StoreView.read, roots' listings); the stamps the reuse trusts do not
    (a stamp whose site dir's mtime is that close to when it was taken should not be
    written, or not trusted)."""
    from uvrefs.gc import collect as core
    from uvrefs.gc import mark as mark_mod
    from uvrefs.gc.plan import Policy

    env = world.venv("env")
    install(world, env, "alpha==1.0")
    install(world, env, "beta", tracked=False)  # the stamp no longer matches: scanned
    wheel = next(world.wheels.glob("alpha-1.0-*.whl"))
    other = world.root / "elsewhere"
    other.mkdir()
    shutil.copy(wheel, other / wheel.name)  # the same wheel at another path: a new archive
    (old,) = world.archive_of("alpha", "1.0")
    cache, store = in_process(world, monkeypatch)

    real = mark_mod.scan_or_reuse
    done = []

    def scan_or_reuse(root, index, host, print_, trusted):  # type: ignore[no-untyped-def]
        st = os.stat(_site(env)) if root.path == str(env) else None
        scan = real(root, index, host, print_, trusted)
        if st is not None and not done:
            done.append(True)
            assert not scan.reused
            world.uv(
                "pip", "install", "-q", "--reinstall", "-p", env, *world.offline(),
                other / wheel.name, extra_env=SYMLINK,
            )  # fmt: skip
            os.utime(_site(env), ns=(st.st_atime_ns, st.st_mtime_ns))  # the same tick
        return scan

    monkeypatch.setattr(mark_mod, "scan_or_reuse", scan_or_reuse)
    core.collect(cache, store, dry_run=False, timeout=10, policy=Policy(grace=0.0))
    monkeypatch.undo()
    assert done
    new = world.archive_of("alpha", "1.0") - {old}
    assert new, "the reinstall made no new archive"
    assert intact(env)
    from uvrefs.targets import Target, fingerprint

    record = store.env_record(str(env))
    stamp = Path(store.stamp_path(str(env))).read_text()
    vouched = record is not None and stamp == fingerprint(Target(str(env)))
    result = collect_json(world, "--untracked", "--min-age", "0")
    assert intact(env), (
        f"freed {freed(result)}: the env's alpha links into {new}, which a stamped, "
        "trusted record did not name; its files are gone (the collect's write-back "
        f"stamped a record naming {record.entries if record else None} as current: {vouched})"
    )
