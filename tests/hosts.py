"""Several hosts on this one machine, for tests of one uv cache shared over a network
filesystem (HPC nodes on NFS, CI containers on one cache volume), with real processes.

A host is a process tree in mount, UTS and PID namespaces of its own (`unshare`, as root):
its own host name, its own `/etc/machine-id` (a file bind-mounted over it), its own tmpfs
as local disk, and the shared directory mounted with sshfs from a private sshd on
127.0.0.1. Every host sees the same paths: `Cluster.shared` is the network mount on each
host (the cache, refs stores and projects go there), `Cluster.local` is each host's own
tmpfs (its home and temp dir). Both sit on a small tmpfs mounted in each host only, so in
the test process they do not exist: a command run outside every host fails instead of
quietly using the server's directory. The server's side of the share is `Cluster.export`.

    cluster.host("A").uv("venv", "--python", sys.executable, cluster.shared / "env")
    cluster.host("B").run(cluster.shared / "env/bin/python", "-c", "import sys")
    nodes = cluster.containers(50)          # one image machine id, 50 host names

`host.run` enters the host with `nsenter` (a few ms); commands get the host's own
environment (HOME and TMPDIR on its tmpfs, UV_CACHE_DIR and UVREFS_DIR on the share,
UVREFS_HOST unset, so uvrefs names the host by its machine id). `host.set_clock_offset`
skews the wall clock of the commands the host runs from then on (libfaketime: the kernel
has no per-namespace realtime clock).

Nothing outlives the session: each host's first process is `setpriv --pdeathsig KILL
unshare --kill-child`, so when pytest dies, however it dies, the kernel kills the host's
PID namespace (sshfs and ssh with it) and frees its mounts; sshd dies the same way. Needs
root, /dev/fuse, util-linux, sshd (openssh-server) and sshfs; `make test` installs the
last two with apt-get when it can (scripts/test_prereqs.sh). Without them the tests skip
and the run ends with "multi-host suite: skipped (<why>)".
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import UV, isolated_env, suite_summary
from tests.fsimage import tool

# sshfs options every host mounts with unless a test asks for others, each measured in
# tests/test_hosts.py:
# - no_contain_symlinks: sshfs refuses absolute symlinks by default, and a venv's
#   bin/python is one (so is every file uv installs in symlink mode).
# - dir_cache=no and the kernel's entry/attr timeouts at 0: without them a host keeps
#   seeing a venv another host deleted (sshfs caches names and attributes for 20 s, the
#   kernel for 1 s). NFS caches too (actimeo), but a test must not depend on a timeout.
#   It costs: an offline install of four small wheels takes 0.5 s instead of 0.25 s.
# Not used: use_ino (sshfs 3 refuses it: "fuse: unknown option(s)"; SFTP carries no
# inode numbers or link counts anyway), allow_other (only root, who mounts, uses the
# share: with it any user acts as root on the server, see test_other_users),
# reconnect (the connection is local and lives exactly as long as the host).
MOUNT_OPTIONS: tuple[str, ...] = (
    "no_contain_symlinks",
    "dir_cache=no",
    "entry_timeout=0",
    "attr_timeout=0",
    "negative_timeout=0",
)

# What the session did, for the line at the end of the run (tests/conftest.py):
# "outcome", and "host start" and "command" once test_how_long_a_host_takes measured them.
SESSION: dict[str, str] = {}

TOOLS = {  # what the harness runs, and the Debian package that has it
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "sshfs": "sshfs",
}

# A host's first process, run by `sh -c BOOT sh NAME ROOT MACHINE_ID_FILE FRESH` as PID 1
# of its PID namespace: names the host, mounts its disks, prints "ready" and sleeps until
# it is killed. FRESH=0 for a container, whose ROOT (and its shared mount) comes from the
# node it was cloned from.
BOOT = r"""
set -e
printf '%s' "$1" > /proc/sys/kernel/hostname
if [ "$4" = 1 ]; then
    mount -t tmpfs -o mode=755,size=1m uvrefs-hosts "$2"
    mkdir "$2/local" "$2/shared"
fi
mount -t tmpfs -o mode=755,size=256m uvrefs-local "$2/local"
mkdir "$2/local/home" "$2/local/tmp"
for id in /etc/machine-id /var/lib/dbus/machine-id; do
    if [ -e "$id" ]; then mount --bind "$3" "$id"; fi
