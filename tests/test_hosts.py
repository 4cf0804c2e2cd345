"""The multi-host harness (tests/hosts.py) proves itself: hosts share one uv cache and its
environments over sshfs, each with its own identity, disk and clock, and what a network
filesystem does to locks, inodes, link counts, symlinks and caching is pinned here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import NOBODY, World
from tests.hosts import (
    MOUNT_OPTIONS,
    SESSION,
    Cluster,
    Host,
    SshServer,
    processes_in,
    running,
    wait_gone,
)

SYMLINK = {"UV_LINK_MODE": "symlink"}

# Holds an exclusive flock on argv[1] until killed; says "held" once it has it.
HOLD = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT);"
    "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)"
)
# Tries an exclusive flock on argv[1] without waiting: "acquired" or "refused".
TRY = (
    "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('acquired')\n"
    "except BlockingIOError:\n    print('refused')"
)
# os.lstat of each argument as JSON: [ino, nlink, dev, mtime].
STAT = (
    "import json, os, sys\n"
    "print(json.dumps([[s.st_ino, s.st_nlink, s.st_dev, s.st_mtime]"
    " for s in map(os.lstat, sys.argv[1:])]))"
)


def stats(host: Host, *paths: Path) -> list[list[float]]:
    return json.loads(host.python(STAT, *paths))  # type: ignore[no-any-return]


def make_env(cluster: Cluster, host_name: str, env: Path, mode: str = "symlink") -> None:
    """`uv venv` on the share with the test venv's Python, then alpha 1.0 from the tests'
    wheelhouse, offline, in link mode `mode`."""
    host = cluster.host(host_name)
    link = {"UV_LINK_MODE": mode}
    host.uv("venv", "-q", "--python", sys.executable, env, env=link)
    host.uv("pip", "install", "-q", "-p", env, *cluster.offline(), "alpha==1.0", env=link)


def installed(cluster: Cluster, env: Path, name: str) -> Path:
    """The path on the share of file `name` installed in `env`'s site-packages (found on
    the server's side, where a symlink-mode file's link dangles: its target is on the
    share, which only hosts mount)."""
    server_env = cluster.export / env.relative_to(cluster.shared)
    site = next(server_env.glob("lib/python*/site-packages"))
    return cluster.shared / site.relative_to(cluster.export) / name


def test_an_env_made_on_one_host_is_used_and_deleted_on_others(cluster: Cluster) -> None:
    env = cluster.shared / "proj/.venv"
    make_env(cluster, "A", env)
    a, b, c = cluster.host("A"), cluster.host("B"), cluster.host("C")
    # Symlink mode through sshfs: the installed file is an absolute link into the shared
    # cache, readable as such on every host (no_contain_symlinks).
    init = installed(cluster, env, "alpha/__init__.py")
    target = b.python("import os, sys; print(os.readlink(sys.argv[1]))", init).strip()
    assert target.startswith(str(cluster.shared / "cache/archive-v0") + "/")
    imported = b.run(env / "bin/python", "-c", "import alpha; print(alpha.__version__)")
    assert imported.stdout.strip() == "1.0"
    assert c.python("import os, sys; print(os.path.exists(sys.argv[1]))", env).strip() == "True"
    b.run("rm", "-rf", env)
    for host in (c, a):  # both looked at it before: no cached view survives the deletion
        gone = host.python("import os, sys; print(os.path.lexists(sys.argv[1]))", env)
        assert gone.strip() == "False", host.name
    assert not (cluster.export / "proj/.venv").exists()  # the server's side


def host_name(machine_id: str, hostname: str) -> str:
    """What uvrefs names a host: its machine id, and in a container (as this test machine
    is: `hosts.in_container`) its host name too (containers of one image share the id)."""
    from uvrefs.hosts import in_container

    return f"{machine_id}:{hostname}" if in_container() else machine_id


def test_uvrefs_runs_on_a_host_and_names_it_by_its_machine_id(cluster: Cluster) -> None:
    a = cluster.host("A", machine_id="a" * 32)
    env = cluster.shared / "proj/.venv"
    a.uv("venv", "-q", "--python", sys.executable, env)
    a.uvrefs("install", "-q", "-p", env, *cluster.offline(), "alpha==1.0", env=SYMLINK)
    refs = list((cluster.export / "state").glob("caches/*/refs/*.refs"))
    assert refs, "uvrefs recorded nothing in the shared store"
    hosts = {r["host"] for ref in refs for r in json.loads(ref.read_text())["referrers"]}
    assert hosts == {host_name("a" * 32, "A")}


def test_each_host_has_its_own_name_and_machine_id(cluster: Cluster) -> None:
    hosts = [cluster.host(name) for name in ("A", "B", "C")]
    ours = Path("/etc/machine-id").read_text().strip()
    probe = (
        "import socket; from pathlib import Path; from uvrefs.store.refs import host_id;"
        "print(socket.gethostname(), Path('/etc/machine-id').read_text().strip(), host_id())"
    )
    seen = {host.name: host.python(probe).split() for host in hosts}
    for host in hosts:
        named = host_name(host.machine_id, host.name)
        assert seen[host.name] == [host.name, host.machine_id, named]
        if Path("/var/lib/dbus/machine-id").exists():
            dbus = host.run("cat", "/var/lib/dbus/machine-id").stdout.strip()
            assert dbus == host.machine_id
        assert "UVREFS_HOST" not in host.run("env").stdout
    assert len({host.machine_id for host in hosts}) == 3
    # Nothing leaked into the test process: its identity and mounts are its own.
    assert Path("/etc/machine-id").read_text().strip() == ours
    assert str(cluster.root) not in Path("/proc/self/mountinfo").read_text()


def test_a_hosts_local_disk_is_its_own(cluster: Cluster) -> None:
    a, b = cluster.host("A"), cluster.host("B")
    note = a.home / "note"
    a.run("sh", "-c", f"echo from-a > {note}")
    assert a.run("cat", note).stdout == "from-a\n"
    assert b.run("test", "-e", note, check=False).returncode == 1
    assert os.listdir(cluster.root) == []  # outside every host: an empty directory
    a.unmount_local()
    assert a.run("test", "-e", note, check=False).returncode == 1
    assert a.run("ls", cluster.shared).returncode == 0  # the share stays mounted


def test_flock_is_local_to_each_mount(cluster: Cluster) -> None:
    """sshfs keeps flock(2) locks in the client's kernel: an exclusive lock on the cache's
    `.lock` excludes processes on its own host, not on another (as NFS with `nolock`)."""
    a, b = cluster.host("A"), cluster.host("B")
    lock = cluster.shared / "cache/.lock"
    a.run("mkdir", "-p", lock.parent)
    holder = a.spawn(sys.executable, "-c", HOLD, lock)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        assert a.python(TRY, lock).strip() == "refused"  # same mount
        assert b.python(TRY, lock).strip() == "acquired"  # another host
        # POSIX record locks the same way.
        lockf = TRY.replace("fcntl.flock(fd,", "fcntl.lockf(fd,")
        assert b.python(lockf, lock).strip() == "acquired"
        # And uv: on B it takes the cache lock at once; on A it waits for the holder.
        b.uv("cache", "prune", "-q", env={"UV_LOCK_TIMEOUT": "1"})
        waited = a.uv("cache", "prune", "-q", env={"UV_LOCK_TIMEOUT": "1"}, check=False)
        assert waited.returncode != 0 and "Timeout" in waited.stderr
    finally:
        holder.kill()
        holder.wait()


def test_inodes_and_link_counts(cluster: Cluster) -> None:
    """SFTP carries no inode numbers or link counts: through sshfs every file has
    st_nlink 1 and an inode number the mount makes up (per mount, in the order it meets
    names), so hard links look like different files; sshfs 3 refuses `-o use_ino`."""
    server_file, server_link = cluster.export / "f", cluster.export / "g"
    server_file.write_text("x")
    os.link(server_file, server_link)
    assert server_file.stat().st_nlink == 2
    a, b = cluster.host("A"), cluster.host("B")
    (f_ino, f_nlink, a_dev, _), (g_ino, g_nlink, _, _) = stats(a, *(
        cluster.shared / n for n in ("f", "g")))  # fmt: skip
    assert (f_nlink, g_nlink) == (1, 1)
    assert f_ino != g_ino
    assert a.python("import os, sys; print(os.path.samefile(*sys.argv[1:]))",
                    cluster.shared / "f", cluster.shared / "g").strip() == "False"  # fmt: skip
    # Each mount is its own device; the same file may have different numbers on each.
    (_, _, b_dev, _), = stats(b, cluster.shared / "f")  # fmt: skip
    assert a_dev != b_dev
    # A name keeps its number when the file behind it is replaced on the server.
    server_file.unlink()
    server_file.write_text("new")
    assert stats(a, cluster.shared / "f")[0][0] == f_ino
    # uv's hardlink mode works through sshfs (SFTP's hardlink extension): the server
    # counts the venv's link, clients still read 1.
    env = cluster.shared / "hard"
    make_env(cluster, "A", env, mode="hardlink")
    client_path = installed(cluster, env, "alpha/__init__.py")
    assert (cluster.export / client_path.relative_to(cluster.shared)).stat().st_nlink == 2
    assert stats(b, client_path)[0][1] == 1
    # Times have whole seconds only (SFTP v3).
    assert all(float(s[3]).is_integer() for s in stats(b, client_path, cluster.shared / "f"))
    with pytest.raises(AssertionError, match=r"unknown option.*use_ino"):
        cluster.host("U", options=(*MOUNT_OPTIONS, "use_ino"))


def test_symlinks_need_no_contain_symlinks(cluster: Cluster) -> None:
    """sshfs's default refuses to read absolute symlinks (and ones with ".."), so without
    `no_contain_symlinks` a venv's bin/python is unusable; creating such links works."""
    env = cluster.shared / "env"
    make_env(cluster, "A", env)
    strict = cluster.host("S", options=[o for o in MOUNT_OPTIONS if o != "no_contain_symlinks"])
    refused = strict.run(env / "bin/python", "-c", "pass", check=False)
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    strict.run("ln", "-s", sys.executable, cluster.shared / "py")
    assert os.readlink(cluster.export / "py") == sys.executable
    assert cluster.host("A").run(cluster.shared / "py", "-c", "pass").returncode == 0


