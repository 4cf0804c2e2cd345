"""`typing.NamedTuple` without importing `typing`, for the modules a recording loads.

A recording after a fresh install is paid after every such install, mostly in imports:
`typing` costs ~4 ms there (measured: 25 runs of the interpreter importing `json`, then
`json` and `typing`). Type checkers see `typing.NamedTuple` itself; at run time
`class X(NamedTuple): ...` builds what `typing` builds from it, a `collections.namedtuple`
with the class's fields, defaults, docstring and methods.
tests/test_budget.py pins that a recording does not import `typing`, and
tests/test_tuples.py that a class built here behaves as one `typing` builds."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    import collections

    # What typing forbids in a NamedTuple's body, and what every class body has.
    _PROHIBITED = frozenset(
        "__new__ __init__ __slots__ __getnewargs__ _fields _field_defaults _make _replace "
        "_asdict _source".split()
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__", "__qualname__"})

    class _Meta(type):
        def __new__(mcls, name, bases, ns):
            annotations = ns.get("__annotations__", {})
            fields = list(annotations)
            defaults = []
            for field in fields:
                if field in ns:
                    defaults.append(ns[field])
                elif defaults:
                    raise TypeError(
                        f"Non-default namedtuple field {field} cannot follow default field"
                    )
            tpl = collections.namedtuple(name, fields, defaults=defaults, module=ns["__module__"])
            tpl.__annotations__ = dict(annotations)
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"Cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in tpl._fields:
                    setattr(tpl, key, value)
            tpl.__qualname__ = ns.get("__qualname__", name)
            return tpl

    _Base = type.__new__(_Meta, "NamedTuple", (), {"__module__": __name__})

    def NamedTuple(typename, fields=None, /, **kwargs):
        """Only the class form is provided: `class X(NamedTuple): ...`."""
        raise TypeError("use the class form: class X(NamedTuple): ...")

    NamedTuple.__mro_entries__ = lambda bases: (_Base,)