done
echo ready
exec sleep infinity
"""


class Unavailable(Exception):
    """Why the harness cannot run here (the tests skip with this reason)."""


def faketime_library() -> Path | None:
    """libfaketime (Debian: faketime), which `Host.set_clock_offset` preloads."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    return next(iter(found + sorted(Path("/usr/lib").glob("faketime/libfaketime.so.1"))), None)


def missing_prerequisites() -> str | None:
    """Why the harness cannot run on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return f"hosts are Linux namespaces, not available on {sys.platform}"
    if os.geteuid() != 0:
        return f"namespaces and FUSE mounts need root (running as uid {os.geteuid()})"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened ({exc.strerror})"
    missing = [f"{name} ({package})" for name, package in TOOLS.items() if tool(name) is None]
    if missing:
        return "not found: " + ", ".join(missing)
    nsenter = [tool("nsenter") or "nsenter", "--help"]
    done = subprocess.run(nsenter, capture_output=True, text=True, check=False)
    if "--wdns" not in done.stdout:
        return "nsenter has no --wdns (util-linux 2.38 or later needed)"
    return None


def namespace(pid: int, kind: str) -> str | None:
    """The namespace `kind` ("mnt", "pid_for_children", ...) of process `pid`."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """Process `pid`'s state letter and its parent's pid; None when there is no such."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return state, int(ppid)


def parent(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat else None


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def processes() -> dict[int, tuple[str, int]]:
    """Every process now: its state letter and its parent's pid, by pid."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            found[int(entry.name)] = stat
    return found


def processes_in(namespaces: set[str]) -> list[int]:
    """Every living process (not a zombie) whose mount or PID namespace is one of
    `namespaces`."""
    return [
        pid
        for pid, (state, _) in processes().items()
        if state != "Z" and any(namespace(pid, kind) in namespaces for kind in ("mnt", "pid"))
    ]


def wait_gone(namespaces: set[str], timeout: float = 10) -> list[int]:
    """Wait until no process is left in `namespaces` (the kernel then frees their mounts);
    the processes still there after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := processes_in(namespaces)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _version(pattern: str, *args: str) -> str:
    """The version `pattern` finds in what `args` print."""
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)
    found = re.search(pattern, done.stdout + done.stderr)
    return found[1] if found else "?"


