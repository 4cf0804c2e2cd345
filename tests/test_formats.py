"""The install path writes the store with `json` alone; the pydantic models in
uvrefs.formats define and validate it. These tests pin the two together."""

from __future__ import annotations

import json
from pathlib import Path

from uvrefs import formats, refs
from uvrefs.formats import EntryRefs, EnvRecord, StoreInfo
from uvrefs.refs import RefsStore


def as_models_dump(model: type[formats.BaseModel], text: str) -> str:
    return json.dumps(model.model_validate(json.loads(text)).model_dump(mode="json"), indent=2)


def test_format_versions_agree() -> None:
    assert refs.FORMAT == formats.FORMAT


def test_what_the_store_writes_is_exactly_what_the_models_dump(tmp_path: Path) -> None:
    store = RefsStore(tmp_path / "state", tmp_path / "cache")
    env = tmp_path / "new\nline env"

    def describe(entry: str) -> tuple[str, str, list[str]]:
        return "numpy", "2.4.6", ["cp311-cp311-manylinux_2_17_x86_64"]

    with store.locked():
        changed, corrupt = store.record(
            env, {"AbC-123_xyzXYZ00": "hardlink", "Other0000000000": "build"}, "install", describe
        )
        store.save_env(str(env), [str(tmp_path / "site")], "/", "install", ["AbC-123_xyzXYZ00"])
        again, _ = store.record(env, {"AbC-123_xyzXYZ00": "hardlink"}, "install", describe)
    assert (changed, corrupt, again) == (2, [], 0)  # unchanged referrers are not rewritten
    for path in store.refs_dir.glob("*.refs"):
        text = path.read_text()
        assert as_models_dump(EntryRefs, text) == text
    record = next(store.envs_dir.glob("*.json")).read_text()
    assert as_models_dump(EnvRecord, record) == record
    info = (store.dir / "store.json").read_text()
    assert as_models_dump(StoreInfo, info) == info
    loaded = store.load("AbC-123_xyzXYZ00")
    assert loaded is not None and loaded.referrers[0].env == str(env)


def test_record_leaves_unreadable_refs_alone(tmp_path: Path) -> None:
    store = RefsStore(tmp_path / "state", tmp_path / "cache")
    with store.locked():
        store.refs_path("Bad0000000000000").write_text('{"format": 2, "entry": "Bad0000000000000"}')
        changed, corrupt = store.record(
            tmp_path / "env", {"Bad0000000000000": "content"}, "install", lambda e: (None, None, [])
        )
    assert (changed, corrupt) == (0, ["Bad0000000000000"])
    assert (
        store.refs_path("Bad0000000000000").read_text()
        == '{"format": 2, "entry": "Bad0000000000000"}'
    )
