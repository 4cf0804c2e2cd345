"""Hostile and broken input: nothing outside the cache is touched, no traceback, no hang.

Each command runs against a store holding a FIFO, deeply nested JSON, NUL bytes, a huge
sparse file or a symlink to a canary outside, in place of each kind of store file; every
run must finish within a timeout, print no traceback, and leave the canaries as they were."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uvrefs import stamps


def canary(path: Path, text: str = "canary") -> tuple[str, int]:
    path.write_text(text)
    return text, path.stat().st_mtime_ns


def unchanged(path: Path, before: tuple[str, int]) -> bool:
    return (path.read_text(), path.stat().st_mtime_ns) == before


# ---------------------------------------------------------------- temp files


def test_write_atomic_never_writes_through_a_planted_temp_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    before = canary(outside)
    target = tmp_path / "store.json"
    # the name the old writer used: `<path>.<pid>.tmp`
    Path(f"{target}.{os.getpid()}.tmp").symlink_to(outside)
    stamps.write_atomic(str(target), "new")
    assert target.read_text() == "new" and not target.is_symlink()
    assert unchanged(outside, before)


def test_write_atomic_temp_names_are_hidden_unpredictable_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.refs"
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    stamps.write_atomic(str(target), "a")
    stamps.write_atomic(str(target), "b")
    assert all(n.startswith(".x.refs.") and n.endswith(".tmp") for n in seen), seen
    assert seen[0] != seen[1]

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        stamps.write_atomic(str(target), "c")
    assert sorted(os.listdir(tmp_path)) == ["x.refs"] and target.read_text() == "b"


def test_write_atomic_replaces_a_symlink_at_the_target_without_following_it(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    before = canary(outside)
    target = tmp_path / "sizes.json"
    target.symlink_to(outside)
    stamps.write_atomic(str(target), "{}")
    assert not target.is_symlink() and target.read_text() == "{}"
    assert unchanged(outside, before)


def test_doctor_link_probes_never_open_a_planted_file(tmp_path: Path) -> None:
    from uvrefs.doctor import _try_links

    cache, envs = tmp_path / "cache", tmp_path / "envs"
    cache.mkdir()
    envs.mkdir()
    outside = tmp_path / "outside"
    before = canary(outside)
    planted = envs / f".uvrefs-doctor-{os.getpid()}"  # the name the old probe used
    planted.symlink_to(outside)
    _try_links(cache, envs)
    assert unchanged(outside, before)
    assert os.listdir(envs) == [planted.name] and os.listdir(cache) == []