def test_sshfs_default_caching_shows_a_deleted_env(cluster: Cluster) -> None:
    """Why the harness mounts with dir_cache=no and zero kernel timeouts: with sshfs's
    defaults a host keeps seeing, for up to 20 s, an env another host has deleted."""
    env = cluster.shared / "env"
    make_env(cluster, "A", env)
    cached = cluster.host("D", options=["no_contain_symlinks"])
    coherent = cluster.host("B")
    exists = "import os, sys; print(os.path.exists(sys.argv[1]))"
    for host in (cached, coherent):
        assert host.python(exists, env / "bin/python").strip() == "True"
    cluster.host("A").run("rm", "-rf", env)
    assert cached.python(exists, env / "bin/python").strip() == "True"  # stale
    assert coherent.python(exists, env / "bin/python").strip() == "False"


def test_a_host_with_a_skewed_clock(cluster: Cluster) -> None:
    """set_clock_offset skews the wall clock of everything the host runs (libfaketime),
    uv included; monotonic time and file times (the server's clock) are not skewed."""
    a, b = cluster.host("A"), cluster.host("B")
    b.set_clock_offset(-7200)
    probe = (
        "import os, sys, time; open(sys.argv[1], 'w').close();"
        "print(time.time(), time.monotonic(), os.stat(sys.argv[1]).st_mtime)"
    )
    now, mono = time.time(), time.monotonic()
    a_now, a_mono, a_mtime = map(float, a.python(probe, cluster.shared / "a").split())
    b_now, b_mono, b_mtime = map(float, b.python(probe, cluster.shared / "b").split())
    assert abs(a_now - now) < 30 and abs(b_now - (now - 7200)) < 30
    assert abs(b_mono - mono) < 30 and abs(a_mono - mono) < 30
    assert abs(b_mtime - now) < 30 and abs(a_mtime - now) < 30
    assert abs(int(b.run("date", "+%s").stdout) - (now - 7200)) < 30
    make_env(cluster, "B", cluster.shared / "env")  # uv runs under it


