"""Hostile and broken input: nothing outside the cache is touched, no traceback, no hang.

Each command runs against a store holding a FIFO, deeply nested JSON, NUL bytes, a huge
sparse file or a symlink to a canary outside, in place of each kind of store file; every
run must finish within a timeout, print no traceback, and leave the canaries as they were."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import uvrefs
from tests.conftest import (
    NOBODY,
    UV,
    Bounded,
    World,
    make_world,
    plant,
    registry_of,
    run_bounded,
    unprivileged_uvrefs,
)
from uvrefs import files
from uvrefs.store import stamps
from uvrefs.store.refs import CorruptRefs, RefsStore


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
    files.write_atomic(str(target), "new")
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
    files.write_atomic(str(target), "a")
    files.write_atomic(str(target), "b")
    assert all(n.startswith(".x.refs.") and n.endswith(".tmp") for n in seen), seen
    assert seen[0] != seen[1]

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        files.write_atomic(str(target), "c")
    assert sorted(os.listdir(tmp_path)) == ["x.refs"] and target.read_text() == "b"


def test_write_atomic_replaces_a_symlink_at_the_target_without_following_it(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    before = canary(outside)
    target = tmp_path / "sizes.json"
    target.symlink_to(outside)
    files.write_atomic(str(target), "{}")
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


# ---------------------------------------------------------------- refs files of any bytes

ENTRY = "AbC-123_xyzXYZ00"
WELL_FORMED = {
    "format": 1,
    "entry": ENTRY,
    "dist": "alpha",
    "version": "1.0",
    "tags": ["py3-none-any"],
    "referrers": [
        {
            "env": "/home/me/.venv",
            "host": "h",
            "how": "symlink",
            "command": "pip install",
            "recorded_at": "2025-01-01T00:00:00Z",
        }
    ],
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _changed(changes: dict[str, Any], dropped: set[str], ref: dict[str, Any]) -> bytes:
    referrer = {**WELL_FORMED["referrers"][0], **ref}  # type: ignore[index]
    doc = {k: v for k, v in WELL_FORMED.items() if k not in dropped}
    return json.dumps({**doc, "referrers": [referrer], **changes}).encode()


documents = st.builds(
    _changed,
    st.dictionaries(st.sampled_from([*WELL_FORMED, "extra"]), json_values, max_size=2),
    st.sets(st.sampled_from(list(WELL_FORMED)), max_size=2),
    st.dictionaries(
        st.sampled_from(["env", "host", "how", "recorded_at", "extra"]),
        json_values | st.text().map(lambda t: f"/{t}"),
        max_size=2,
    ),
)
refs_bytes = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    documents,
    # a well-formed document cut short, or with a few bytes spliced in
    st.tuples(documents, st.integers(0, 400), st.binary(max_size=3)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]
    ),
    st.tuples(st.text(), st.text()).map(lambda t: _changed({}, set(), {"env": "\x00".join(t)})),
    st.integers(500, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(500, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


@pytest.fixture(scope="module")
def refs_store(tmp_path_factory: pytest.TempPathFactory) -> RefsStore:
    root = tmp_path_factory.mktemp("refs-bytes")
    store = RefsStore(root / "state", root / "cache")
    store.refs_dir.mkdir(parents=True)
    return store


@settings(max_examples=300, deadline=None)
@given(raw=refs_bytes)
def test_any_refs_file_loads_or_is_corrupt(refs_store: RefsStore, raw: bytes) -> None:
    """Whatever bytes a refs file holds, `load` returns refs or raises CorruptRefs: never
    another exception, and never refs naming a path no system can have."""
    refs_store.refs_path(ENTRY).write_bytes(raw)
    try:
        loaded = refs_store.load(ENTRY)
    except CorruptRefs:
        return
    assert loaded is not None and loaded.entry == ENTRY
    assert not any("\x00" in r.env for r in loaded.referrers)


# ---------------------------------------------------------------- the store as found

# case -> (store file, what is put there). "refs" is the refs file of alpha's entry, "env"
# the env record, "stamp" the env's fingerprint stamp; the last two cases replace the state
# dir by a file and the store dir by a symlink to a directory elsewhere.
CASES: dict[str, tuple[str, str]] = {
    "fifo-refs": ("refs", "fifo"),
    "fifo-env-record": ("env", "fifo"),
    "fifo-sizes": ("sizes.json", "fifo"),
    "fifo-dead-since": ("dead-since.json", "fifo"),
    "fifo-stamp": ("stamp", "fifo"),
    "fifo-recording-lock": ("recording.lock", "fifo"),
    "nested-refs": ("refs", "nested"),
    "nested-env-record": ("env", "nested"),
    "nested-sizes": ("sizes.json", "nested"),
    "nul-refs": ("refs", "nul"),
    "nul-escaped-in-env-path": ("refs", "nul-escaped"),
    "huge-refs": ("refs", "huge"),
    "huge-env-record": ("env", "huge"),
    "huge-sizes": ("sizes.json", "huge"),
    "symlink-refs": ("refs", "symlink"),
    "symlink-env-record": ("env", "symlink"),
    "symlink-sizes": ("sizes.json", "symlink"),
    "symlink-dead-since": ("dead-since.json", "symlink"),
    "symlink-stamp": ("stamp", "symlink"),
    "symlink-store-lock": ("store.lock", "symlink"),
    "state-dir-is-a-file": ("", "state-file"),
    "store-dir-is-a-symlink": ("", "store-link"),
}
# Read-only commands first; adopt, the tracked install and doctor --repair write the store.
COMMANDS: dict[str, list[str]] = {
    "collect --dry-run": ["collect", "--dry-run"],
    "status": ["status"],
    "envs": ["envs"],
    "why": ["why", "alpha"],
    "doctor": ["doctor"],
    "adopt": ["adopt", "env"],
    "install": ["install", "-q", "-p", "env", "alpha==1.0"],
    "doctor --repair": ["doctor", "--repair"],
}
UNREADABLE_REFS = {"collect --dry-run": 1, "doctor": 1}
# An env record that cannot be read and does not say whose it is: nothing may be freed,
# and collect says so (exit 1).
UNREADABLE_RECORD = {"collect --dry-run": 1}
REFUSED = {c: 2 for c in COMMANDS if c != "install"}  # the install keeps uv's exit code
EXPECTED_CODES: dict[str, dict[str, int]] = {
    **{c: UNREADABLE_REFS for c, (where, _) in CASES.items() if where == "refs"},
    **{c: UNREADABLE_RECORD for c, (where, _) in CASES.items() if where == "env"},
    "state-dir-is-a-file": REFUSED,
    "store-dir-is-a-symlink": REFUSED,
    "symlink-store-lock": {"adopt": 2, "doctor --repair": 2},  # the store cannot be locked
}


@dataclass
class Outcome:
    runs: dict[str, Bounded]
    outside: dict[str, dict[str, tuple[int, int]]]  # after each command ("" = before all)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file below `directory`: its size and mtime."""
    return {
        str(p.relative_to(directory)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


def run_case(world: World, env: Path, name: str) -> Outcome:
    """A copy of the healthy cache and store with `name`'s input in it, and every command
    run on it. Each case has its own copy of the cache: cases run at once, and on one
    cache each case's store would be a peer of the others (registered in it), its hostile
    file blocking them."""
    where, kind = CASES[name]
    root = world.root / name
    outside = root / "outside"
    outside.mkdir(parents=True)
    canary(outside / "canary")
    cache, state = root / "cache", root / "state"
    shutil.copytree(world.cache, cache, symlinks=True)
    shutil.copytree(world.state, state, symlinks=True)
    shutil.rmtree(registry_of(replace(world, cache=cache)))  # the copy of world's registry
    store = Path(stamps.store_dir(str(state), str(cache)))
    next(state.glob("caches/*")).rename(store)
    if where != "stamp":  # so the install re-records, reading every refs file
        for stamp in store.glob("envs/*.stamp"):
            stamp.unlink()
    files = {
        "refs": store / "refs" / f"{next(iter(world.archive_of('alpha', '1.0')))}.refs",
        "env": next(store.glob("envs/*.json")),
        "stamp": store / "envs" / f"{stamps.env_key(str(env))}.stamp",
    }
    state_dir = state
    if kind == "state-file":
        state_dir = outside / "state-file"
        state_dir.write_text("not a directory")
    elif kind == "store-link":
        store.rename(outside / "store")
        store.symlink_to(outside / "store")
    elif kind == "nul-escaped":
        doc = json.loads(files["refs"].read_text())
        doc["referrers"][0]["env"] += "\x00x"
        files["refs"].write_text(json.dumps(doc))
    else:
        path = files.get(where, store / where)
        if kind == "symlink" and path.exists():  # a reader following the link reads it
            shutil.copy(path, outside / "canary")
        plant(path, kind, outside / "canary")
    runs, seen = {}, {"": snapshot(outside)}
    for label, args in COMMANDS.items():
        offline = world.offline() if label == "install" else []
        runs[label] = run_bounded(
            [sys.executable, "-m", "uvrefs", *args, *offline],
            {**world.env, "UVREFS_DIR": str(state_dir), "UV_CACHE_DIR": str(cache)},
            world.root,
        )
        seen[label] = snapshot(outside)
    return Outcome(runs, seen)


@pytest.fixture(scope="module")
def hostile_outcomes(
    tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path
) -> dict[str, Outcome]:
    """Every case, four at a time: each has its own copy of the store; the cache and the
    env are shared and no command here changes them (the install is of what is there)."""
    assert UV
    world = make_world(tmp_path_factory.mktemp("hostile"), wheelhouse, UV)
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0", "beta")
    world.uvrefs("collect", "--dry-run")  # writes sizes.json
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_case, world, env, name) for name in CASES}
        return {name: future.result() for name, future in futures.items()}


