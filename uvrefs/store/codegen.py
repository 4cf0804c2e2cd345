"""Derives `uvrefs/store/fields.py` from the pydantic models in `uvrefs/store/schema.py`,
the one place a store record's fields are declared: `make schema` (`python -m
uvrefs.store.codegen > uvrefs/store/fields.py`) writes it, and tests/test_formats.py fails
when the file differs from what this prints. A new field is one edit of a model.

For each record it writes a plain tuple of its fields, a reader that takes a parsed
document only if the model takes it exactly as it is (checks written out field by field:
the store reads thousands of files per collect, and pydantic costs ~100 ms to load), the
conversion of a validated model into the tuple, and the document a writer writes. The
kinds of field it knows are those the models use; any other stops it with an error."""

from __future__ import annotations

import re
import sys
import types
from datetime import datetime
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from uvrefs.store import schema

# The records derived, in order (a record before the records that hold it).
MODELS: tuple[type[BaseModel], ...] = (
    schema.Referrer,
    schema.EntryRefs,
    schema.EnvRecord,
    schema.Watched,
    schema.Holders,
    schema.Peers,
    schema.StoreMove,
    schema.StoreInfo,
)

Kind = Any  # "str" | "int" | "bool" | "time" | (tag, ...)


def kind_of(annotation: Any) -> Kind:
    """A field's annotation as a kind: a name, or a tagged tuple for the composite ones."""
    origin, args = get_origin(annotation), get_args(annotation)
    for plain, name in ((str, "str"), (int, "int"), (bool, "bool"), (datetime, "time")):
        if annotation is plain:
            return name
    if origin is Literal:
        return ("literal", args)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return ("opt", kind_of(rest[0]))
    if origin is tuple and Ellipsis not in args:
        return ("tuple", tuple(kind_of(a) for a in args))
    if origin is list:
        return ("list", kind_of(args[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", annotation.__name__)
    raise TypeError(f"codegen knows no kind of field for {annotation!r}: teach it one")


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _plain(kind: Kind) -> bool:
    """Read as it is (no conversion)."""
    return kind in ("str", "int", "bool", "time") or kind[0] == "literal"


def _is_model(kind: Kind) -> bool:
    return isinstance(kind, tuple) and kind[0] == "model"


def check(kind: Kind, v: str, values: str = "") -> str:
    """An expression true when the JSON value `v` is of `kind` exactly as the model takes
    it."""
    if kind in ("str", "int", "bool"):
        return f"isinstance({v}, str)" if kind == "str" else f"type({v}) is {kind}"
    if kind == "time":
        return f"is_time({v})"
    tag = kind[0]
    if tag == "literal":
        allowed = values or repr(tuple(kind[1]))
        if all(isinstance(x, str) for x in kind[1]):
            return f"(isinstance({v}, str) and {v} in {allowed})"
        return f"(type({v}) is int and {v} in {allowed})"
    if tag == "opt":
        return f"({v} is None or {check(kind[1], v)})"
    if tag == "tuple":
        parts = " and ".join(check(k, f"{v}[{i}]") for i, k in enumerate(kind[1]))
        return f"(isinstance({v}, list) and len({v}) == {len(kind[1])} and {parts})"
    if tag == "list" and kind[1] == "str":
        return f"strs({v})"
    if tag == "list":
        x = "y" if v == "x" else "x"
        return f"(isinstance({v}, list) and all({check(kind[1], x)} for {x} in {v}))"
    raise TypeError(kind)


def to_tuple(kind: Kind, v: str) -> str:
    """The checked JSON value `v` as the plain tuple holds it."""
    if _plain(kind):
        return v
    tag = kind[0]
    if tag == "opt":
        return v if _plain(kind[1]) else f"(None if {v} is None else {to_tuple(kind[1], v)})"
    if tag == "tuple":
        return "(" + ", ".join(to_tuple(k, f"{v}[{i}]") for i, k in enumerate(kind[1])) + ")"
    if tag == "list":
        x = "y" if v == "x" else "x"
        return f"tuple({v})" if _plain(kind[1]) else f"tuple({to_tuple(kind[1], x)} for {x} in {v})"
    raise TypeError(kind)


def from_model(kind: Kind, v: str) -> str:
    """A validated model's attribute `v` as the plain tuple holds it."""
    if kind == "time":
        return f"time_text({v})"
    if _plain(kind):
        return v
    tag = kind[0]
    if tag == "model":
        return f"{snake(kind[1])}_from_model({v})"
    if tag == "opt":
        inner = from_model(kind[1], v)
        return v if inner == v else f"(None if {v} is None else {inner})"
    if tag == "tuple":
        return "(" + ", ".join(from_model(k, f"{v}[{i}]") for i, k in enumerate(kind[1])) + ")"
    if tag == "list":
        x = "y" if v == "x" else "x"
        inner = from_model(kind[1], x)
        return f"tuple({v})" if inner == x else f"tuple({inner} for {x} in {v})"
    raise TypeError(kind)


def to_json(kind: Kind, v: str) -> str:
    """The plain tuple's value `v` as the JSON document holds it."""
    if _plain(kind):
        return v
    tag = kind[0]
    if tag == "model":
        return f"{snake(kind[1])}_doc({v})"
    if tag == "opt":
        inner = to_json(kind[1], v)
        return v if inner == v else f"(None if {v} is None else {inner})"
    if tag == "tuple":
        if all(_plain(k) or (k[0] == "opt" and _plain(k[1])) for k in kind[1]):
            return f"list({v})"
        return "[" + ", ".join(to_json(k, f"{v}[{i}]") for i, k in enumerate(kind[1])) + "]"
    if tag == "list":
        x = "y" if v == "x" else "x"
        inner = to_json(kind[1], x)
        return f"list({v})" if inner == x else f"[{inner} for {x} in {v}]"
    raise TypeError(kind)


def py_type(kind: Kind) -> str:
    if kind in ("str", "int", "bool"):
        return str(kind)
    if kind == "time":
        return "str"  # RFC 3339, as written
    tag = kind[0]
    if tag == "literal":
        return "str" if all(isinstance(x, str) for x in kind[1]) else "int"
    if tag == "opt":
        return f"{py_type(kind[1])} | None"
    if tag == "tuple":
        return "tuple[" + ", ".join(py_type(k) for k in kind[1]) + "]"
    if tag == "list":
        return f"tuple[{py_type(kind[1])}, ...]"
    if tag == "model":
        return str(kind[1])
    raise TypeError(kind)


def default_of(info: Any) -> str | None:
    """The JSON default of a field that may be absent (None: required)."""
    if info.is_required():
        return None
    if info.default_factory is not None:
        if info.default_factory() != []:
            raise TypeError("codegen knows only an empty list as a default factory")
        return "[]"
    if info.default is not None:
        raise TypeError("codegen knows only None as a default value")
    return "None"


def record(model: type[BaseModel]) -> str:
    name, fn = model.__name__, snake(model.__name__)
    upper = fn.upper()
    top = "format" in model.model_fields
    fields = [
        (f, default_of(info), kind_of(info.annotation))
        for f, info in model.model_fields.items()
        if f != "format"
    ]
    out = [f'\n\nclass {name}(NamedTuple):\n    """`schema.{name}`, read."""\n\n']
    trailing = len(fields)  # defaults only after the last required field
    while trailing and fields[trailing - 1][1] is not None:
        trailing -= 1
    for n, (f, default, kind) in enumerate(fields):
        tail = f" = {'()' if default == '[]' else default}" if default and n >= trailing else ""
        out.append(f"    {f}: {py_type(kind)}{tail}\n")
    keys = sorted(f for f, _, _ in fields) + (["format"] if top else [])
    required = sorted(f for f, d, _ in fields if d is None)
    out.append(f"\n\n{upper}_KEYS: frozenset[str] = frozenset({keys!r})\n")
    out.append(f"{upper}_REQUIRED: frozenset[str] = frozenset({required!r})\n")
    for f, _, kind in fields:
        if isinstance(kind, tuple) and kind[0] == "literal":
            out.append(f"{upper}_{f.upper()} = {tuple(kind[1])!r}\n")
    out.append(
        f"\n\ndef read_{fn}(d: object) -> {name} | None:\n"
        f'    """`d` (parsed JSON) as `{name}` if `schema.{name}` takes it exactly as it is, else\n'
        f'    None (then the model decides: it may migrate it, or say what is wrong)."""\n'
        f"    if not (isinstance(d, dict) and {upper}_REQUIRED <= d.keys() <= {upper}_KEYS):\n"
        f"        return None\n"
    )
    if top:
        out.append('    if not (type(d.get("format")) is int and d["format"] == FORMAT):\n')
        out.append("        return None\n")
    values = []
    for n, (f, default, kind) in enumerate(fields):
        var = f"v{n}"
        get = f"d[{f!r}]" if default is None else f"d.get({f!r}, {default})"
        if isinstance(kind, tuple) and kind[0] == "list" and _is_model(kind[1]):
            out.append(f"    {var} = records({get}, read_{snake(kind[1][1])})\n")
            out.append(f"    if {var} is None:\n        return None\n")
            values.append(var)
            continue
        out.append(f"    {var} = {get}\n")
        out.append(f"    if not {check(kind, var, f'{upper}_{f.upper()}')}:\n        return None\n")
        values.append(to_tuple(kind, var))
    out.append(f"    return {name}({', '.join(values)})\n")
    converted = ", ".join(from_model(k, f"m.{f}") for f, _, k in fields)
    out.append(
        f"\n\ndef {fn}_from_model(m: Any) -> {name}:\n"
        f'    """A validated `schema.{name}` as `{name}`."""\n'
        f"    return {name}({converted})\n"
    )
    items = (['"format": FORMAT'] if top else []) + [
        f'"{f}": {to_json(k, f"v.{f}")}' for f, _, k in fields
    ]
    out.append(
        f"\n\ndef {fn}_doc(v: {name}) -> dict[str, Any]:\n"
        f'    """`v` as the document a writer writes (what `schema.{name}` reads back as `v`)."""\n'
        f"    return {{{', '.join(items)}}}\n"
    )
    return "".join(out)


HEAD = '''"""GENERATED by `make schema` from the pydantic models in uvrefs/store/schema.py (see
uvrefs/store/codegen.py): do not edit. tests/test_formats.py fails when it is out of date."""

from __future__ import annotations

from uvrefs.store.checks import is_time, records, strs, time_text
from uvrefs.tuples import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = {format}
'''


def generate() -> str:
    return HEAD.format(format=schema.FORMAT) + "".join(record(m) for m in MODELS)


if __name__ == "__main__":
    sys.stdout.write(generate())
