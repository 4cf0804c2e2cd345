"""Attack issue 21: the new fast paths (plain option parsing, untracked forwarding of
`uvrefs uv`, the generated store reader, the store id)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SYMLINK, World, collect_json, freed, install
from tests.test_liveness import a_dead_tracked_user, intact
from uvrefs.uv import uv_subcommand


@pytest.mark.parametrize(
    "args",
    [
        ["pip", "-q", "install", "beta"],
        ["pip", "--cache-dir", "/c", "install", "beta"],
        ["tool", "--offline", "install", "ruff"],
    ],
)
def test_global_option_between_pip_and_its_subcommand_is_still_pip_install(
    args: list[str],
) -> None:
    """uv's global options are accepted anywhere, also between `pip` (or `tool`) and its
    subcommand (`uv pip -q install x` installs). `uv_subcommand` stops at the first option
    after `pip` and says `pip`, so `uvrefs uv pip -q install` is exec'ed untracked. It
    should say `pip install` (`tool install`)."""
    assert uv_subcommand(args) == " ".join(w for w in args if w in {"pip", "tool", "install"})


def test_defended_env_changed_by_uv_pip_dash_q_install_is_not_freed(world: World) -> None:
    """An env recorded with alpha gets beta through `uvrefs uv pip -q install` (a global
    option between `pip` and `install`, which uv accepts). That command is forwarded to uv
    untracked, so the env's record still says alpha only; collect must not free beta's
    archive, which the env (symlink mode) still uses: the env should stay intact."""
    env = world.venv("env")
    install(world, env, "alpha==1.0")
    a_dead_tracked_user(world, "beta")  # beta tracked and dead: a candidate to free
    world.uvrefs(
        "uv", "pip", "-q", "install", "-p", env, *world.offline(), "beta", extra_env=SYMLINK
    )
    result = collect_json(world)
    assert intact(env), f"collect freed {freed(result)} which {env} uses"


@pytest.mark.parametrize("when", ["2024-01-01T00:00:00+00:60", "2024-01-01T00:00:00-00:99"])
def test_fast_reader_refuses_a_time_the_model_rejects(when: str) -> None:
    """The generated fast readers (`uvrefs.store.fields`) must accept a record only if
    `schema`'s pydantic model takes it exactly as it is (their docstring says so). A
    `recorded_at` with an offset of 60+ minutes (`+00:60`) passes `checks.is_time`
    (the regex allows any two digits and `datetime.fromisoformat` reads 60 minutes as an
    hour) but the model rejects it; the fast reader should return None for it too."""
    from pydantic import ValidationError

    from uvrefs.store import fields, schema

    ref = {"env": "/e", "host": "h", "how": "symlink", "command": "c", "recorded_at": when}
    env = {"format": 1, "path": "/e", "host": "h", "command": "c", "recorded_at": when}
    refs = {"format": 1, "entry": "x", "referrers": [ref]}
    for read, model, doc in (
        (fields.read_referrer, schema.Referrer, ref),
        (fields.read_env_record, schema.EnvRecord, env),
        (fields.read_entry_refs, schema.EntryRefs, refs),
    ):
        with pytest.raises(ValidationError):
            model.model_validate(doc)
        assert read(doc) is None, f"{read.__name__} accepts what {model.__name__} rejects"


@pytest.mark.parametrize("kind", ["fifo", "dir", "symlink", "garbage"])
def test_defended_a_planted_store_id_neither_hangs_nor_frees_a_living_env(
    world: World, kind: str
) -> None:
    """`<store>/store-id` replaced by a FIFO, a directory, a symlink (to a valid id) or
    garbage: install, collect and status still finish without a traceback, and a living
    symlink-mode env stays intact."""
    import os
    import sys

    from tests.conftest import run_bounded

    env = world.venv("env")
    install(world, env, "alpha==1.0")
    a_dead_tracked_user(world, "alpha==1.0")  # alpha a candidate: kept only by the env
    (store,) = world.state.glob("caches/*")
    sid = store / "store-id"
    if sid.exists() or sid.is_symlink():
        sid.unlink()
    if kind == "fifo":
        os.mkfifo(sid)
    elif kind == "dir":
        sid.mkdir()
    elif kind == "symlink":
        (world.root / "id").write_text("0123456789abcdef0123")
        sid.symlink_to(world.root / "id")
    else:
        sid.write_bytes(b"\xff" * 40)
    install(world, env, "beta")
    for args in (["collect", "--min-age", "0"], ["status"], ["hosts"], ["doctor"]):
        done = run_bounded(
            [sys.executable, "-m", "uvrefs", *args], {**world.env, **SYMLINK}, world.root, 60
        )
        assert done.quiet_failure() is None, done.quiet_failure()
    assert intact(env)


def test_forgetting_a_host_never_deletes_through_a_bucket_planted_as_a_link(
    tmp_path: Path,
) -> None:
    """Review of issue 21: `hosts forget` dropped a host's registrations through the
    registry's path, so an sdists bucket replaced by a symbolic link to a directory outside
    the cache led the unlinks there. Registries are opened from the cache root one
    component at a time, never through a link: nothing outside the cache is touched."""
    from uvrefs.store.registry import REGISTRY, unregister_host

    root, outside = tmp_path / "cache", tmp_path / "outside"
    (outside / REGISTRY).mkdir(parents=True)
    planted = outside / REGISTRY / "0123456789abcdef0123.KEY.none"
    planted.write_text("/somewhere")
    root.mkdir()
    (root / "sdists-v11").symlink_to(outside)
    assert unregister_host(root, "KEY") == 0
    assert planted.exists()