ONE_ERROR_LINE = re.compile(r"uvrefs: error: [^\n]+\n")
# The tracked install records through a symlinked store dir: refusing it needs a check on
# the install's recording path (uvrefs.track.record_if_changed), outside this change.
WRITES_OUTSIDE = {("store-dir-is-a-symlink", "install")}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_store_input(case: str, hostile_outcomes: dict[str, Outcome]) -> None:
    """No hang, no traceback, the documented exit code (errors in one line), and nothing
    outside the cache and the store changed."""
    outcome = hostile_outcomes[case]
    problems = []
    previous = outcome.outside[""]
    for label, run in outcome.runs.items():
        expected = EXPECTED_CODES.get(case, {}).get(label, 0)
        if (failure := run.quiet_failure()) is not None:
            problems.append(failure)
        elif run.code != expected:
            problems.append(f"{label}: exit {run.code}, expected {expected}\n{run.stderr}")
        elif run.code == 2 and not ONE_ERROR_LINE.fullmatch(run.stderr):
            problems.append(f"{label}: not one error line:\n{run.stderr}")
        after = outcome.outside[label]
        if after != previous and (case, label) not in WRITES_OUTSIDE:
            problems.append(f"{label} changed files outside: {previous} -> {after}")
        previous = after
    assert not problems, "\n".join(problems)


