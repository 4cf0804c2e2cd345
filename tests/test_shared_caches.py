"""One uv cache and refs store shared by several hosts (tests/hosts.py: hosts are namespaces
of this machine, the share is sshfs over loopback): an env on the shared filesystem is
judged by any host that mounts it, a host's local envs by its lease, containers of one
image are hosts of their own. Symlink mode throughout: a wrongly freed entry breaks an env,
which `intact` sees (every file of every installed RECORD exists)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import World, collect_json, freed
from tests.hosts import Cluster, Host

SYMLINK = {"UV_LINK_MODE": "symlink"}
DAY = 86400.0

# Prints, as JSON, the files listed in the RECORDs of the env argv[1] that do not exist,
# and how many files were listed (a half-freed package can still import as an empty
# namespace package: only every file being there proves the env whole).
INTACT = """
import json, sys
from pathlib import Path
env = Path(sys.argv[1])
listed, missing = 0, []
for site in env.glob("lib/python*/site-packages"):
    for record in site.glob("*.dist-info/RECORD"):
        for line in record.read_text().splitlines():
            name = line.rsplit(",", 2)[0]
            if name and not name.startswith(".."):
                listed += 1
                if not (site / name).exists():
                    missing.append(name)
print(json.dumps([listed, missing]))
"""


def intact(host: Host, env: Path) -> bool:
    listed, missing = json.loads(host.python(INTACT, env))
    assert listed, f"{env} has no installed RECORD on {host.name}"
    return not missing


def venv(cluster: Cluster, host: Host, env: Path, *reqs: str) -> Path:
    """A venv at `env` made on `host` with `reqs` installed by `uvrefs install` (tracked),
    offline, in symlink mode."""
    host.uv("venv", "-q", "--python", sys.executable, env, env=SYMLINK)
    host.uvrefs("install", "-q", "-p", env, *cluster.offline(), *reqs, env=SYMLINK)
    return env


def collect(host: Host, *args: str) -> dict[str, Any]:
    """`collect --json --min-age 0 ARGS` on `host` (no grace: an entry kept must be kept
    for the reason the test is about, not because a deleted env may have moved)."""
    done = host.uvrefs("collect", "--json", "--min-age", "0", *args)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def assert_kept(result: dict[str, Any], host: Host, env: Path, entry: str = "alpha 1.0") -> None:
    """A collect's `result` freed no `entry`, and every file of `env` on `host` is there."""
    assert entry not in freed(result), result
    assert intact(host, env)


def kept_why(result: dict[str, Any], name: str) -> list[str]:
    """Why each entry of `name` ("alpha 1.0") was kept."""
    return [
        str(d.get("reason", ""))
        for d in result.get("kept", []) + result.get("held", [])
        if f"{d['dist']} {d['version']}" == name
    ]


def age_leases(cluster: Cluster, seconds: float = 2 * 3600) -> None:
    """Every lease in the shared store `seconds` older, by the file server's clock (as if
    every host had been away that long): what `--host-lease` is judged by."""
    then = time.time() - seconds
    for lease in store_files(cluster, "hosts"):
        os.utime(lease, (then, then))


def store_files(cluster: Cluster, *kinds: str) -> list[Path]:
    """Files of the shared store (server side) under `kinds` (refs, envs, hosts)."""
    stores = list((cluster.export / "state").glob("caches/*"))
    return [
        f for store in stores for kind in kinds for f in store.glob(f"{kind}/**/*") if f.is_file()
    ]


