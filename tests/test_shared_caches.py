"""One uv cache and refs store shared by several hosts (tests/hosts.py: hosts are namespaces
of this machine, the share is sshfs over loopback): an env on the shared filesystem is
judged by any host that mounts it, a host's local envs by its lease, containers of one
image are hosts of their own. Symlink mode throughout: a wrongly freed entry breaks an env,
which `intact` sees (every file of every installed RECORD exists)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

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


def freed(result: dict[str, Any]) -> set[str]:
    return {f"{d['dist']} {d['version']}" for d in result["freed"]}


def kept_why(result: dict[str, Any], name: str) -> list[str]:
    """Why each entry of `name` ("alpha 1.0") was kept."""
    return [
        str(d.get("reason", ""))
        for d in result.get("kept", []) + result.get("held", [])
        if f"{d['dist']} {d['version']}" == name
    ]


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
    time.sleep(3)
    # A's lease is 3 s old: with --host-lease 2s, A is gone and so are its local envs
    preview = collect(c, "--dry-run", "--host-lease", "2s")
    assert freed(preview) == {"alpha 1.0"}, preview
    why = json.loads(c.uvrefs("why", "alpha", "--json", "--host-lease", "2s").stdout)
    assert "not seen since" in json.dumps(why), why
    result = collect(c, "--host-lease", "2s")
    assert freed(result) == {"alpha 1.0"}, result
    assert intact(c, shared) and intact(c, theirs)  # A's env on the share is judged here
    assert not intact(a, local)  # A's env in symlink mode: what a lease can cost
    # A's env on the share is still recorded, and a root: not even --untracked frees it
    assert not freed(collect(c, "--untracked", "--host-lease", "2s"))
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
    time.sleep(3)
    assert freed(collect(c, "--dry-run", "--host-lease", "2s")) == {"alpha 1.0"}
    # A is back: any tracked command or collect renews its lease; its env is a root again.
    # (Leases are renewed at most once an hour: A's clock runs two hours ahead, as it
    # would two hours later; the lease's time is the file server's, so the skew does not
    # make it look newer.)
    a.set_clock_offset(2 * 3600)
    a.uvrefs("collect", "--dry-run")
    result = collect(c, "--host-lease", "2s")
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
    time.sleep(3)
    result = collect(node, "--host-lease", "2s")
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
    time.sleep(3)
    expired = hosts_json(c, "--host-lease", "2s")
    assert expired[a_id]["state"] == expired[b_id]["state"] == "expired"
    text = c.uvrefs("hosts", "--host-lease", "2s").stdout
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
