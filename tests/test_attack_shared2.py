"""Adversarial review of shared caches, round 2 (issue 20): registrations named
`<store key>.<host key>` and renewed by their mtime, a registration of another host whose
store cannot be read here blocking every free while younger than --host-lease, expired
hosts' registrations removed by the sweep. Each test not marked "defended" is a sequence
after which `collect` freed what a living environment uses (or froze for good in a
documented setup), on the code it was written against (2017561), where each fails.

As in round 1 (tests/test_attack_shared.py): symlink link mode, every file of every
installed RECORD checked (`intact`), hosts are the namespaces of tests/hosts.py, the share
is sshfs, collects run with `--min-age 0`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import World
from tests.hosts import Cluster, Host
from tests.test_attack_shared import (
    HOUR,
    POD,
    backdate,
    collect_on,
    collect_result,
    host_id,
    lease_file,
)
from tests.test_liveness import intact as intact_here
from tests.test_shared_caches import SYMLINK, assert_kept, freed, intact, venv

# A store on the host's own disk: the default `~/.local/state/uvrefs` (homes are local).
OWN_DISK: dict[str, str | None] = {**SYMLINK, "UVREFS_DIR": None}
HOLD = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"
)


def registrations(cluster: Cluster) -> list[Path]:
    """Every registration in the shared cache (server side)."""
    cache = cluster.export / "cache"
    return sorted(p for p in cache.glob("sdists-v*/.uvrefs-stores/*") if not p.name.startswith("."))


def registration_of(cluster: Cluster, host: Host, env: dict[str, str | None] | None = None) -> Path:
    """The server's side of `host`'s registration (its one store):
    `<store path key>.<host key>.<store id>`."""
    from uvrefs.hosts import host_key

    key = host_key(host_id(host, env))
    found = [p for p in registrations(cluster) if p.name.split(".")[1:2] == [key]]
    assert len(found) == 1, (found, registrations(cluster))
    return found[0]


def local_env(cluster: Cluster, host: Host, *reqs: str) -> Path:
    """A venv on `host`'s own disk, tracked by a store on its own disk (hidden elsewhere)."""
    env = host.home / "venv"
    host.uv("venv", "-q", "--python", sys.executable, env, env=OWN_DISK)
    host.uvrefs("install", "-q", "-p", env, *cluster.offline(), *reqs, env=OWN_DISK)
    return env


def dead_shared_user(cluster: Cluster, host: Host, *reqs: str) -> None:
    """An env on the share, tracked in the shared store, that used `reqs` and is deleted:
    what it used is for `host`'s collect to free."""
    env = venv(cluster, host, cluster.shared / f"dead-{host.name}/.venv", *reqs)
    host.run("rm", "-rf", env)


# ---------------------------------------------------------------- renewing a registration


def test_defended_a_fresh_registration_of_a_store_on_another_hosts_disk_blocks(
    cluster: Cluster,
) -> None:
    """The control of the tests below: host B's store on its own disk, registered a moment
    ago, its env using alpha; host C's collect (`--host-lease 1h`) frees nothing and says
    which store it cannot read."""
    b, c = cluster.host("B"), cluster.host("C")
    env = local_env(cluster, b, "alpha==1.0")
    dead_shared_user(cluster, c, "alpha==1.0")
    done = c.uvrefs("collect", "--json", "--min-age", "0", "--host-lease", "1h", check=False)
    assert "alpha 1.0" not in freed(json.loads(done.stdout)), done.stdout
    assert "cannot read" in done.stdout + done.stderr, (done.stdout, done.stderr)
    assert intact(b, env)


