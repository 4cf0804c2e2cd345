"""A small loop-mounted reflink filesystem for the tests that need uv's clone mode to be
real (tests/test_reflink.py), as it is on macOS APFS, btrfs and XFS: installed files get
their own inodes and st_nlink 1, so no hard-link count protects a cache entry.

`reflink_dir` makes one per session: a sparse image in pytest's temp dir, formatted XFS
with reflinks (btrfs when XFS cannot be made or mounted), mounted with `mount -o loop`.
It needs root, util-linux and xfsprogs or btrfs-progs (`make test` installs xfsprogs when
it can, see scripts/test_prereqs.sh); without them the tests skip and say what was missing.

Nothing stays mounted: the mount is made in a mount namespace private to this pytest
process (and its children, uv and uvrefs, which see it), so the kernel unmounts it and
frees the loop device when the session ends, even when it is killed. Where no private
namespace can be made, the session mounts in the host's namespace: the finalizer unmounts
lazily and detaches the loop device, and the next session unmounts what a killed one left
(mounts named after a process that no longer runs, under pytest's temp root, only).

UVREFS_TEST_REFLINK_FS=btrfs (or xfs) tries that filesystem only.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.conftest import UV, World, make_world, suite_summary

IMAGE_BYTES = 300 * 2**20  # sparse; mkfs.xfs refuses less than 300 MB
MARK = "uvrefs-reflink-"  # mount point and image names: MARK + pid of the owning pytest
SBIN = os.pathsep.join(["/usr/sbin", "/sbin"])

# What the session did: "outcome" for the line at the end of the run (tests/conftest.py),
# "fs" the filesystem mounted.
SESSION: dict[str, str] = {}


def summary(stats: dict[str, list[pytest.TestReport]]) -> str:
    """How the reflink suite went: "ran on xfs (3 passed, 1 xfailed)", "skipped (why)" or
    "not selected"."""
    return suite_summary(SESSION.get("outcome", "not selected"), stats, "test_reflink.py")


def tool(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + SBIN)


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=60
    )


def _why(done: subprocess.CompletedProcess[str]) -> str:
    """The tool's message, without its hints ("dmesg(1) may have more information")."""
    lines = [
        line.strip()
        for line in (done.stderr or done.stdout).splitlines()
        if line.strip() and "dmesg(1)" not in line
    ]
    return " ".join(lines)[:200] or f"exit {done.returncode}"


def _private_mount_namespace() -> bool:
    """Move this process into a mount namespace of its own whose mounts do not propagate to
    the host's: whatever it mounts disappears with it (and its children)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS (EINVAL with threads sharing fs)
            return False
    except (OSError, AttributeError):
        return False
    # This process is in its own namespace now; unless propagation stops, its mounts would
    # still appear in the host's (then the finalizer unmounts, as without a namespace).
    return _run(tool("mount") or "mount", "--make-rprivate", "/").returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def clean_stale_mounts(temp_root: Path) -> list[str]:
    """Lazily unmount the reflink mounts of killed sessions, detach their loop devices and
    delete their images: only those under pytest's temp root, named after a pytest process
    that no longer runs. Returns what it unmounted."""
    cleaned: list[str] = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return cleaned
    root = str(temp_root.resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        match = re.fullmatch(MARK + r"(\d+)", os.path.basename(point))
        if not match or not point.startswith(root + os.sep) or _pid_alive(int(match[1])):
            continue
        if _run(tool("umount") or "umount", "-l", point).returncode == 0:
            cleaned.append(point)
            Path(point + ".img").unlink(missing_ok=True)
    # Loop devices whose image belonged to a dead session (autoclear usually did this).
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            image = backing.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        match = re.fullmatch(MARK + r"(\d+)\.img", os.path.basename(image))
        if match and image.startswith(root + os.sep) and not _pid_alive(int(match[1])):
            _run(tool("losetup") or "losetup", "-d", f"/dev/{backing.parts[3]}")
    # Images of dead sessions (sparse, but tens of MiB written each), before pytest's own
    # retention gets to them.
    for image_path in temp_root.glob(f"*/*/{MARK}*.img"):
        match = re.fullmatch(MARK + r"(\d+)\.img", image_path.name)
        if match and not _pid_alive(int(match[1])):
            image_path.unlink(missing_ok=True)
    return cleaned


FICLONE = 0x40049409


def reflink_works(directory: Path) -> str | None:
    """None when a reflink copy succeeds in `directory`, else why not."""
    src, dst = directory / ".probe-src", directory / ".probe-dst"
    try:
        src.write_bytes(b"x" * 65536)
        with open(src, "rb") as s, open(dst, "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        return None
    except OSError as exc:
        return f"FICLONE refused: {errno.errorcode.get(exc.errno or 0, exc.errno)}"
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_SHARED = 0x2000


def first_extent(path: Path) -> tuple[int, int] | None:
    """(physical offset, flags) of a file's first extent, from FIEMAP; None when it has
    none or the filesystem cannot tell."""
    header = struct.pack("=QQIIII", 0, 2**64 - 1, FIEMAP_FLAG_SYNC, 0, 1, 0)
    buf = bytearray(header + bytes(56))
    try:
        with open(path, "rb") as f:
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
    except OSError:
        return None
    if struct.unpack_from("=I", buf, 20)[0] == 0:  # fm_mapped_extents
        return None
    _logical, physical, _length = struct.unpack_from("=QQQ", buf, 32)
    (flags,) = struct.unpack_from("=I", buf, 32 + 40)
    return physical, flags


def shares_blocks(a: Path, b: Path) -> bool | None:
    """Whether two files are clones of each other (their first extent is the same shared
    block); None when the filesystem cannot tell (btrfs stores small files inline)."""
    ea, eb = first_extent(a), first_extent(b)
    if ea is None or eb is None or (ea[1] | eb[1]) & FIEMAP_EXTENT_DATA_INLINE:
        return None
    return ea[0] == eb[0] and bool(ea[1] & eb[1] & FIEMAP_EXTENT_SHARED)


def _make_and_mount(image: Path, mnt: Path) -> tuple[str, list[str]]:
    """Format `image` and mount it on `mnt`: the filesystem's name, or "" and why not."""
    wanted = os.environ.get("UVREFS_TEST_REFLINK_FS", "").strip()
    kinds = [k for k in ("xfs", "btrfs") if wanted in ("", k)]
    mkfs_args = {"xfs": ["-q", "-f", "-m", "reflink=1"], "btrfs": ["-q", "-f"]}
    package = {"xfs": "xfsprogs", "btrfs": "btrfs-progs"}
    problems: list[str] = []
    for kind in kinds:
        mkfs = tool(f"mkfs.{kind}")
        if mkfs is None:
            problems.append(f"mkfs.{kind} not found ({package[kind]} not installed)")
            continue
        done = _run(mkfs, *mkfs_args[kind], image)
        if done.returncode != 0:
            problems.append(f"mkfs.{kind} failed: {_why(done)}")
            continue
        done = _run(tool("mount") or "mount", "-t", kind, "-o", "loop", image, mnt)
        if done.returncode != 0:
            why = _why(done).replace(str(mnt), "<mount point>")
            problems.append(f"mount -o loop ({kind}) refused: {why}")
            continue
        refused = reflink_works(mnt)
        if refused is None:
            return kind, problems
        problems.append(f"{kind} mounted but {refused}")
        _unmount(mnt, image)
    return "", problems