def test_tracked_install_never_writes_through_a_symlinked_store_dir(
    hostile_outcomes: dict[str, Outcome],
) -> None:
    outside = hostile_outcomes["store-dir-is-a-symlink"].outside
    assert outside["install"] == outside["adopt"]


# ---------------------------------------------------------------- subprocesses


def script(path: Path, body: str) -> Path:
    """An executable Python script (whatever its name) running `body`."""
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def tiny_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An (empty) uv cache and a store, as uvrefs's environment variables name them."""
    cache = tmp_path / "cache"
    (cache / "archive-v0").mkdir(parents=True)
    (cache / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55")
    monkeypatch.setenv("UV_CACHE_DIR", str(cache))
    monkeypatch.setenv("UVREFS_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return cache


def exit_and_stderr(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str | None, str]:
    from uvrefs import launch

    with pytest.raises(SystemExit) as exited:
        launch.main(list(args))
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command", [["collect", "--dry-run"], ["status"]])
def test_a_uv_that_never_answers_is_an_error_not_a_hang(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from uvrefs import uv

    silent = script(tmp_path / "uv", "import time; time.sleep(5); print('/nowhere')")
    monkeypatch.setenv("UVREFS_UV", str(silent))
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    monkeypatch.setattr(uv, "QUERY_TIMEOUT", 1.0, raising=False)
    code, err = exit_and_stderr(capsys, *command)
    assert code == 3 and err.count("\n") == 1, err
    assert err.startswith("uvrefs: error: `uv cache dir` did not answer within 1s")


def test_adopt_never_runs_an_executable_not_named_like_python(
    tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = tmp_path / "ran"
    foo = script(tmp_path / "foo", f"open({str(ran)!r}, 'w').close()")
    code, err = exit_and_stderr(capsys, "adopt", str(foo))
    assert code == 2 and err.count("\n") == 1 and "not named python*" in err, err
    assert not ran.exists()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("import sys; sys.exit('no sysconfig here')", "no sysconfig here"),
        ("print('not a prefix')", "no sys.prefix"),
        ("import time; time.sleep(5)", "did not answer within 1s"),
    ],
    ids=["fails", "says-nonsense", "hangs"],
)
def test_adopt_of_a_broken_interpreter_is_one_line(
    body: str,
    says: str,
    tiny_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from uvrefs import uv

    monkeypatch.setattr(uv, "QUERY_TIMEOUT", 1.0, raising=False)
    python = script(tmp_path / "python3.11", body)
    code, err = exit_and_stderr(capsys, "adopt", str(python))
    assert code == 2 and err.count("\n") == 1 and says in err, err


# ---------------------------------------------------------------- options


BAD_COLLECT_OPTIONS = [
    ("--budget", "inf"),
    ("--budget", "nan"),
    ("--budget", "-1G"),
    ("--max-freed", "1e400"),
    ("--max-freed", "-5M"),
    ("--min-age", "-1d"),
    ("--min-age", "nan"),
    ("--min-age", "infd"),
    ("--min-age", ""),
]


@pytest.fixture
def nothing_done(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a command gets as far as opening the cache and the store."""
    from uvrefs.gc import runner

    def reached() -> None:
        raise AssertionError("options were accepted: the cache was opened")

    monkeypatch.setattr(runner, "cache_and_store", reached)


@pytest.mark.parametrize(("option", "value"), BAD_COLLECT_OPTIONS)
def test_bad_collect_options_are_refused_on_both_parsers(
    option: str,
    value: str,
    nothing_done: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command as users run it (`uvrefs.launch`, `--opt=value`) and the typer app
    refuse the same values, in one line naming the option, exit 2, before anything is
    opened."""
    from typer.testing import CliRunner

    from uvrefs.cli import app

    code, err = exit_and_stderr(capsys, "collect", f"{option}={value}")
    assert code == 2 and ONE_ERROR_LINE.fullmatch(err), err
    assert err.startswith(f"uvrefs: error: {option} {value!r}: use a ")
    typer_run = CliRunner().invoke(app, ["collect", option, value])
    assert typer_run.exit_code == 2 and typer_run.stderr == err, typer_run.output


@pytest.mark.parametrize(
    "args",
    [
        ["--every", "0"],
        ["--every", "-1d"],
        ["--every", "inf"],
        ["--every", "0.5s"],
        ["--every", "400d"],
        ["--every", "nan"],
        ["--every", "soon"],
        ["--min-age", "-1d"],
        ["--min-age", "inf"],
        ["--min-age", "soon"],
    ],
)
def test_bad_schedule_options_are_refused(
    args: list[str], tiny_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = exit_and_stderr(capsys, "schedule", "install", "--dry-run", *args)
    assert code == 2 and ONE_ERROR_LINE.fullmatch(err), err
    assert err.startswith(f"uvrefs: error: {args[0]} {args[1]!r}: use a ")


@pytest.mark.parametrize(
    "args",
    [
        ["collect", "--dry-run", "--min-age", "7"],
        ["collect", "--dry-run", "--min-age=7"],
        ["schedule", "install", "--dry-run", "--every", "7"],
        ["schedule", "install", "--dry-run", "--min-age", "7"],
    ],
)
def test_a_duration_without_a_unit_is_refused(
    args: list[str], tiny_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--every 7` was 7 seconds (and cron made it hourly): a number needs its unit, on
    the fast parser and typer's alike; a bare 0 (`--min-age 0`) is still 0."""
    from typer.testing import CliRunner

    from uvrefs.cli import app

    code, err = exit_and_stderr(capsys, *args)
    assert code == 2 and ONE_ERROR_LINE.fullmatch(err), err
    assert "a duration needs a unit: 7s, 7m, 7h, 7d or 7w" in err, err
    typer_run = CliRunner().invoke(app, [a for arg in args for a in arg.split("=")])
    assert typer_run.exit_code == 2 and typer_run.stderr == err, typer_run.output
    code, err = exit_and_stderr(capsys, "collect", "--dry-run", "--min-age", "0")
    assert code == 0, err


def test_auto_collect_without_a_unit_is_ignored_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uvrefs import track

    track.maybe_auto_collect(str(tmp_path), "7", {"UVREFS_DIR": str(tmp_path / "state")})
    err = capsys.readouterr().err
    assert err == (
        "uvrefs: warning: UVREFS_AUTO_COLLECT ignored: duration '7': a duration needs a "
        "unit: 7s, 7m, 7h, 7d or 7w (only 0 goes without one)\n"
    )
    assert not (tmp_path / "state").exists()  # nothing stamped, nothing started


@pytest.mark.parametrize(
    "args",
    [
        ["--cache-dir=", "status"],
        ["--state-dir=", "status"],
        ["--cache-dir", "", "status"],
        ["--state-dir", " ", "collect"],
        ["--state-dir"],
    ],
)
def test_empty_directory_options_are_refused(
    args: list[str], tiny_cache: Path, nothing_done: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = exit_and_stderr(capsys, *args)
    assert code == 2 and ONE_ERROR_LINE.fullmatch(err), err
    assert err.startswith(f"uvrefs: error: {args[0].rstrip('=')} needs a directory")


def test_adopt_refuses_a_negative_depth(
    tiny_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = exit_and_stderr(capsys, "adopt", "--discover", ".", "--depth", "-1")
    assert (
        code == 2
        and err == "uvrefs: error: --depth -1: use 0 or more (levels below each --discover DIR)\n"
    )


# ---------------------------------------------------------------- collect --log


@pytest.mark.parametrize("where", ["missing-dir", "a-directory", "fifo", "empty", "symlink"])
def test_a_log_that_cannot_be_written_is_refused_before_collecting(
    world: World, where: str
) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    shutil.rmtree(env)
    before = world.archives()
    log = {
        "missing-dir": world.root / "no-such-dir" / "collect.log",
        "a-directory": world.root,
        "fifo": world.root / "collect.fifo",
        "empty": Path(""),
        "symlink": world.root / "link.log",
    }[where]
    outside = world.root / "outside.txt"
    outside.write_text("untouched\n")
    if where == "fifo":
        os.mkfifo(log)
    if where == "symlink":  # planted as the job's log: never appended through
        log.symlink_to(outside)
    arg = "--log=" if where == "empty" else f"--log={log}"
    done = run_bounded([sys.executable, "-m", "uvrefs", "collect", arg], world.env, world.root)
    assert done.quiet_failure() is None, done.quiet_failure()
    assert done.code == 2 and ONE_ERROR_LINE.fullmatch(done.stderr), done.stderr
    assert done.stderr.startswith("uvrefs: error: --log ")
    assert world.archives() == before  # nothing collected
    assert not (world.root / "no-such-dir").exists()
    assert outside.read_text() == "untouched\n"


def test_schedule_install_makes_the_jobs_log_directory(world: World) -> None:
    """The job's `collect --log STATE/collect.log` would be refused if STATE did not exist
    yet (no tracked install ran before the schedule was installed)."""
    state = world.root / "fresh-state"
    done = world.uvrefs(
        "schedule",
        "install",
        "--no-activate",
        extra_env={"UVREFS_DIR": str(state), "UVREFS_SCHEDULER": "cron"},
    )
    assert f"--log {state / 'collect.log'}" in done.stdout and state.is_dir()


# ---------------------------------------------------------------- cwd and Ctrl-C


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["status"], 0, ""),
        (["collect", "--dry-run"], 0, ""),
        (["doctor"], 0, ""),
        (["why", "alpha"], 0, ""),
        (["adopt", "env"], 2, "uvrefs: error: the current directory no longer exists"),
        (["install", "-q", "-p", "ENV", "alpha==1.0"], 1, "Current directory does not exist"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else None,
)
def test_a_deleted_working_directory(world: World, args: list[str], code: int, says: str) -> None:
    """Commands that need no relative path work; the others say so in one line (the
    tracked install passes on uv's own error and exit code)."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    gone = world.root / "gone"
    gone.mkdir()
    argv = " ".join(shlex.quote(a.replace("ENV", str(env))) for a in args)
    shell = f"cd {gone} && rmdir {gone} && exec {sys.executable} -m uvrefs {argv}"
    done = run_bounded(["sh", "-c", shell], world.env, world.root)
    assert done.quiet_failure() is None, done.quiet_failure()
    assert done.code == code, done.stderr
    assert says in done.stderr and len(done.stderr.splitlines()) <= 1, done.stderr


def test_ctrl_c_during_a_tracked_uv_run_reaches_uv_and_still_records(world: World) -> None:
    """SIGINT to the foreground process group, as a terminal sends it, while `uvrefs uv
    run` waits for the program uv runs: uv and the program get it, uvrefs waits for uv,
    exits with its code and no traceback, and records the project env uv created. (The
    program exits quietly on SIGINT so that a traceback could only be uvrefs's.)"""
    program = (
        "import signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(130)); "
        "print('ready', flush=True); time.sleep(30)"
    )
    launcher = (sys.executable, "-m", "uvrefs", "uv")
    code, err = interrupted_uv_run(world, "proj", *launcher, program=program)
    assert code == 130 and "Traceback" not in err, err
    venv = str(world.root / "proj" / ".venv")
    assert any(
        r["env"] == venv for p in world.refs() for r in json.loads(p.read_text())["referrers"]
    )


NO_HANDLER = "import time; print('ready', flush=True); time.sleep(30)"


def interrupted_uv_run(
    world: World, name: str, *launcher: str, program: str = NO_HANDLER
) -> tuple[int, str]:
    """`LAUNCHER run python -c PROGRAM` (uv, or uvrefs uv) in a new project with one
    dependency, in its own process group (a shell job); SIGINT to the group, as Ctrl-C
    sends it, once the program runs. By default the program has no handler: Python prints
    its own KeyboardInterrupt."""
    project = world.root / name
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["alpha==1.0"]\n'
    )
    env = {
        **world.env,
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(world.wheels),
        "UV_PYTHON": sys.executable,
        "UV_LINK_MODE": "symlink",
    }
    proc = subprocess.Popen(
        [*launcher, "run", "python", "-c", program],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def test_ctrl_c_in_uvrefs_uv_run_ends_like_uv_and_records_the_env(world: World) -> None:
    """Ctrl-C in `uvrefs uv run python ...` ends as in plain `uv run`: exit 130 and the
    program's own KeyboardInterrupt, nothing from uvrefs; the project env is recorded."""
    uv_code, uv_err = interrupted_uv_run(world, "plain", world.uv_bin)
    code, err = interrupted_uv_run(world, "tracked", sys.executable, "-m", "uvrefs", "uv")
    assert uv_code == code == 130, (uv_code, code, err)
    assert err.count("Traceback") == uv_err.count("Traceback") == 1, err
    assert err[err.index("Traceback") :] == uv_err[uv_err.index("Traceback") :], err
    # nothing from uvrefs: no line of its own, no frame of its code (uv's own lines name
    # the interpreter, whose path may hold "uvrefs": a clone made as the README says)
    package = str(Path(uvrefs.__file__).parent) + os.sep
    assert "uvrefs: " not in err and package not in err, err
    listed = json.loads(world.uvrefs("envs", "--json").stdout)["envs"]
    tracked = [e for e in listed if e["path"] == str(world.root / "tracked" / ".venv")]
    assert tracked and tracked[0]["state"] == "alive" and tracked[0]["entries"] == 1, listed


def test_a_uv_killed_by_a_signal_exits_as_a_shell_reports_it(tmp_path: Path) -> None:
    from uvrefs import uv

    killed = script(tmp_path / "uv", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert uv.run_passthrough(str(killed), []) == 128 + signal.SIGTERM


# ---------------------------------------------------------------- read-only cache and store


@pytest.fixture(scope="module")
def read_only_world(wheelhouse: Path) -> Iterator[World]:
    """A cache and a store written by root and only readable by others, with one live and
    one dead env, in a directory an unprivileged user can reach (pytest's is root's own)."""
    assert UV
    root = Path(tempfile.mkdtemp(prefix="uvrefs-read-only-"))
    root.chmod(0o755)
    try:
        world = make_world(root, wheelhouse, UV)
        live, dead = world.venv("live"), world.venv("dead")
        world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0")
        world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "beta")
        shutil.rmtree(dead)
        world.uvrefs("collect", "--dry-run")
        (world.cache / ".lock").chmod(0o644)  # uv makes it writable by all
        yield world
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["status"], 0),
        (["envs"], 0),
        (["why", "alpha"], 0),
        (["collect", "--dry-run"], 0),
        (["doctor"], 1),  # which says the store cannot be written
        (["collect"], 2),  # uv's lock cannot be taken to delete
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_read_only_cache_and_store(read_only_world: World, args: list[str], code: int) -> None:
    """Run as nobody: reading commands work; a collect, which must take uv's lock to
    delete, is refused in one line; nothing changes either way."""
    world = read_only_world
    before = snapshot(world.root)
    argv, env = unprivileged_uvrefs()
    done = run_bounded([*NOBODY, *argv, *args], {**world.env, **env}, world.root)
    assert done.quiet_failure() is None, done.quiet_failure()
    assert done.code == code, done.stderr
    if code == 2:
        assert ONE_ERROR_LINE.fullmatch(done.stderr), done.stderr
    if args == ["collect", "--dry-run"]:
        assert "would free 2 entries" in done.stdout, done.stdout
    assert snapshot(world.root) == before


def test_tracked_install_with_a_read_only_store_keeps_uvs_exit_code(
    read_only_world: World,
) -> None:
    """nobody installs into their own env and cache; the store is root's: uv's exit code,
    one warning, the package installed (existing behaviour, here with real permissions)."""
    world = read_only_world
    python = next((p for p in PYTHONS if p and runs_as_nobody(p)), None)
    if python is None:
        pytest.skip("no Python interpreter the unprivileged user may run for uv")
    mine = world.root / "nobody"
    mine.mkdir()
    wheels = shutil.copytree(world.wheels, mine / "wheels")
    env = {**world.env, "UV_CACHE_DIR": str(mine / "cache")}
    world.uv("venv", "-q", "--python", python, mine / "env", extra_env=env)
    for path in [mine, *mine.rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)
    before = snapshot(world.state)
    install = ["install", "-q", "-p", str(mine / "env"), "--no-index", "--find-links"]
    argv, runtime = unprivileged_uvrefs()
    done = run_bounded(
        [*NOBODY, *argv, *install, str(wheels), "alpha==1.0"], {**env, **runtime}, world.root
    )
    assert done.quiet_failure() is None, done.quiet_failure()
    assert done.code == 0 and done.stderr.startswith("uvrefs: warning: environment not recorded")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert list((mine / "env").glob("lib/python*/site-packages/alpha"))
    assert snapshot(world.state) == before


# uv runs the env's interpreter itself: the test's own may sit where nobody can reach it.
PYTHONS = [
    sys.executable,
    os.path.realpath(sys.executable),
    shutil.which("python3", path="/usr/bin"),
]


def runs_as_nobody(python: str) -> bool:
    shell = [*NOBODY, "sh", "-c", 'exec "$0" -c pass', python]
    return subprocess.run(shell, capture_output=True, check=False).returncode == 0


# ---------------------------------------------------------------- envs found by discovery


def test_a_fifo_as_pyvenv_cfg_under_a_watched_directory_hangs_nothing(world: World) -> None:
    """`uvrefs envs` read each discovered env's pyvenv.cfg with a plain open: a FIFO
    planted there (a directory whose listing holds `pyvenv.cfg` is an env) hung it."""
    env = world.venv("projects/real/.venv")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    trap = world.root / "projects" / "trap"
    trap.mkdir()
    os.mkfifo(trap / "pyvenv.cfg")
    world.uvrefs("watch", "add", world.root / "projects")
    for args in (["envs"], ["status"], ["collect", "--dry-run"]):
        done = run_bounded([sys.executable, "-m", "uvrefs", *args], world.env, world.root)
        assert done.quiet_failure() is None, done.quiet_failure()


def test_adopt_discover_adopts_every_env_it_can_and_reports_the_others(world: World) -> None:
    """`adopt --discover DIR` stopped at the first broken env (exit 2) and adopted none of
    the others. Now each broken one is one line on stderr, the rest are adopted, and the
    exit code says some failed (1)."""
    for name in ("a", "c"):
        world.venv(f"projects/{name}/.venv")
    broken = world.root / "projects" / "b" / ".venv"
    broken.mkdir(parents=True)
    os.mkfifo(broken / "pyvenv.cfg")  # listed as an env, not one
    done = run_bounded(
        [sys.executable, "-m", "uvrefs", "adopt", "--discover", str(world.root / "projects")],
        world.env,
        world.root,
    )
    assert done.quiet_failure() is None, done.quiet_failure()
    assert done.code == 1, done.stderr
    adopted = [line for line in done.stdout.splitlines() if line.startswith("adopted ")]
    assert len(adopted) == 2, done.stdout
    errors = done.stderr.splitlines()
    assert len(errors) == 1 and str(broken) in errors[0], errors
