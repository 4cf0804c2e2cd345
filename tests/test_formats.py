"""The store is written with `json` and read through a fast check of the current format;
the pydantic models in uvrefs.store.schema define it. These tests pin the three together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uvrefs.errors import StoreError
from uvrefs.store import refs, schema
from uvrefs.store.refs import RefsStore
from uvrefs.store.schema import EntryRefs, EnvRecord, StoreInfo


def as_models_dump(model: type[schema.BaseModel], text: str) -> str:
    return json.dumps(model.model_validate(json.loads(text)).model_dump(mode="json"))


def test_format_versions_agree() -> None:
    assert refs.FORMAT == schema.FORMAT


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


# -- the fast reader (refs.fast_refs / fast_env) never accepts what the models refuse

_TEXT = st.text(max_size=8)
_GOOD_TIMES = ("2026-11-25T09:00:00Z", "2026-11-25T09:00:00.123456+01:00")
_TIMES = st.sampled_from(
    [
        *_GOOD_TIMES,
        "2026-02-30T00:00:00Z",
        "2026-11-25",
        "20261125T090000Z",
        "2026-11-25T09:00:00",
        "yesterday",
        "",
    ]
)
_REFERRER = st.fixed_dictionaries(
    {
        "env": _TEXT,
        "host": _TEXT,
        "how": st.sampled_from(["symlink", "hardlink", "content", "build", "copy"]),
        "command": _TEXT,
        "recorded_at": _TIMES,
    },
    optional={"extra": st.just("")},
)
_ANY = st.none() | st.booleans() | st.integers(-1, 2) | _TEXT | st.lists(_TEXT, max_size=2)


def _wellformed(doc: dict[str, Any]) -> bool:
    """Exactly the current format as uvrefs writes it (before any mutation)."""
    return type(doc["format"]) is int and doc["format"] == refs.FORMAT


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal as JSON documents: `True == 1` and `1.0 == 1` in Python, not in a file."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _mutated(doc: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """`doc` with some keys dropped or given values of any kind."""
    doc = dict(doc)
    keys = st.sampled_from([*doc, "format", "surplus"])
    for key in data.draw(st.lists(keys, max_size=1)):
        if data.draw(st.booleans()):
            doc.pop(key, None)
        else:
            doc[key] = data.draw(_ANY)
    return doc


def test_a_bool_or_float_format_is_a_mutation_not_the_wellformed_document() -> None:
    """Found by hypothesis once (CI failed on it): `{"format": True}` equals `{"format": 1}`
    in Python, so the property took a mutated document for the well-formed one."""
    doc = {"format": 1, "entry": "e", "dist": None, "version": None, "tags": [], "referrers": []}
    assert refs.fast_refs(doc) is not None
    for odd in (True, 1.0):
        mutated = {**doc, "format": odd}
        assert mutated == doc and not _same(mutated, doc)
        assert refs.fast_refs(mutated) is None


@settings(max_examples=500)
@given(
    st.fixed_dictionaries(
        {
            "format": st.sampled_from([1, 1, 1, True, 1.0, 2]),
            "entry": _TEXT,
            "dist": st.none() | _TEXT,
            "version": st.none() | _TEXT,
            "tags": st.lists(_TEXT, max_size=2),
            "referrers": st.lists(_REFERRER, max_size=3),
        }
    ),
    st.data(),
)
def test_fast_refs_accept_only_what_the_model_accepts(doc: dict[str, Any], data: Any) -> None:
    wellformed = _wellformed(doc) and all(
        r.keys() == refs.REF_KEYS and r["how"] in refs.HOWS and r["recorded_at"] in _GOOD_TIMES
        for r in doc["referrers"]
    )
    mutated = _mutated(doc, data)
    fast = refs.fast_refs(mutated)
    assert fast is not None or not (wellformed and _same(mutated, doc)), "the common case fell back"
    if fast is None:
        return  # the model decides (RefsStore.load falls back to it)
    doc = mutated
    model = EntryRefs.model_validate(doc)  # raises if the fast reader took too much
    assert fast == refs.refs_from_model(model)


@settings(max_examples=500)
@given(
    st.fixed_dictionaries(
        {
            "format": st.sampled_from([1, 1, True, 2]),
            "path": _TEXT,
            "host": _TEXT,
            "site_dirs": st.lists(_TEXT, max_size=2),
            "mount": st.none() | _TEXT,
            "command": _TEXT,
            "recorded_at": _TIMES,
            "entries": st.lists(_TEXT, max_size=2),
        }
    ),
    st.data(),
)
def test_fast_env_accepts_only_what_the_model_accepts(doc: dict[str, Any], data: Any) -> None:
    wellformed = _wellformed(doc) and doc["recorded_at"] in _GOOD_TIMES
    mutated = _mutated(doc, data)
    fast = refs.fast_env(mutated)
    assert fast is not None or not (wellformed and _same(mutated, doc)), "the common case fell back"
    if fast is None:
        return
    doc = mutated
    model = EnvRecord.model_validate(doc)  # raises if the fast reader took too much
    assert fast == refs.env_from_model(model)


def test_fast_reader_takes_what_the_store_writes(tmp_path: Path) -> None:
    """The common case must not fall back to pydantic (that is the point of it)."""
    store = RefsStore(tmp_path / "state", tmp_path / "cache")
    with store.locked():
        store.record(
            tmp_path / "env",
            {"AbC-123_xyzXYZ00": "hardlink"},
            "install",
            lambda e: ("numpy", "2.4.6", ["py3-none-any"]),
        )
        store.save_env(str(tmp_path / "env"), [], "/", "install", ["AbC-123_xyzXYZ00"])
    assert refs.fast_refs(json.loads(store.refs_path("AbC-123_xyzXYZ00").read_text()))
    assert refs.fast_env(json.loads(next(store.envs_dir.glob("*.json")).read_text()))


def test_archive_sizes_round_trip_match_the_model_and_forgive_garbage(tmp_path: Path) -> None:
    from uvrefs.footprints import Footprint

    store = RefsStore(tmp_path / "state", tmp_path / "cache")
    infos = ("numpy-2.4.6.dist-info",)
    dirs = (("numpy", 56), ("numpy-2.4.6.dist-info", 78))
    sizes = {"AbC-123_xyzXYZ00": Footprint(12, 34, 4096, infos, dirs, (90, 99), False)}
    store.save_archive_sizes(sizes)
    text = (store.dir / "sizes.json").read_text()
    assert schema.ArchiveSizes.model_validate_json(text).archives["AbC-123_xyzXYZ00"][2] == 4096
    assert store.archive_sizes() == sizes
    # A record from before directories were kept is read, to be walked again.
    older = '{"format": 1, "archives": {"x": [12, 34, 4096, ["numpy-2.4.6.dist-info"]]}}'
    assert schema.ArchiveSizes.model_validate_json(older).archives["x"][2] == 4096
    (store.dir / "sizes.json").write_text(older)
    assert store.archive_sizes() == {"x": Footprint(12, 34, 4096, infos)}
    (store.dir / "sizes.json").write_text('{"format": 1, "archives": {"x": [1, 2]}}')
    assert store.archive_sizes() == {}  # a cache: anything odd means "walk again"


# -- one schema: the readers and writers of uvrefs/store/fields.py follow from the models


def test_the_generated_readers_and_writers_are_up_to_date() -> None:
    """`make schema` was run after the last change to a model."""
    from uvrefs.store import codegen

    generated = Path(codegen.__file__).with_name("fields.py").read_text()
    assert generated == codegen.generate(), "a model changed: run `make schema`"


def _valid(kind: Any) -> st.SearchStrategy[Any]:
    """JSON values of a field `kind` (uvrefs.store.codegen) that its model takes."""
    from uvrefs.store import codegen

    if kind in ("str", "int", "bool"):
        return {"str": _TEXT, "int": st.integers(-3, 3), "bool": st.booleans()}[kind]
    if kind == "time":
        return st.sampled_from(_GOOD_TIMES)
    tag = kind[0]
    if tag == "literal":
        return st.sampled_from(kind[1])
    if tag == "opt":
        return st.none() | _valid(kind[1])
    if tag == "tuple":
        return st.tuples(*map(_valid, kind[1])).map(list)
    if tag == "list":
        return st.lists(_valid(kind[1]), max_size=2)
    if tag == "model":
        return _document(getattr(schema, kind[1]), codegen)
    raise AssertionError(kind)


def _document(model: type[schema.BaseModel], codegen: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Documents of `model` with any of its optional fields, each of any valid value."""
    required, optional = {}, {}
    for name, info in model.model_fields.items():
        if name == "format":
            required[name] = st.just(schema.FORMAT)
            continue
        values = _valid(codegen.kind_of(info.annotation))
        (required if info.is_required() else optional)[name] = values
    return st.fixed_dictionaries(required, optional=optional)