def test_fifty_containers_of_one_image(cluster: Cluster) -> None:
    """Containers on one node: one machine id (the image's), a host name each, their own
    local disk, and the node's mount of the share, on which they do lock one another."""
    started = time.monotonic()
    containers = cluster.containers(50)
    took = time.monotonic() - started
    assert took < 20, f"50 containers took {took:.1f} s"
    node = cluster.hosts["node"]
    ids = {c.run("cat", "/etc/machine-id").stdout.strip() for c in containers}
    assert ids == {containers[0].machine_id} and containers[0].machine_id != node.machine_id
    names = {c.run("hostname").stdout.strip() for c in containers}
    assert names == {c.hostname for c in containers} and len(names) == 50
    first, second = containers[0], containers[1]
    first.run("touch", first.home / "mine", cluster.shared / "from-first")
    assert second.run("test", "-e", first.home / "mine", check=False).returncode == 1
    assert (cluster.export / "from-first").exists()
    lock = cluster.shared / ".lock"
    holder = first.spawn(sys.executable, "-c", HOLD, lock)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        assert second.python(TRY, lock).strip() == "refused"  # one mount, one kernel
        assert cluster.host("other").python(TRY, lock).strip() == "acquired"  # another node
    finally:
        holder.kill()
        holder.wait()


def test_how_long_a_host_takes(cluster: Cluster) -> None:
    """Figures for the end-of-run line: starting a host (namespaces, tmpfs, ssh login and
    sshfs mount) and running a command in it."""
    starts = []
    for name in ("A", "B", "C"):
        started = time.monotonic()
        cluster.host(name)
        starts.append(time.monotonic() - started)
    a = cluster.host("A")
    runs = []
    for _ in range(10):
        started = time.monotonic()
        a.run("true")
        runs.append(time.monotonic() - started)
    start, run = statistics.median(starts), statistics.median(runs)
    SESSION["host start"] = f"{start:.2f} s"
    SESSION["command"] = f"{run * 1000:.0f} ms"
    assert start < 5 and run < 1


