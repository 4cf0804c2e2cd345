"""One door to the filesystem: `uvrefs/files.py` is the only module of the package that
opens a file or a directory. Everything else reads and writes through it, so a planted
symlink, FIFO or oversized file is refused in one place."""

from __future__ import annotations

import ast
import errno
import os
import threading
from pathlib import Path

import pytest

from uvrefs import files

PACKAGE = Path(files.__file__).parent
DOOR = Path(files.__file__).name
# Calls that open a file or directory (or make a temp file): by name, or as an attribute
# of anything (`os.open`, `Path.read_text`, `tempfile.mkstemp`, `io.open`, `os.fdopen`).
OPENERS = {"open", "fdopen", "mkstemp", "NamedTemporaryFile", "TemporaryFile"}
PATH_IO = {"read_text", "write_text", "read_bytes", "write_bytes"}
# Our own classmethods named `open` (they validate a cache root; they open nothing).
OURS = {"Cache"}


def openings(source: str) -> list[tuple[int, str]]:
    """(line, call) for every call in `source` that opens something outside the door."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in OPENERS:
            found.append((node.lineno, func.id))
        elif isinstance(func, ast.Attribute) and (
            func.attr in PATH_IO
            or (
                func.attr in OPENERS
                and not (isinstance(func.value, ast.Name) and func.value.id in OURS)
            )
        ):
            found.append((node.lineno, ast.unparse(func)))
    return found


def test_no_module_opens_a_file_outside_the_door() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {call}("
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != DOOR
        for line, call in openings(path.read_text())
    ]
    assert not offenders, "open through uvrefs.files instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        "open('x')",
        "os.open('x', 0)",
        "Path('x').read_text()",
        "p.write_bytes(b'')",
        "tempfile.NamedTemporaryFile()",
        "io.open('x')",
        "os.fdopen(3)",
    ],
)
def test_the_door_check_sees_every_kind_of_open(source: str) -> None:
    """The check above would catch each of these (it cannot pass for nothing)."""
    assert openings(source)


def test_the_door_check_lets_our_own_classmethod_through() -> None:
    assert not openings("Cache.open(root)")


def test_read_file_refuses_links_fifos_and_big_files(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"x" * 100)
    (tmp_path / "link").symlink_to(real)
    os.mkfifo(tmp_path / "fifo")
    assert files.read_file(str(real), 100) == b"x" * 100
    for name, code in (("link", errno.ELOOP), ("fifo", errno.EINVAL)):
        with pytest.raises(OSError) as caught:
            files.read_file(str(tmp_path / name), 100)
        assert caught.value.errno == code
    with pytest.raises(OSError) as caught:
        files.read_file(str(real), 99)
    assert caught.value.errno == errno.EFBIG


def test_open_append_and_tail_never_wait_on_a_fifo_nor_follow_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("untouched\n")
    (tmp_path / "link.log").symlink_to(outside)
    os.mkfifo(tmp_path / "fifo.log")
    done: list[str] = []

    def attempt() -> None:
        for name in ("link.log", "fifo.log"):
            with pytest.raises(OSError):
                os.close(files.open_append(str(tmp_path / name)))
            assert files.tail(str(tmp_path / name)) is None
        done.append("ok")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(10)
    assert done == ["ok"], "hung on a FIFO"
    assert outside.read_text() == "untouched\n"


def test_write_atomic_durable_writes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    files.write_atomic(str(target), "{}", durable=True)
    files.write_atomic(str(target), b"[]")
    assert target.read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