class SshServer:
    """A private sshd on 127.0.0.1 for the session: its own host key, user key, authorized
    keys and sshd_config in `directory`, serving SFTP as root. It never reads the system's
    sshd configuration or root's ~/.ssh; it runs in a mount namespace of its own where
    /run is a tmpfs (sshd insists on /run/sshd, which the system need not have)."""

    def __init__(self, directory: Path, export: Path) -> None:
        self.directory = directory
        self.export = export
        self.ssh_config = directory / "ssh_config"
        self.log = directory / "sshd.log"
        for key in ("host_key", "user_key"):
            subprocess.run(
                [tool("ssh-keygen") or "ssh-keygen", "-q", "-t", "ed25519", "-N", "",
                 "-C", f"uvrefs-tests-{key}", "-f", str(directory / key)],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
        (directory / "authorized_keys").write_text((directory / "user_key.pub").read_text())
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        problems = []
        for _attempt in range(3):  # another process may take the free port first
            problem = self._start(_free_port())
            if problem is None:
                return
            problems.append(problem)
        raise Unavailable("sshd did not start: " + "; ".join(problems))

    def _start(self, port: int) -> str | None:
        d = self.directory
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nAuthenticationMethods publickey\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
            "UseDNS no\nPrintMotd no\nX11Forwarding no\nAllowTcpForwarding no\n"
            "LogLevel ERROR\nSubsystem sftp internal-sftp\n"
        )
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
        self.ssh_config.write_text(
            f"Host *\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"
            f"  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  StrictHostKeyChecking yes\n  UserKnownHostsFile {d}/known_hosts\n"
            "  GlobalKnownHostsFile /dev/null\n  ControlMaster no\n  LogLevel ERROR\n"
        )
        boot = (
            "mount -t tmpfs -o mode=755,size=1m uvrefs-sshd /run && mkdir -m 755 /run/sshd"
            ' && exec "$0" -D -e -f "$1"'
        )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [tool("setpriv") or "setpriv", "--pdeathsig", "KILL",
                 tool("unshare") or "unshare", "-m", "--propagation", "private",
                 "sh", "-c", boot, tool("sshd") or "sshd", str(d / "sshd_config")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.log.read_text(errors="replace").strip()[:300] or "sshd exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                self.port = port
                return None
            time.sleep(0.05)
        self.stop()
        return "sshd did not listen within 10 s"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class HostProcess(subprocess.Popen[str]):
    """A command started in a host by `nsenter`, which forks it into the host's PID
    namespace. Signals go to the command itself: nsenter then reaps it and exits. Were
    nsenter killed first, the command would die (`setpriv --pdeathsig`) but be left for
    the machine's init to reap, and its host could not finish dying until then."""

    def send_signal(self, sig: int) -> None:
        inner = [pid for pid, (_, ppid) in processes().items() if ppid == self.pid]
        for pid in inner:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not inner:
            super().send_signal(sig)


class Host:
    """One host: a PID namespace whose first process is `pid`'s child. Run commands in it
    with `run` (or `uv`, `uvrefs`, `python`, `spawn` for one that keeps running)."""

    def __init__(
        self,
        cluster: Cluster,
        name: str,
        hostname: str,
        machine_id: str,
        proc: subprocess.Popen[bytes],
        node: Host | None = None,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.hostname = hostname
        self.machine_id = machine_id
        self.proc = proc
        self.node = node  # the host whose shared mount a container uses
        self.clock_offset = 0.0
        self.namespaces: set[str] = set()  # its mount and PID namespaces, once started
        self.init = 0  # its PID 1 (`pid`'s child), once started
        self.local = cluster.local
        self.home = cluster.local / "home"
        self.cwd = self.home  # where commands start unless told otherwise
        self.env = cluster.base_env(self.home)

    @property
    def pid(self) -> int:
        """The `unshare` process, in this host's mount and UTS namespaces (its child, PID 1
        of the host, is in the PID namespace too)."""
        return self.proc.pid

    def command(self, args: Sequence[str | Path], cwd: Path | None = None) -> list[str]:
        """`args` as a command line that runs them in this host; killed with its caller."""
        return [
            self.cluster.nsenter, "-t", str(self.pid), "-m", "-u",
            f"--pid=/proc/{self.pid}/ns/pid_for_children", f"--wdns={cwd or self.cwd}",
            self.cluster.setpriv, "--pdeathsig", "KILL", "--", *map(str, args),
        ]  # fmt: skip

    def environment(self, env: dict[str, str | None] | None) -> dict[str, str]:
        merged: dict[str, str | None] = {**self.env, **self.clock_env(), **(env or {})}
        return {k: v for k, v in merged.items() if v is not None}

    def run(
        self,
        *args: str | Path,
        env: dict[str, str | None] | None = None,
        check: bool = True,
        cwd: Path | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in this host with its environment plus `env` (None unsets a
        variable); raise AssertionError when it fails and `check`."""
        done = subprocess.run(
            self.command(args, cwd),
            env=self.environment(env),
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"on {self.name}: {[str(a) for a in args]} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done

    def spawn(
        self, *args: str | Path, env: dict[str, str | None] | None = None
    ) -> subprocess.Popen[str]:
        """Start a command in this host and return at once (its stdout is a pipe); it is
        killed with the host at the latest."""
        return HostProcess(
            self.command(args),
            env=self.environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )

    def uv(self, *args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(self.cluster.uv_bin, *args, **kw)  # type: ignore[arg-type]

    def uvrefs(self, *args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "uvrefs", *args, **kw)  # type: ignore[arg-type]

    def python(self, code: str, *args: str | Path, **kw: object) -> str:
        """The stdout of `python -c code args` run in this host (the test venv's Python)."""
        return self.run(sys.executable, "-c", code, *args, **kw).stdout  # type: ignore[arg-type]

    def mount(self, options: Sequence[str]) -> None:
        """Mount the cluster's export on `Cluster.shared` with sshfs."""
        self.run(
            self.cluster.sshfs, "-F", self.cluster.server.ssh_config,
            f"x:{self.cluster.export}", self.cluster.shared, "-o", ",".join(options),
            timeout=30,
        )  # fmt: skip

    def unmount_local(self) -> None:
        """Unmount this host's local disk (what was on it is gone; the directory stays).
        Commands start in / from then on."""
        self.run(tool("umount") or "umount", "-l", self.local, cwd=Path("/"))
        self.cwd = Path("/")

    def set_clock_offset(self, seconds: float) -> None:
        """Skew this host's wall clock by `seconds` for every command it runs from now on:
        time(), gettimeofday() and clock_gettime(CLOCK_REALTIME) in Python, uv and any
        dynamically linked program (libfaketime). Monotonic clocks and file timestamps are
        left alone: a file's times come from the file server's clock, as on NFS."""
        if seconds and faketime_library() is None:
            pytest.skip("clock skew needs libfaketime (Debian: faketime)")
        self.clock_offset = seconds

    def clock_env(self) -> dict[str, str | None]:
        if not self.clock_offset:
            return {}
        return {
            "LD_PRELOAD": str(faketime_library()),
            "FAKETIME": f"{self.clock_offset:+g}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "NO_FAKE_STAT": "1",
        }

    def kill(self) -> None:
        """Kill the host's PID 1: the kernel kills every process in its PID namespace, and
        frees its mounts once the last is gone; `unshare` reaps it and exits. (Killing
        `unshare` first would work too, but leave PID 1 to be reaped by the machine's init,
        which may take seconds.)"""
        if self.proc.poll() is None:
            init_alive = self.init and parent(self.init) == self.pid  # not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init if init_alive else self.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Wait for the killed host's `unshare` to exit."""
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def stop(self) -> None:
        """Kill the host and wait until nothing of it is left."""
        self.kill()
        self.reap()
        self.cluster.hosts.pop(self.name, None)
        wait_gone(self.namespaces)


class Cluster:
    """Hosts sharing one directory over sshfs. `shared` and `local` are the same paths on
    every host; `export` is the server's directory behind `shared`."""

    def __init__(self, server: SshServer, base: Path, wheels: Path | None = None) -> None:
        self.server = server
        self.base = base
        self.wheels = wheels
        self.root = base / "hosts"  # a tmpfs in every host, an empty directory outside
        self.root.mkdir()
        self.shared = self.root / "shared"
        self.local = self.root / "local"
        self.export = server.export / base.name
        self.export.mkdir()
        self.ids = base / "machine-ids"
        self.ids.mkdir()
        self.logs = base / "logs"
        self.logs.mkdir()
        self.hosts: dict[str, Host] = {}
        self.uv_bin = UV or "uv"
        self.nsenter = tool("nsenter") or "nsenter"
        self.setpriv = tool("setpriv") or "setpriv"
        self.sshfs = tool("sshfs") or "sshfs"

    def offline(self) -> list[str]:
        """uv's arguments to install from the tests' wheelhouse only."""
        assert self.wheels, "this cluster was made without a wheelhouse"
        return ["--no-index", "--find-links", str(self.wheels)]

    def base_env(self, home: Path) -> dict[str, str]:
        """What every command on a host starts from: a World's environment (tests/conftest.py)
        with this host's home and temp dir on its disk, and the cache and refs store on the
        share."""
        env = isolated_env(home, self.shared / "cache", self.shared / "state", self.uv_bin)
        env["TMPDIR"] = str(self.local / "tmp")
        return env

    def host(
        self,
        name: str,
        *,
        hostname: str | None = None,
        machine_id: str | None = None,
        options: Sequence[str] = MOUNT_OPTIONS,
    ) -> Host:
        """The host `name`, started on first use with the host name `hostname` (default
        `name`), a random machine id, and the share mounted with `options`."""
        if name in self.hosts:
            return self.hosts[name]
        host = self._boot([self._spawn(name, hostname or name, machine_id, None)])[0]
        host.mount(options)
        return host

    def containers(
        self,
        count: int,
        *,
        node: Host | None = None,
        machine_id: str | None = None,
        prefix: str = "c",
    ) -> list[Host]:
        """`count` containers of one image on `node` (default: a host named "node"): each
        has its own PID, mount and UTS namespace, a random 12-hex-digit host name (as
        Docker gives) and its own local tmpfs, and all share the image's machine id and the
        node's sshfs mount (as a cache volume), so they start without ssh connections."""
        node = node or self.host("node")
        image_id = machine_id or secrets.token_hex(16)
        spawned = [
            self._spawn(f"{prefix}{i}", secrets.token_hex(6), image_id, node) for i in range(count)
        ]
        return self._boot(spawned)

    def _spawn(
        self, name: str, hostname: str, machine_id: str | None, node: Host | None
    ) -> tuple[Host, subprocess.Popen[bytes]]:
        if name in self.hosts:
            raise ValueError(f"host {name} exists already")
        machine_id = machine_id or secrets.token_hex(16)
        id_file = self.ids / name
        id_file.write_text(machine_id + "\n")
        enter = [self.nsenter, "-t", str(node.pid), "-m", "--"] if node else []
        with open(self.logs / name, "wb") as log:
            proc = subprocess.Popen(
                [self.setpriv, "--pdeathsig", "KILL", *enter,
                 tool("unshare") or "unshare", "-m", "-u", "-p", "--fork", "--kill-child",
                 "--mount-proc", "--propagation", "private",
                 "sh", "-c", BOOT, "sh", hostname, str(self.root), str(id_file),
                 "0" if node else "1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            )  # fmt: skip
        host = Host(self, name, hostname, machine_id, proc, node)
        self.hosts[name] = host
        return host, proc

    def _boot(self, spawned: list[tuple[Host, subprocess.Popen[bytes]]]) -> list[Host]:
        """Wait until every spawned host has printed "ready"."""
        deadline = time.monotonic() + 30
        for host, proc in spawned:
            assert proc.stdout is not None
            line = b""
            while not line.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.1)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 64)
                    if not chunk:
                        break
                    line += chunk
            if line.strip() != b"ready":
                host.stop()
                why = (self.logs / host.name).read_text(errors="replace").strip()
                raise Unavailable(f"host {host.name} did not start: {why[:300] or line!r}")
            host.namespaces = {
                ns for kind in ("mnt", "pid_for_children") if (ns := namespace(host.pid, kind))
            }
        now = processes()
        for host, _ in spawned:
            host.init = next((pid for pid, (_, ppid) in now.items() if ppid == host.pid), 0)
        return [host for host, _ in spawned]

    def close(self) -> None:
        """Stop every host, and wait until their processes and mounts are gone."""
        hosts = list(self.hosts.values())
        self.hosts.clear()
        for host in hosts:
            host.kill()
        for host in hosts:
            host.reap()
        left = wait_gone({ns for host in hosts for ns in host.namespaces})
        assert not left, f"processes of stopped hosts still running: {left}"


def summary(stats: dict[str, list[pytest.TestReport]]) -> str:
    """How the multi-host suite went: "ran on sshfs ... (6 passed)", "skipped (why)" or
    "not selected"; with what starting a host and running a command took."""
    line = suite_summary(
        SESSION.get("outcome", "not selected"), stats, "test_hosts.py", "test_shared_caches.py"
    )
    timing = [f"{what} {SESSION[what]}" for what in ("host start", "command") if what in SESSION]
    return f"{line}; {', '.join(timing)}" if timing and line.startswith("ran") else line


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """The session's sshd, exporting a temp directory; skips where hosts cannot be made."""

    def skip(reason: str) -> NoReturn:
        SESSION["outcome"] = f"skipped ({reason})"
        pytest.skip(reason)

    problem = missing_prerequisites()
    if problem:
        skip(problem)
    directory = tmp_path_factory.mktemp("sshd")
    export = tmp_path_factory.mktemp("export")
    try:
        server = SshServer(directory, export)
    except Unavailable as exc:
        skip(str(exc))
    try:
        probe = Cluster(server, tmp_path_factory.mktemp("probe"))
        try:
            probe.host("probe").run("true")
        except (Unavailable, AssertionError) as exc:
            skip(f"a host could not mount the share: {str(exc).strip()[:300]}")
        finally:
            probe.close()
        sshfs = _version(r"SSHFS version (\S+)", probe.sshfs, "--version")
        openssh = _version(r"OpenSSH_([^\s,]+)", tool("ssh") or "ssh", "-V")
        SESSION["outcome"] = f"ran on sshfs {sshfs} over OpenSSH {openssh}"
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(ssh_server: SshServer, tmp_path: Path, wheelhouse: Path) -> Iterator[Cluster]:
    """A fresh cluster for one test: its own exported directory, hosts started on use."""
    made = Cluster(ssh_server, tmp_path, wheelhouse)
    try:
        yield made
    finally:
        made.close()
