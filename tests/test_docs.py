"""The README's and docs/cli.md's shell examples, run: every `$ uvrefs ...` line in a
code block runs against a world set up as the docs describe (a live env `web`, a deleted
one `old`, one made with plain uv beside them, `scratch`), must succeed, and must print
the documented kinds of lines (numbers, sizes and entry ids may differ), so the docs
cannot drift from the program."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.conftest import UV, World, make_world

DOCS = Path(__file__).parent.parent
FILES = ["README.md", "docs/cli.md"]
SIZE = r"\d+(?:\.\d+)? (?:B|KiB|MiB|GiB|TiB)"
ENTRY_ID = r"[A-Za-z0-9_-]{16}"
NUMBER = r"\d+(?:\.\d+)*"


def examples(name: str) -> list[tuple[int, str, list[str]]]:
    """(line number, command, documented output lines) of each `$ uvrefs` example."""
    found: list[tuple[int, str, list[str]]] = []
    current: list[str] | None = None  # the output of the example being read
    in_block = False
    for number, line in enumerate((DOCS / name).read_text().splitlines(), 1):
        if line.startswith("```"):
            in_block, current = not in_block, None
            continue
        if not in_block:
            continue
        if line.startswith("$ "):
            found.append((number, line[2:], []))
            current = found[-1][2]
        elif current is not None:
            current.append(line)
    return [(n, cmd, _trim(out)) for n, cmd, out in found if cmd.startswith("uvrefs ")]


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def shape(line: str) -> re.Pattern[str]:
    """A documented line as a pattern: its words and columns as written, any size, number
    or entry id in place of the documented ones."""
    pattern = ""
    for token in re.split(rf"({SIZE}|{ENTRY_ID}|{NUMBER})", line):
        if re.fullmatch(SIZE, token):
            pattern += SIZE
        elif re.fullmatch(NUMBER, token):
            pattern += NUMBER
        elif re.fullmatch(ENTRY_ID, token) and re.search(r"[A-Z]", token) and " " not in token:
            pattern += ENTRY_ID
        else:  # a run of spaces is a column gap, wider or narrower with the figures
            pattern += " +".join(re.escape(part) for part in re.split(r" {2,}", token))
    return re.compile(pattern)


def scenario(tmp_path: Path, wheelhouse: Path) -> World:
    """~/work as README.md shows it: web/.venv tracked (alpha 2.0, beta), old/.venv
    tracked then deleted (alpha 1.0, big, gamma built by tinybackend), scratch/.venv made
    with plain uv (alpha 3.0), the cache in ~/work/cache."""
    assert UV
    work = tmp_path / "work"
    work.mkdir()
    world = make_world(work, wheelhouse, UV)
    world.env["UV_LINK_MODE"] = "hardlink"  # as shown, whatever uv's default does here
    web, old, scratch = (world.venv(f"{n}/.venv") for n in ("web", "old", "scratch"))
    world.uvrefs("install", "-q", "-p", web, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", old, *world.offline(), "alpha==1.0", "big", "gamma")
    world.uv("pip", "install", "-q", "-p", scratch, *world.offline(), "alpha==3.0")
    shutil.rmtree(old)
    return world


CASES = [(name, *example) for name in FILES for example in examples(name)]


def test_the_docs_have_examples() -> None:
    assert {name for name, *_ in CASES} == set(FILES)


@pytest.mark.parametrize(
    ("doc", "line", "command", "documented"),
    CASES,
    ids=[f"{doc}:{line}" for doc, line, *_ in CASES],
)
def test_documented_example_runs_as_shown(
    tmp_path: Path, wheelhouse: Path, doc: str, line: int, command: str, documented: list[str]
) -> None:
    world = scenario(tmp_path, wheelhouse)
    work = str(world.root)
    args = [a.replace("~/work", work) for a in shlex.split(command)[1:]]
    done = world.uvrefs(*args, check=False)
    where = f"{doc}:{line}: $ {command}"
    assert done.returncode == 0, f"{where} failed ({done.returncode}):\n{done.stderr}"
    actual = _trim(done.stdout.replace(work, "~/work").splitlines())
    patterns = [shape(d) for d in documented]
    unexplained = [a for a in actual if not any(p.fullmatch(a) for p in patterns)]
    unseen = [
        d
        for d, p in zip(documented, patterns, strict=True)
        if not any(p.fullmatch(a) for a in actual)
    ]
    assert not unexplained and not unseen and len(actual) == len(documented), (
        f"{where}: output differs from the docs\n"
        f"lines the docs do not show: {unexplained}\nlines the docs show, not printed: {unseen}\n"
        f"printed:\n" + "\n".join(actual)
    )


def test_ci_runs_the_linters_and_the_tests() -> None:
    """`make lint` passed, but CI ran only `make test`: a lint error could land."""
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text().splitlines()
    assert "make lint" in ci and "make test" in ci, ci


def test_the_ci_recipes_install_uvrefs_outside_the_saved_cache_and_key_on_python() -> None:
    """docs/ci.md's recipes as written on a fresh runner (issue 20): uvrefs comes from its
    repository (it is not on PyPI: `uv tool install uvrefs` failed) with a uv cache of its
    own, outside the cached UV_CACHE_DIR (its dependencies rode in every saved cache);
    setup-uv's own cache is off; the key holds the Python version as well as the lock
    (a Python switch's cache was never saved); collect is the last command."""
    text = (DOCS / "docs/ci.md").read_text()
    github, gitlab = re.findall(r"```yaml\n(.*?)```", text, re.S)
    for recipe in (github, gitlab):
        assert "uv tool install uvrefs" not in recipe
        assert 'uv tool install "git+<repository URL>@<tag or commit>"' in recipe
    steps = github.split("      - ")
    (install,) = [s for s in steps if "uv tool install" in s]
    assert "UV_CACHE_DIR: ${{ runner.temp }}/" in install
    assert "UV_TOOL_DIR: ${{ runner.temp }}/" in install and "GITHUB_PATH" in install
    assert "enable-cache: false" in github
    assert "key: uv-${{ runner.os }}-${{ hashFiles('uv.lock', '.python-version') }}" in github
    assert steps[-1].startswith("run: uvrefs collect")
    assert "UV_CACHE_DIR=/tmp/uvrefs-install-cache" in gitlab
    assert "files: [uv.lock, .python-version]" in gitlab
    assert "- uvrefs collect --host-lease 0" in gitlab.splitlines()[-1]
    assert "UVREFS_HOST" not in gitlab  # a container job is a host of its own