def test_an_env_made_on_one_host_and_deleted_on_another_is_freed_by_a_third(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.host("A"), cluster.host("B"), cluster.host("C")
    dead = venv(cluster, a, cluster.shared / "proj/.venv", "alpha==1.0")
    live = venv(cluster, a, cluster.shared / "live/.venv", "alpha==2.0", "beta==1.0")
    b.run("rm", "-rf", dead)
    result = collect(c)
    assert freed(result) == {"alpha 1.0"}, result
    for host in (a, b, c):
        assert intact(host, live), host.name
    # sshfs shows every file with one link: what is freed is an upper bound, and says so
    assert "hides link counts" in str(result["bytes_upper_bound"])
    # An env on the share made by B, then installed into by C: the env's record is C's now
    # (one per path), B's referrers are judged where B's lease says its share is mounted.
    again = venv(cluster, b, cluster.shared / "again/.venv", "alpha==3.0")
    c.uvrefs("install", "-q", "-p", again, *cluster.offline(), "alpha==3.0", env=SYMLINK)
    assert not freed(collect(a))
    assert intact(c, again) and intact(a, live)
    a.run("rm", "-rf", again)
    assert freed(collect(b)) == {"alpha 3.0"}
    assert intact(b, live)
    # the records of a freed shared env went with it: the store is bounded
    records = [f for f in store_files(cluster, "envs") if f.suffix == ".json"]
    envs_left = {json.loads(f.read_text()).get("path") for f in records}
    assert str(dead) not in envs_left


def test_a_hosts_local_env_is_kept_until_its_lease_is_over(cluster: Cluster) -> None:
    a, c = cluster.host("A"), cluster.host("C")
    local = venv(cluster, a, a.home / "venv", "alpha==1.0")
    shared = venv(cluster, c, cluster.shared / "live/.venv", "beta==1.0")
    theirs = venv(cluster, a, cluster.shared / "theirs/.venv", "alpha==2.0")  # only A's
    result = collect(c)
    assert not freed(result)
    assert any("another host" in why for why in kept_why(result, "alpha 1.0")), result
    age_leases(cluster)
    # A's lease is 2 h old: with --host-lease 1h, A is gone and so are its local envs
    preview = collect(c, "--dry-run", "--host-lease", "1h")
    assert freed(preview) == {"alpha 1.0"}, preview
    why = json.loads(c.uvrefs("why", "alpha", "--json", "--host-lease", "1h").stdout)
    assert "not seen since" in json.dumps(why), why
    result = collect(c, "--host-lease", "1h")
    assert freed(result) == {"alpha 1.0"}, result
    assert intact(c, shared) and intact(c, theirs)  # A's env on the share is judged here
    assert not intact(a, local)  # A's env in symlink mode: what a lease can cost
    # A's env on the share is still recorded, and a root: not even --untracked frees it
    assert not freed(collect(c, "--untracked", "--host-lease", "1h"))
    assert intact(c, theirs)
    # A's records, referrers and lease were dropped: nothing of it is left in the store
    records = [f.read_text() for f in store_files(cluster, "envs") if f.suffix == ".json"]
    assert not any(str(local) in text for text in records), records
    leases = [f.read_text() for f in store_files(cluster, "hosts")]
    assert not any(a.machine_id in text for text in leases), leases
    refs = [json.loads(f.read_text()) for f in store_files(cluster, "refs")]
    assert all(r["env"] != str(local) for ref in refs for r in ref["referrers"]), refs


def test_a_host_that_comes_back_renews_its_lease(cluster: Cluster) -> None:
    a, c = cluster.host("A"), cluster.host("C")
    local = venv(cluster, a, a.home / "venv", "alpha==1.0")
    age_leases(cluster)
    assert freed(collect(c, "--dry-run", "--host-lease", "1h")) == {"alpha 1.0"}
    # A is back: any tracked command or collect renews its lease; its env is a root again.
    # (Leases are renewed at most once an hour: A's clock runs two hours ahead, as it
    # would two hours later; the lease's time is the file server's, so the skew does not
    # make it look newer.)
    a.set_clock_offset(2 * 3600)
    a.uvrefs("collect", "--dry-run")
    result = collect(c, "--host-lease", "1h")
    assert not freed(result), result
    assert intact(a, local)


def test_a_host_whose_local_disk_is_gone_keeps_its_envs(cluster: Cluster) -> None:
    a, c = cluster.host("A"), cluster.host("C")
    venv(cluster, a, a.home / "venv", "alpha==1.0")
    venv(cluster, a, cluster.shared / "live/.venv", "beta==1.0")
    a.unmount_local()  # the disk is gone, not the env: it may come back with the disk
    for host in (a, c):
        result = collect(host)
        assert not freed(result), (host.name, result)
        assert kept_why(result, "alpha 1.0"), (host.name, result)
    assert intact(c, cluster.shared / "live/.venv")


def test_clocks_a_day_apart_free_nothing_live(cluster: Cluster) -> None:
    """Hosts whose clocks are a day behind and a day ahead record and collect with a
    --host-lease shorter than the skew: every lease's time is the file server's, so no
    host looks a day old, and nothing a living env uses goes."""
    behind, ahead, c = cluster.host("behind"), cluster.host("ahead"), cluster.host("C")
    behind.set_clock_offset(-DAY)
    ahead.set_clock_offset(DAY)
    envs = {
        behind: venv(cluster, behind, behind.home / "venv", "alpha==1.0"),
        ahead: venv(cluster, ahead, ahead.home / "venv", "alpha==2.0"),
        c: venv(cluster, c, cluster.shared / "live/.venv", "beta==1.0"),
    }
    dead = venv(cluster, ahead, cluster.shared / "dead/.venv", "alpha==3.0")
    behind.run("rm", "-rf", dead)
    for host in (behind, ahead, c):
        result = collect(host, "--host-lease", "12h")
        assert freed(result) <= {"alpha 3.0"}, (host.name, result)
    assert "alpha 3.0" not in json.dumps(
        json.loads(c.uvrefs("status", "--json").stdout).get("dead", [])
    )
    for host, env in envs.items():
        assert intact(host, env), host.name


def test_fifty_containers_on_one_cache(cluster: Cluster) -> None:
    """CI containers of one image (one machine id) on one cache volume: each is a host of
    its own (machine id and host name), installs into a job env on its local disk and is
    gone. Once their leases are over the store holds nothing of them, and the cache holds
    what the living envs use."""
    started = time.monotonic()
    node = cluster.host("node")
    live = venv(cluster, node, cluster.shared / "live/.venv", "beta==1.0")
    containers = cluster.containers(50, node=node)
    for i, container in enumerate(containers):
        version = ("1.0", "2.0", "3.0")[i % 3]
        venv(cluster, container, container.home / "job", f"alpha=={version}")
    hosts = {json.loads(f.read_text())["host"] for f in store_files(cluster, "hosts")}
    assert len(hosts) >= 50, hosts  # each container its own lease
    # a job frees its own dead at its end: its envs are its own to judge
    first = containers[0]
    scratch = venv(cluster, first, first.home / "scratch", "big==1.0")
    first.run("rm", "-rf", scratch)
    assert freed(collect(first)) == {"big 1.0"}
    stored = store_files(cluster, "refs", "envs", "hosts")
    stored_bytes = sum(f.stat().st_size for f in stored)
    for container in containers:
        container.stop()
    kept = collect(node)
    assert not freed(kept)  # their leases are fresh: their envs may be alive
    age_leases(cluster)
    result = collect(node, "--host-lease", "1h")
    assert freed(result) == {"alpha 1.0", "alpha 2.0", "alpha 3.0"}, result
    assert intact(node, live)
    left = store_files(cluster, "refs", "envs", "hosts")
    assert len(left) <= 4, left  # the live env's record and refs, the node's lease
    archives = list((cluster.export / "cache/archive-v0").iterdir())
    assert len(archives) == 1  # beta 1.0, all the living env uses
    print(
        f"[shared caches] 50 containers: store {len(stored)} files "
        f"({stored_bytes / 1024:.0f} KiB) after their jobs, "
        f"{len(left)} ({sum(f.stat().st_size for f in left) / 1024:.1f} KiB) once their leases "
        f"were over; cache {len(archives)} archive left; {time.monotonic() - started:.0f} s"
    )


def hosts_json(host: Host, *args: str) -> dict[str, dict[str, Any]]:
    doc = json.loads(host.uvrefs("hosts", "--json", *args).stdout)
    return {h["host"]: h for h in doc["hosts"]}


def test_hosts_says_what_each_keeps_and_forgets_one(cluster: Cluster) -> None:
    a, b, c = cluster.host("A"), cluster.host("B"), cluster.host("C")
    local = venv(cluster, a, a.home / "venv", "alpha==1.0", "beta==1.0")
    venv(cluster, a, cluster.shared / "theirs/.venv", "alpha==2.0")
    venv(cluster, b, b.home / "venv", "beta==1.0")
    venv(cluster, c, c.home / "venv", "alpha==3.0")
    listed = hosts_json(c)
    ids = {h["name"]: h["host"] for h in listed.values()}
    a_id, b_id, c_id = ids["A"], ids["B"], ids["C"]
    assert listed[c_id]["this_host"] and listed[c_id]["state"] == "this host"
    assert listed[a_id]["state"] == listed[b_id]["state"] == "alive"
    assert (listed[a_id]["envs"], listed[a_id]["shared_envs"]) == (2, 1)
    # alpha 1.0 is A's alone (beta is B's too; alpha 2.0's env is on the share: judged here)
    assert listed[a_id]["sole_entries"] == 1 and listed[a_id]["sole_bytes"] > 0
    assert listed[b_id]["sole_entries"] == 0
    age_leases(cluster)
    expired = hosts_json(c, "--host-lease", "1h")
    assert expired[a_id]["state"] == expired[b_id]["state"] == "expired"
    text = c.uvrefs("hosts", "--host-lease", "1h").stdout
    assert "expired" in text and "2 expired" in text, text
    # forget: refused for this host, for a name that is nobody's; A by its host name
    refused = c.uvrefs("hosts", "forget", c_id, check=False)
    assert refused.returncode != 0 and "this host" in refused.stderr
    assert c.uvrefs("hosts", "forget", "nobody", check=False).returncode != 0
    done = c.uvrefs("hosts", "forget", "A")
    assert "forgot host" in done.stdout and a_id in done.stdout
    # its lease and local env's records are gone; its env on the share stays, judged here
    after = hosts_json(c)[a_id]
    assert (after["state"], after["envs"], after["shared_envs"]) == ("no lease", 1, 1)
    result = collect(c)  # no --host-lease: forgotten, A's local env is gone
    assert freed(result) == {"alpha 1.0"}, result
    assert intact(c, cluster.shared / "theirs/.venv") and intact(b, b.home / "venv")
    assert not intact(a, local)


def test_doctor_says_what_a_shared_cache_cannot_do(cluster: Cluster) -> None:
    a, b = cluster.host("A"), cluster.host("B")
    venv(cluster, a, cluster.shared / "live/.venv", "alpha==1.0")
    venv(cluster, b, b.home / "venv", "beta==1.0")
    checks = {
        c["name"]: c for c in json.loads(b.uvrefs("doctor", "--json", check=False).stdout)["checks"]
    }
    shared = checks["shared cache"]
    assert shared["status"] == "ok" and "sshfs" in shared["detail"], shared
    assert "2 hosts renew a lease" in shared["detail"], shared
    locks = checks["locks across hosts"]
    assert locks["status"] == "warn" and "fuse.sshfs keeps locks local" in locks["detail"], locks
    link = checks["link mode"]
    assert link["status"] == "warn" and "hides link counts" in link["detail"], link


def test_a_job_in_its_own_mount_namespace_is_held_not_live(world: World) -> None:
    """A CI job in a mount namespace of its own, its env on a disk only it mounts: a
    collect outside cannot judge the env, so what it uses is kept, and called what it is,
    held (uncertain), never live."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    job = world.root / "job"
    job.mkdir()
    script = (
        f"mount -t tmpfs job {job} && {world.uv_bin} venv -q --python {sys.executable} "
        f"{job}/.venv && {sys.executable} -m uvrefs install -q -p {job}/.venv "
        f"{' '.join(world.offline())} alpha==1.0"
    )
    world.run("unshare", "-m", "--propagation", "private", "sh", "-c", script, extra_env=SYMLINK)
    result = collect_json(world)
    (kept,) = [d for d in result["kept"] if d["dist"] == "alpha"]
    assert kept["state"] == "held", kept
    assert "another mount namespace" in kept["reason"], kept
    status = json.loads(world.uvrefs("status", "--json").stdout)
    assert status["live"]["entries"] == 0 and status["held"]["entries"] == 1, status


def test_container_jobs_on_a_restored_cache_free_the_previous_jobs(cluster: Cluster) -> None:
    """CI jobs, each in a container of its own (a new host name, a new mount namespace) on
    the cache a previous job saved: the cache is this job's copy, so every other job is
    over, and `collect --host-lease 0` at its end frees what only earlier jobs used."""
    node = cluster.host("node")
    (first,) = cluster.containers(1, node=node, prefix="job1-")
    venv(cluster, first, first.home / "proj/.venv", "alpha==1.0", "beta==1.0")
    first.uvrefs("collect", "--host-lease", "0")
    first.stop()
    (second,) = cluster.containers(1, node=node, prefix="job2-")
    env = venv(cluster, second, second.home / "proj/.venv", "alpha==2.0", "beta==1.0")
    result = collect(second, "--host-lease", "0")
    assert freed(result) == {"alpha 1.0"}, result
    assert intact(second, env)
    leases = [json.loads(f.read_text())["name"] for f in store_files(cluster, "hosts")]
    assert leases == [second.hostname], leases  # the store keeps only the living job's


# ---------------------------------------------------------------- without hosts


def fake_mounts(monkeypatch: pytest.MonkeyPatch, *table: tuple[str, ...]) -> None:
    """This process's mount table, as (point, root, fstype, source, options) rows."""
    from uvrefs import envs

    rows = [envs.Mount(*row) for row in table]
    monkeypatch.setattr(envs, "mounts", lambda *, fresh=False: rows)
    monkeypatch.setattr(envs.os.path, "realpath", lambda p, **kw: str(p))


def test_where_a_shared_place_is_on_each_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from uvrefs.hosts import SharedPlace, local_path, network_mounts, place_on, shared_place

    fake_mounts(
        monkeypatch,
        ("/", "/", "ext4", "/dev/sda1", "rw"),
        ("/home", "/", "nfs4", "fs1:/export/home", "rw,vers=4.2"),
        ("/home/u/scratch", "/", "tmpfs", "tmpfs", "rw"),  # a local disk below the share
    )
    place = shared_place("/home/u/proj/.venv")
    assert place == SharedPlace("nfs", "fs1", "/export/home/u/proj/.venv")
    assert shared_place("/home/u/scratch/.venv") is None
    assert shared_place("/opt/venv") is None
    # another host mounts the export above it elsewhere: the same env, its own path
    from uvrefs import envs

    theirs = [envs.Mount("/", "/", "ext4", "/dev/vda", "rw")]
    theirs.append(envs.Mount("/net/fs1", "/", "nfs", "fs1:/export", "rw"))
    assert local_path(place, theirs) == "/net/fs1/home/u/proj/.venv"
    below = [envs.Mount("/p", "/", "nfs", "fs1:/export/home/u/proj", "rw")]
    assert local_path(place, below) == "/p/.venv"
    other = [envs.Mount("/home", "/", "nfs", "fs2:/export/home", "rw")]
    assert local_path(place, other) is None  # another server
    sshfs = [envs.Mount("/x", "/", "fuse.sshfs", "fs1:/export/home", "rw")]
    assert local_path(place, sshfs) is None  # another kind of filesystem
    # a lease lists the network mounts and the local ones below them
    listed = network_mounts()
    assert [m[0] for m in listed] == ["/home", "/home/u/scratch"]
    assert place_on([tuple(m) for m in listed], "/home/u/proj/.venv") == place  # type: ignore[misc]
    assert place_on([tuple(m) for m in listed], "/home/u/scratch/.venv") is None  # type: ignore[misc]
    assert place_on([], "/home/u/proj/.venv") is None


def test_which_mounts_keep_locks_and_link_counts_local(monkeypatch: pytest.MonkeyPatch) -> None:
    from uvrefs.hosts import hides_link_counts, local_locks

    fake_mounts(
        monkeypatch,
        ("/", "/", "ext4", "/dev/sda1", "rw"),
        ("/nfs", "/", "nfs4", "fs:/e", "rw,vers=4.2,local_lock=none"),
        ("/nolock", "/", "nfs", "fs:/e", "rw,nolock"),
        ("/flocal", "/", "nfs", "fs:/e", "rw,local_lock=flock"),
        ("/sshfs", "/", "fuse.sshfs", "u@h:/e", "rw"),
        ("/lustre", "/", "lustre", "mgs@tcp:/fs", "rw,localflock"),
        ("/lustre2", "/", "lustre", "mgs@tcp:/fs", "rw,flock"),
    )
    assert local_locks("/nfs/cache") is None and local_locks("/lustre2/c") is None
    assert local_locks("/var/cache") is None
    for path in ("/nolock/c", "/flocal/c", "/sshfs/c", "/lustre/c"):
        assert local_locks(path), path
    assert hides_link_counts("/sshfs/cache") == "fuse.sshfs"
    assert hides_link_counts("/nfs/cache") is None


def test_leases_and_the_stores_clock_need_no_proc(tmp_path: Path) -> None:
    """A lease is written, and the store's clock read, through the directory's descriptor
    (`dir_fd`), not a `/proc/self/fd/N/...` path: where /proc is not mounted (a minimal
    container, a chroot) the host still renews its lease and leases can still be judged.
    Through /proc, renewing wrote nothing there and the clock read 0 (no host judged
    gone, ever)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to hide /proc in a mount namespace")
    store = tmp_path / "store"
    store.mkdir()
    code = (
        "import os, sys; from uvrefs import hosts; s = sys.argv[1]; "
        "assert not os.path.exists('/proc/self'); "
        "hosts.renew(s, 'h1'); print(len(os.listdir(os.path.join(s, 'hosts'))), "
        "hosts.store_clock(s) > 0)"
    )
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs none /proc && exec "$0" -c "$1" "$2"',
            sys.executable,
            code,
            str(store),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        check=False,
    )
    if "mount" in done.stderr and done.returncode:
        pytest.skip(f"cannot mount in a new namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "True"]
    from uvrefs.hosts import host_key

    assert [p.name for p in (store / "hosts").iterdir()] == [f"{host_key('h1')}.json"]