def test_a_dry_run_collect_renews_the_lease_but_not_the_registration(cluster: Cluster) -> None:
    """docs/shared-caches.md: a store another host registered that this host cannot read
    blocks every free "while that host renews its registration (as often as its lease)",
    and the lease is renewed by "every command that records an environment and every
    collect". Host B keeps its store on its own disk, its env there uses alpha; its last
    install was two hours ago, and since then B runs `uvrefs collect --dry-run` (a
    scheduled report) and `uvrefs status`: both renew B's lease, neither its
    registration. Host C collects with `--host-lease 1h`: B's registration is two hours
    old, so B counts as gone and alpha is freed under B's living env, a minute after B
    said it was alive. Every command that renews a host's lease must renew its
    registrations too."""
    b, c = cluster.host("B"), cluster.host("C")
    env = local_env(cluster, b, "alpha==1.0")
    backdate(registration_of(cluster, b), 2 * HOUR)
    b.uvrefs("collect", "--dry-run", env=OWN_DISK)  # B is alive
    b.uvrefs("status", env=OWN_DISK)
    dead_shared_user(cluster, c, "alpha==1.0")
    result = collect_on(c, "--host-lease", "1h")
    assert_kept(result, b, env)


# ---------------------------------------------------------------- while collect waits


def collect_waiting(host: Host, *args: str) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """`collect --json --min-age 0 ARGS` started on `host` while a process there holds uv's
    cache lock: returns (holder, collect) once the collect has planned and waits."""
    lock = host.cluster.shared / "cache/.lock"
    holder = host.spawn(sys.executable, "-c", HOLD, lock)
    assert holder.stdout and holder.stdout.readline().strip() == "held"
    args_all = [sys.executable, "-m", "uvrefs", "collect", "--json", "--min-age", "0", *args]
    proc = subprocess.Popen(
        host.command(args_all), env=host.environment({"UV_LOCK_TIMEOUT": "100"}),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "waiting for the lock" in line, line
    return holder, proc


def finish(holder: subprocess.Popen[str], proc: subprocess.Popen[str]) -> dict[str, Any]:
    holder.kill()
    holder.wait()
    out, err = proc.communicate(timeout=60)
    return collect_result(out, err, proc.returncode)


def test_a_registration_renewed_while_collect_waits_for_the_lock_is_not_seen(
    cluster: Cluster,
) -> None:
    """Host B keeps its store on its own disk; its env there uses alpha; it was idle for
    two hours. Host C's collect (`--host-lease 1h`) plans: B's registration is two hours
    old, so nothing is blocked and alpha (C's dead env's) is to be freed. While C waits for
    uv's lock, B comes back: a tracked install (beta) renews its registration (B is alive, its
    env uses alpha). Under the lock the sweep looks for hidden stores registered since
    planning, but by what they say, not by their age: B's says the same as before, so it
    is not "new", and alpha is freed under B's living env. What the sweep checks must be
    what the planner judged: a hidden store whose registration is now younger than
    --host-lease blocks, however old it was when planning."""
    b, c = cluster.host("B"), cluster.host("C")
    env = local_env(cluster, b, "alpha==1.0")
    backdate(registration_of(cluster, b), 2 * HOUR)
    dead_shared_user(cluster, c, "alpha==1.0")
    holder, proc = collect_waiting(c, "--host-lease", "1h")
    try:
        b.uvrefs("install", "-q", "-p", env, *cluster.offline(), "beta==1.0", env=OWN_DISK)
        assert time.time() - registration_of(cluster, b).stat().st_mtime < 60  # B renewed it
    finally:
        result = finish(holder, proc)
    assert_kept(result, b, env)


def test_defended_a_store_first_registered_while_collect_waits_blocks_the_sweep(
    cluster: Cluster,
) -> None:
    """Host C's collect plans with no store it cannot read, and waits for uv's lock; host B
    meanwhile records its first env, on its own disk with its store there, using alpha
    (a registration C never saw). Under the lock the sweep sees the new hidden store and
    frees nothing."""
    b, c = cluster.host("B"), cluster.host("C")
    dead_shared_user(cluster, c, "alpha==1.0")
    holder, proc = collect_waiting(c)
    try:
        env = local_env(cluster, b, "alpha==1.0")
    finally:
        result = finish(holder, proc)
    assert_kept(result, b, env)


# ---------------------------------------------------------------- facts of the wrong object


def test_a_lease_in_the_store_read_at_a_registrations_path_is_taken_for_the_registered_store(
    cluster: Cluster,
) -> None:
    """`_add_hidden_stores` takes a registration of host B's store at path P for one read
    here when the store C reads at P holds a lease of B. But a lease says only that B once
    wrote to the store C sees at P, not that B's store at P is that one. Host B recorded an
    env on the share (its lease is in the shared store), then mounted a disk of its own
    over the share's state directory (node-local state, as round 1's scratch below the
    share) and recorded its local env using alpha: its store at P is now on its own disk,
    registered under the same name, renewed. Host C reads the shared store at P, finds
    B's old lease there, reads nothing of B's local store, and frees alpha under B's
    living env. A registration must name the store it registers (an identity of the store
    itself, not a path and a lease that another store at that path may hold)."""
    b, c = cluster.host("B"), cluster.host("C")
    venv(cluster, b, cluster.shared / "bob/proj/.venv", "beta==1.0")  # B's lease: shared
    state = cluster.shared / "state"
    b.run("mount", "-t", "tmpfs", "-o", "size=64m", "bstate", state)  # B's own disk there
    env = b.home / "venv"
    b.uv("venv", "-q", "--python", sys.executable, env, env=SYMLINK)
    b.uvrefs("install", "-q", "-p", env, *cluster.offline(), "alpha==1.0", env=SYMLINK)
    assert intact(b, env)
    dead_shared_user(cluster, c, "alpha==1.0")
    result = collect_on(c)
    assert_kept(result, b, env)


# ---------------------------------------------------------------- the documented way out


def test_hosts_forget_cannot_forget_a_host_whose_store_is_on_its_own_disk(
    cluster: Cluster,
) -> None:
    """docs/shared-caches.md, "Every host's store must be readable": while a host whose
    store cannot be read here renews its registration, collect frees nothing; "Put the
    store on the shared filesystem ..., or `uvrefs hosts forget` a host gone for good",
    and collect's message says the same. Host B kept its store on its own disk and is
    decommissioned, gone for good. On host C, `uvrefs hosts forget <B's id>` refuses ("no
    host ... in this cache's store": it looks for B only in the leases, records and
    referrers of stores C reads, and B's are all on B's disk), so C's collect frees nothing
    for four weeks, and the one remedy the docs give does not exist. Forgetting a host must
    find it by its registrations too (and drop them)."""
    b, c = cluster.host("B"), cluster.host("C")
    local_env(cluster, b, "beta==1.0")
    b_id = host_id(b)
    b.stop()  # decommissioned
    dead_shared_user(cluster, c, "alpha==1.0")
    refused = collect_on(c)
    assert not freed(refused)  # blocked, as documented
    forgot = c.uvrefs("hosts", "forget", b_id, check=False)
    assert forgot.returncode == 0, forgot.stderr
    result = collect_on(c)
    assert freed(result) == {"alpha 1.0"}, result


# ---------------------------------------------------------------- newer formats


def test_a_registration_a_newer_uvrefs_wrote_is_ignored(cluster: Cluster) -> None:
    """Host B runs a newer uvrefs, which writes its registration as a document
    (`{"format": 99, "store": ...}`) under the same name; its store is on its own disk, its
    env there uses alpha. docs/shared-caches.md: what a newer uvrefs wrote is "left as it
    is, and what it holds is kept", and a store another host registered that this host
    cannot read stops every free. This uvrefs reads the registration as a path, finds it
    is not an absolute one and skips it: no store, no block, and host C's collect frees
    alpha under B's living env. A registration this uvrefs cannot read must count as a
    store it cannot read (held while young), not as no store."""
    b, c = cluster.host("B"), cluster.host("C")
    env = local_env(cluster, b, "alpha==1.0")
    reg = registration_of(cluster, b)
    store = reg.read_text().strip()
    reg.write_text(json.dumps({"format": 99, "store": store, "host": host_id(b)}))
    dead_shared_user(cluster, c, "alpha==1.0")
    result = collect_on(c)
    assert_kept(result, b, env)


# ---------------------------------------------------------------- many mounts


def test_a_local_disk_below_the_share_listed_after_256_network_mounts_is_cut_from_the_lease(
    cluster: Cluster,
) -> None:
    """A lease lists its host's network mounts and the local disks mounted below them, so
    that another host never places a local env of it onto the share (round 1). A lease is
    read with only its first 256 mounts (`hosts._read_lease`), and a host with an
    automounter can have hundreds (HPC nodes with one NFS mount per project under /net,
    bind mounts of a share into jobs). Host B has 260 mounts of the share, then mounts its
    own scratch disk below the share and makes an env there using alpha; its lease lists
    the scratch mount last, and host C never reads it: C places B's env onto the share,
    where C has an env of its own at the same path using beta, and frees alpha under B's
    living env. Every mount a lease lists must be read (or a lease that cannot be read
    whole must not place anything)."""
    b, c = cluster.host("B"), cluster.host("C")
    (cluster.export / "d").mkdir()
    script = (
        f"for i in $(seq 260); do mkdir -p {b.local}/m/$i && "
        f"mount --bind {cluster.shared}/d {b.local}/m/$i; done"
    )
    b.run("sh", "-c", script)
    scratch = cluster.shared / "scratch"
    (cluster.export / "scratch").mkdir()
    b.run("mount", "-t", "tmpfs", "-o", "size=64m", "scratch", scratch)
    local = venv(cluster, b, scratch / ".venv", "alpha==1.0")
    theirs = venv(cluster, c, scratch / ".venv", "beta==1.0")
    assert intact(c, theirs) and intact(b, local)
    lease = lease_file(cluster, host_id(b))
    listed = json.loads(lease.read_text())["mounts"]
    assert len(listed) > 256 and listed[-1][0] == str(scratch), len(listed)
    assert lease.stat().st_size < 1 << 16  # read whole: only the list is cut
    result = collect_on(c)
    assert_kept(result, b, local)


# ---------------------------------------------------------------- one machine, two names


def on_machine(world: World, *args: str | Path, sandbox: bool = False) -> str:
    """The stdout of `args` run on this machine as a machine, not a container: the
    machine's files without the test container's /.dockerenv (`POD`'s chroot), in the
    machine's PID namespace; with `sandbox`, in a PID namespace of its own as well, as a
    desktop sandbox runs (bubblewrap, which Flatpak runs every app in, with the user's
    home bound at its path; firejail; `systemd-run -p PrivatePIDs=yes`): the same machine,
    the same files, the same host name."""
    pid = ["-p", "-f", "--mount-proc"] if sandbox else []
    done = world.run(
        "unshare", "-m", *pid, "--propagation", "private", "sh", "-c", POD, "sh", *args,
        extra_env=SYMLINK,
    )  # fmt: skip
    return done.stdout


def test_a_sandbox_with_a_pid_namespace_makes_the_machine_another_host(world: World) -> None:
    """No shared cache at all: one machine, one cache, one store. The user's IDE runs in a
    desktop sandbox (a Flatpak'd editor: bubblewrap gives it a PID namespace of its own,
    with the home and the machine id of the machine), and its terminal ran `uvrefs install`
    into `~/venv` (alpha). Since round 1 a PID namespace of its own makes a container, so
    those records are of host `<machine id>:<host name>`, another host than the machine's
    `<machine id>`. The user now works in a plain terminal, the env in daily use; the
    scheduled collect (`--host-lease 1h` here for four weeks) judges the sandbox "host"
    gone and frees alpha from an env that is there, at its path, on this very disk. A
    process sharing the machine's filesystem and machine id is not another host (or an env
    a collect can see at its path is judged by what it sees)."""
    env = world.venv("venv")
    python = str(sys.executable)
    code = "from uvrefs.store.refs import host_id; print(host_id())"
    ids = {on_machine(world, python, "-c", code).strip(),
           on_machine(world, python, "-c", code, sandbox=True).strip()}  # fmt: skip
    on_machine(world, python, "-m", "uvrefs", "install", "-q", "-p", env, *world.offline(),
               "alpha==1.0", sandbox=True)  # fmt: skip
    for lease in world.state.glob("caches/*/hosts/*.json"):
        backdate(lease, 2 * HOUR)  # the sandbox was last used two hours ago
    out = on_machine(world, python, "-m", "uvrefs", "collect", "--json", "--min-age", "0",
                     "--host-lease", "1h")  # fmt: skip
    assert "alpha 1.0" not in freed(json.loads(out)), (ids, out)
    assert intact_here(env)


# ---------------------------------------------------------------- planted files


def test_a_link_planted_as_the_registry_hides_every_registration(cluster: Cluster) -> None:
    """The registry (`<cache>/sdists-v*/.uvrefs-stores`) is how a collect learns of stores
    it cannot read: each blocks every free while its host renews it. Anyone who may write
    the shared cache (every user of it) can move the registry aside and plant a symbolic
    link to an empty directory of theirs in its place: `peer_stores` then lists nothing
    (a link is skipped, rightly not followed), `register_store` cannot register (it never
    writes through a link), and no collect hears of any store. Host B's store on its own
    disk tracks its env using alpha; host C's collect frees alpha under it. A registry
    that cannot be listed must stop every free, as a peer store that cannot be read does."""
    b, c = cluster.host("B"), cluster.host("C")
    dead_shared_user(cluster, c, "alpha==1.0")  # makes the cache, its sdists bucket
    (registry,) = (cluster.export / "cache").glob("sdists-v*/.uvrefs-stores")
    planted = cluster.export / "planted"
    planted.mkdir()
    os.rename(registry, cluster.export / "moved-aside")
    os.symlink(planted, registry)
    env = local_env(cluster, b, "alpha==1.0")
    result = collect_on(c)
    assert_kept(result, b, env)


# ---------------------------------------------------------------- repair and expiry


def test_a_host_gone_by_its_old_lease_loses_the_fresh_registration_that_blocked(
    cluster: Cluster,
) -> None:
    """Host B recorded an env on the share with the shared store once (its lease there),
    and has since worked only with a store on its own disk (a local env using alpha; its
    registration of that store is fresh). Host C's collect (`--host-lease 1h`, B's lease
    in the shared store two hours old) judges B gone by that lease, and is blocked by B's
    fresh registration: nothing is freed, rightly. But under uv's lock the sweep drops
    every registration of the expired host (`unregister_host`), the fresh one too, so C's
    next collect finds no store it cannot read and frees alpha under B's living env. A
    registration younger than --host-lease says its host is alive: it must not be dropped
    (nor its host judged gone)."""
    b, c = cluster.host("B"), cluster.host("C")
    venv(cluster, b, cluster.shared / "bob/proj/.venv", "beta==1.0")
    env = local_env(cluster, b, "alpha==1.0")
    backdate(lease_file(cluster, host_id(b)), 2 * HOUR)  # the shared store's lease of B
    dead_shared_user(cluster, c, "alpha==1.0")
    first = collect_on(c, "--host-lease", "1h")
    assert "alpha 1.0" not in freed(first), first  # blocked by B's registration
    result = collect_on(c, "--host-lease", "1h")
    assert_kept(result, b, env)


def test_a_host_name_from_the_environment_never_makes_another_hosts_store_ours(
    cluster: Cluster,
) -> None:
    """Review of issue 21: a registration was taken for one of this host's own stores when
    its host key was any name this process goes by, `UVREFS_HOST` from its environment
    included. Two CI runners set the same `UVREFS_HOST=ci`; runner B keeps its store on
    its own disk at the path where C reads the shared store, and its local env uses alpha.
    C's collect took B's registration (key "ci", a path C reads) for its own store, so
    nothing was hidden: alpha was freed under B's env. Only the machine's own names make
    a registration ours; any other must name the id of a store read here."""
    b, c = cluster.host("B"), cluster.host("C")
    named = {**SYMLINK, "UVREFS_HOST": "ci"}
    dead_shared_user(cluster, c, "alpha==1.0")  # (and the shared store made)
    state = cluster.shared / "state"
    b.run("mount", "-t", "tmpfs", "-o", "size=64m", "bstate", state)  # B's own disk there
    env = b.home / "venv"
    b.uv("venv", "-q", "--python", sys.executable, env, env=named)
    b.uvrefs("install", "-q", "-p", env, *cluster.offline(), "alpha==1.0", env=named)
    assert intact(b, env)
    result = collect_on(c, env={"UVREFS_HOST": "ci"})
    assert_kept(result, b, env)