def test_nothing_outlives_a_killed_session(tmp_path: Path, ssh_server: SshServer) -> None:
    """A pytest killed with SIGKILL leaves no host process, mount or sshd behind."""
    script = (
        "import json, sys; from pathlib import Path\n"
        "from tests.hosts import Cluster, SshServer\n"
        "base = Path(sys.argv[1])\n"
        "for d in ('sshd', 'export', 'cluster'): (base / d).mkdir()\n"
        "server = SshServer(base / 'sshd', base / 'export')\n"
        "cluster = Cluster(server, base / 'cluster')\n"
        "cluster.host('A'), cluster.host('B'), cluster.containers(3)\n"
        "namespaces = sorted(ns for h in cluster.hosts.values() for ns in h.namespaces)\n"
        "print(json.dumps([server.proc.pid, namespaces]), flush=True)\n"
        "sys.stdin.read()\n"
    )
    session = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=Path(__file__).parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert session.stdout
        sshd, namespaces = json.loads(session.stdout.readline())
        assert len(namespaces) == 12 and processes_in(set(namespaces))  # 6 hosts
    finally:
        session.send_signal(signal.SIGKILL)
        session.wait()
    assert wait_gone(set(namespaces)) == []
    deadline = time.monotonic() + 10
    while running(sshd) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not running(sshd)
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def test_other_users(ssh_server: SshServer) -> None:
    """Why the harness does not mount with allow_other: without it only root uses the
    share; with it every user acts as the server's user (root): nobody reads a 0600 file
    of root's and deletes root's files; default_permissions checks modes on the client,
    but what nobody creates still belongs to root."""
    base = Path(tempfile.mkdtemp(prefix="uvrefs-hosts-", dir="/tmp"))
    base.chmod(0o755)  # pytest's temp dirs are 0700: nobody could not reach the mount
    cluster = Cluster(ssh_server, base)
    try:
        (cluster.export / "secret").write_text("s")
        (cluster.export / "secret").chmod(0o600)
        cluster.export.chmod(0o777)
        plain = cluster.host("R")
        other = cluster.host("O", options=(*MOUNT_OPTIONS, "allow_other"))
        checked = cluster.host("P", options=(*MOUNT_OPTIONS, "allow_other", "default_permissions"))
        secret = cluster.shared / "secret"
        denied = plain.run(*NOBODY, "ls", cluster.shared, check=False)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        assert other.run(*NOBODY, "cat", secret).stdout == "s"
        assert checked.run(*NOBODY, "cat", secret, check=False).returncode != 0
        mine = cluster.shared / "mine"
        checked.run(*NOBODY, sys.executable, "-c", "open(__import__('sys').argv[1], 'x')", mine)
        assert (cluster.export / "mine").stat().st_uid == 0
        refused = checked.run(*NOBODY, "touch", mine, check=False)  # its own new file
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        other.run(*NOBODY, "rm", secret)
        assert not (cluster.export / "secret").exists()
    finally:
        cluster.close()
        shutil.rmtree(base, ignore_errors=True)


def test_a_collect_in_a_pid_namespace_of_its_own_judges_the_machines_envs_as_its_own(
    world: World,
) -> None:
    """The reverse of a desktop sandbox's install (tests/test_attack_shared2.py): the env
    is recorded by the machine (no namespace: under its machine id), and the scheduled
    collect runs in a PID namespace of its own (a systemd service with PrivatePIDs, a
    sandboxed terminal), so its own name is `<machine id>:<host name>`. The machine's
    envs are still its own, judged at their paths: the lease of the machine id, old as it
    is, never makes them another host's, gone."""
    from tests.test_attack_shared import HOUR, backdate
    from tests.test_attack_shared2 import on_machine
    from tests.test_liveness import intact
    from tests.test_shared_caches import freed

    env = world.venv("venv")
    python = sys.executable
    on_machine(world, python, "-m", "uvrefs", "install", "-q", "-p", env, *world.offline(),
               "alpha==1.0")  # fmt: skip
    for lease in world.state.glob("caches/*/hosts/*.json"):
        backdate(lease, 2 * HOUR)  # the machine's last install was two hours ago
    out = on_machine(world, python, "-m", "uvrefs", "collect", "--json", "--min-age", "0",
                     "--host-lease", "1h", sandbox=True)  # fmt: skip
    assert "alpha 1.0" not in freed(json.loads(out)), out
    assert intact(env)