def _records() -> list[Any]:
    from uvrefs.store import codegen, fields

    found = []
    for model in codegen.MODELS:
        fn = codegen.snake(model.__name__)
        read, convert, doc = (
            getattr(fields, f"read_{fn}"),
            getattr(fields, f"{fn}_from_model"),
            getattr(fields, f"{fn}_doc"),
        )
        found.append((model, read, convert, doc, _document(model, codegen)))
    return found


@pytest.mark.parametrize("record", _records(), ids=lambda r: r[0].__name__)
def test_every_field_of_every_record_reads_as_its_model_reads_it(record: Any) -> None:
    """Generated from the models, every field present or absent: a document the model
    takes as it is, the fast reader takes too, alike, and writes back the same document;
    one mutated, the fast reader takes only what the model takes."""
    model, read, convert, doc, documents = record

    @settings(max_examples=500, deadline=None)
    @given(documents, st.data())
    def check(document: dict[str, Any], data: Any) -> None:
        fast = read(document)
        assert fast is not None, document  # the common case never falls back
        assert fast == convert(model.model_validate(document))
        written = doc(fast)
        assert read(written) == fast and convert(model.model_validate(written)) == fast
        mutated = dict(document)
        keys = st.sampled_from([*model.model_fields, "surplus"])
        for key in data.draw(st.lists(keys, min_size=1, max_size=3, unique=True)):
            if data.draw(st.booleans()):
                mutated.pop(key, None)
            else:
                mutated[key] = data.draw(_ANY)
        fast = read(mutated)
        if fast is not None:
            assert fast == convert(model.model_validate(mutated))

    check()


