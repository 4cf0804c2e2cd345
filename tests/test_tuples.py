"""`uvrefs.tuples.NamedTuple` (the recording path's `typing.NamedTuple`, without importing
`typing`) builds what `typing.NamedTuple` builds from the same class body."""

from __future__ import annotations

import pickle
import typing

import pytest

from uvrefs import tuples
from uvrefs.store import fields


def build(base: typing.Any) -> typing.Any:
    class Point(base):  # type: ignore[misc, valid-type]
        """A point."""

        x: int
        y: int = 0
        tags: tuple[str, ...] = ()

        def norm(self) -> int:
            return abs(self.x) + abs(self.y)

        @property
        def twice(self) -> int:
            return 2 * self.x

        @classmethod
        def origin(cls) -> typing.Any:
            return cls(0)

    return Point


def test_a_class_built_here_behaves_as_typings() -> None:
    ours, theirs = build(tuples.NamedTuple), build(typing.NamedTuple)
    assert ours is not theirs and ours.__mro__[1:] == theirs.__mro__[1:] == (tuple, object)
    for name in ("_fields", "_field_defaults", "__doc__", "__name__", "__module__"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.__annotations__.keys() == theirs.__annotations__.keys()  # typing's: ForwardRefs
    a, b = ours(3, -4), theirs(3, -4)
    assert tuple(a) == tuple(b) == (3, -4, ()) and repr(a) == repr(b) == "Point(x=3, y=-4, tags=())"
    assert (a.norm(), a.twice, ours.origin()) == (b.norm(), b.twice, (0, 0, ()))
    assert a._replace(y=1) == (3, 1, ()) and a._asdict() == b._asdict()
    assert hash(a) == hash(b) and a == b  # both are plain tuples underneath
    with pytest.raises(AttributeError):
        a.x = 1  # type: ignore[misc]


def test_what_typing_refuses_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot follow default field"):

        class Bad(tuples.NamedTuple):
            x: int = 0
            y: int

    with pytest.raises(AttributeError, match="_replace"):

        class Worse(tuples.NamedTuple):
            x: int

            def _replace(self) -> None: ...

    with pytest.raises(TypeError, match="class form"):
        tuples.NamedTuple("Point", [("x", int)])


def test_store_records_built_here_pickle_and_compare() -> None:
    """The generated store records (and so every record the store reads) are such tuples:
    they pickle by name (a process pool may send them) and compare as typing's would."""
    ref = fields.Referrer("/env", "host", "hardlink", "install", "2026-01-01T00:00:00Z")
    assert pickle.loads(pickle.dumps(ref)) == ref and ref.identity is None
    assert type(ref).__module__ == "uvrefs.store.fields" and type(ref).__qualname__ == "Referrer"