def _unmount(mnt: Path, image: Path) -> None:
    """Lazy unmount (busy files cannot keep it mounted), then detach the loop device if the
    kernel did not already (mount -o loop sets autoclear)."""
    _run(tool("umount") or "umount", "-l", mnt)
    losetup = tool("losetup")
    if losetup is None:
        return
    for line in _run(losetup, "-j", image).stdout.splitlines():
        _run(losetup, "-d", line.split(":", 1)[0])


@pytest.fixture(scope="session")
def reflink_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory on a loop-mounted reflink filesystem (XFS, else btrfs), for the session."""

    def skip(reason: str) -> NoReturn:
        SESSION["outcome"] = f"skipped ({reason})"
        pytest.skip(reason)

    if not sys.platform.startswith("linux"):
        skip(f"loop-mounted reflink filesystems are made on Linux only, not {sys.platform}")
    if os.geteuid() != 0:
        skip(f"mounting a loop image needs root (running as uid {os.geteuid()})")
    missing = [t for t in ("mount", "umount", "losetup") if tool(t) is None]
    if missing:
        skip(f"{', '.join(missing)} not found (util-linux)")
    if not Path("/dev/loop-control").exists() and not list(Path("/dev").glob("loop[0-9]*")):
        skip("no loop devices (/dev/loop-control, /dev/loop*)")

    base = tmp_path_factory.mktemp("reflink")
    clean_stale_mounts(tmp_path_factory.getbasetemp().parent)
    _private_mount_namespace()
    image, mnt = base / f"{MARK}{os.getpid()}.img", base / f"{MARK}{os.getpid()}"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(IMAGE_BYTES)
    kind, problems = _make_and_mount(image, mnt)
    if not kind:
        image.unlink(missing_ok=True)
        skip("no reflink filesystem: " + "; ".join(problems))
    SESSION.update(outcome=f"ran on {kind}", fs=kind)
    try:
        yield mnt
    finally:
        _unmount(mnt, image)  # private or not: free the loop device and the image now
        image.unlink(missing_ok=True)


@pytest.fixture
def reflink_world(
    reflink_dir: Path, wheelhouse: Path, request: pytest.FixtureRequest
) -> Iterator[World]:
    """A `World` (cache, refs store, home, envs) in a fresh directory on the reflink mount."""
    assert UV, "uv is a dev dependency: pip install -e '.[dev]'"
    root = Path(
        tempfile.mkdtemp(prefix=re.sub(r"\W", "_", request.node.name)[:40], dir=reflink_dir)
    )
    try:
        yield make_world(root, wheelhouse, UV)
    finally:
        shutil.rmtree(root, ignore_errors=True)