@given(st.binary(max_size=300))
def test_store_names_stay_sha256(data: bytes) -> None:
    """The store's names (a cache's store, an env's record and stamp, a host's lease, a
    store's registration) are on disk in every existing store: hashed without hashlib
    (uvrefs.store.stamps.short_key), they are still hashlib's SHA-256, and so is the
    fallback for a Python without the built-in module."""
    import hashlib

    from uvrefs.hosts import host_key
    from uvrefs.store import stamps

    expected = hashlib.sha256(data).hexdigest()[:20]
    assert stamps.short_key(data) == expected
    assert stamps.env_key(os.fsdecode(data)) == expected
    assert host_key(data.decode("utf-8", "surrogateescape")) == expected


def test_short_key_falls_back_to_hashlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python built without `_sha2`/`_sha256` hashes with hashlib, to the same names."""
    import builtins
    import hashlib

    from uvrefs.store import stamps

    real_import = builtins.__import__

    def no_builtin_sha(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in ("_sha2", "_sha256"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_builtin_sha)
    sha256 = stamps._builtin_sha256()
    monkeypatch.undo()
    assert sha256 is hashlib.sha256
    assert stamps._sha256 is not hashlib.sha256  # this Python has the built-in module


def _holds(path: Path, how: str) -> subprocess.Popen[str]:
    """Another process holding the store's lock at `path` (`filelock`, as an older uvrefs
    takes it, or `store`, as this one does) until its stdin closes."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from filelock import FileLock\n"
        "from uvrefs.store.refs import RefsStore\n"
        "path = Path(sys.argv[1])\n"
        "lock = FileLock(str(path / 'store.lock')) if sys.argv[2] == 'filelock' else "
        "RefsStore.at(path, path).locked()\n"
        "with lock:\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.mark.parametrize("other", ["filelock", "store"])
def test_the_store_lock_excludes_filelock_and_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    """The store's lock is taken with `flock` itself, not filelock (its import costs a
    recording tens of ms: `make bench`'s floors), and is the same lock: one held by
    filelock (an older uvrefs) or by another uvrefs keeps this one waiting until it is
    released, and then it is taken."""
    import threading

    store = RefsStore.at(tmp_path, tmp_path)
    store._ensure_dirs()
    monkeypatch.setattr(refs, "LOCK_TIMEOUT", 0.3)
    holder = _holds(tmp_path, other)
    try:
        with pytest.raises(StoreError, match="stayed locked"), store.locked():
            pass
        got = threading.Event()

        def take() -> None:
            with store.locked():
                got.set()

        monkeypatch.setattr(refs, "LOCK_TIMEOUT", 30.0)
        waiter = threading.Thread(target=take)
        waiter.start()
        assert not got.wait(0.3)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    waiter.join(30)
    assert got.is_set()


def test_the_store_lock_falls_back_to_filelock_without_flock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where filelock would not take a plain `flock` (ENOSYS: no flock on this filesystem),
    it takes the lock its own way, as before."""
    import errno
    import fcntl

    taken: list[str] = []

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOSYS, "no flock")

    class FakeFileLock:
        def __init__(self, path: str, timeout: float) -> None:
            taken.append(path)

        def __enter__(self) -> None:
            pass

        def __exit__(self, *exc: object) -> None:
            pass

    import filelock

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr(filelock, "FileLock", FakeFileLock)
    store = RefsStore.at(tmp_path, tmp_path)
    with store.locked():
        pass
    assert taken == [str(tmp_path / "store.lock")]


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # up to 2100
def test_times_are_written_as_datetime_writes_them(ns: int) -> None:
    """The store's times are written without datetime (refs.utc_text), exactly as pydantic
    and `datetime.isoformat` write them: microseconds only when there are some."""
    from datetime import UTC, datetime

    from uvrefs.store.checks import time_text

    seconds, micro = divmod(ns // 1000, 1_000_000)
    expected = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micro)
    assert refs.utc_text(ns) == time_text(expected)
    assert schema.EntryRefs.model_validate(
        {"entry": "x", "referrers": [{"env": "/e", "host": "h", "how": "content",
                                      "command": "install", "recorded_at": refs.utc_text(ns)}]}
    ).referrers[0].recorded_at == expected  # fmt: skip


def test_the_host_name_is_the_one_socket_gives() -> None:
    import socket

    from uvrefs.hosts import hostname

    assert hostname() == socket.gethostname()
