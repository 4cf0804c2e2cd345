"""The trash: where a sweep puts what it frees, out of uv's sight, under uv's lock, to
delete it after the lock is released. Each collector's own directory in the cache root,
made exclusively and locked while in use; a trash a killed collector left is emptied by
the next one. Also the crash tests' hook, which every deletion step calls."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from pathlib import Path

from uvrefs.cache import SizeTally, delete_at
from uvrefs.envs import mount_table
from uvrefs.files import open_dir

TRASH_PREFIX = ".uvrefs-trash"  # each collector's own: `.uvrefs-trash-<random>`
TRASH_NAME = re.compile(r"\.uvrefs-trash(-[A-Za-z0-9_]+)?")
DELETE_THREADS = 4  # on 2 cores: 1 thread 5.0 s, 2 threads 3.0 s, 4 threads 2.3 s (100k files)


class CrashHook:
    """For the crash tests: with `UVREFS_TEST_KILL_AT=N` set, the collector SIGKILLs itself
    at its N-th deletion step, so every step can be proven safe to die at."""

    steps = 0

    @classmethod
    def step(cls) -> None:
        kill_at = os.environ.get("UVREFS_TEST_KILL_AT")
        if kill_at:
            cls.steps += 1
            if cls.steps == int(kill_at):
                import signal

                os.kill(os.getpid(), signal.SIGKILL)


def os_error_text(exc: OSError) -> str:
    return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc.strerror or exc)


class Moved:
    """An entry taken out of uv's sight: its pointers unlinked, its trees renamed into the
    trash (names there, still to be deleted), and what has been measured freed so far."""

    def __init__(
        self,
        trees: list[str],
        tally: SizeTally,
        failure: OSError | None = None,
    ) -> None:
        self.trees = trees  # names in the trash: trees, and the pointer files renamed there
        self.tally = tally
        self.failure = failure  # why deleting it from the trash stopped (`delete_moved`)


def mounts_under(root: Path) -> set[str]:
    """The mount points inside the cache root (resolved, as the cache root is): the only
    ones `mounts_inside` can find below a path in the cache whose parents were opened
    without following links; an empty set spares every entry the check."""
    top = os.path.realpath(root)
    return {p for p in mount_table(fresh=True) or set() if p == top or p.startswith(top + "/")}


def mounts_inside(path: Path, table: set[str] | None = None) -> str | None:
    """A mount point at or below `path` (the mount table knows bind mounts that share a
    filesystem, which `st_dev` cannot tell)."""
    table = (mount_table(fresh=True) or set()) if table is None else table
    top = os.path.realpath(path)
    return next((p for p in sorted(table) if p == top or p.startswith(top + "/")), None)


def delete_moved(trash: Trash, moved: list[Moved]) -> None:
    """Delete the trees in the trash, measuring each (`Moved.tally`; what stopped it in
    `Moved.failure`), several at a time: unlinking is the cost of a sweep, and the kernel
    overlaps it across threads (see docs/benchmarks.md). Order no longer matters here:
    nothing in the trash is reachable by uv."""
    from concurrent.futures import ThreadPoolExecutor

    def delete(item: Moved) -> None:
        try:
            for tree in item.trees:
                delete_at(trash.fd, tree, item.tally, trash.device)
                CrashHook.step()
        except OSError as exc:
            item.failure = exc

    if sum(len(m.trees) for m in moved) < 2:
        for m in moved:
            delete(m)
        return
    with ThreadPoolExecutor(max_workers=DELETE_THREADS) as pool:
        list(pool.map(delete, moved))


class Trash:
    """This collector's own trash in the cache root: made exclusively under a random name
    (mkdtemp: mode 0700, fails rather than reuse a path someone planted), opened without
    following links, checked to be ours and on the cache's filesystem, and locked while in
    use so no other collector empties it. Trees are renamed into it by descriptor, so
    renaming or replacing the name meanwhile changes nothing."""

    def __init__(self, root: Path, root_fd: int) -> None:
        self.root_fd = root_fd
        self.device = os.fstat(root_fd).st_dev
        import tempfile  # ~15 ms to import: only a sweep that frees something pays it

        path = tempfile.mkdtemp(prefix=TRASH_PREFIX + "-", dir=root)
        self.name = os.path.basename(path)
        self.fd = open_dir(self.name, dir_fd=root_fd)
        st = os.fstat(self.fd)
        if st.st_dev != self.device or st.st_uid != os.geteuid():
            os.close(self.fd)
            raise OSError(errno.EPERM, "the trash is not ours", self.name)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.count = 0

    def take(self, parent_fd: int, name: str) -> str:
        """Rename `name` (in `parent_fd`) into the trash; its name there."""
        self.count += 1
        moved = f"{self.count}-{name}"
        os.rename(name, moved, src_dir_fd=parent_fd, dst_dir_fd=self.fd)
        return moved

    def close(self) -> None:
        os.close(self.fd)

    def remove(self) -> list[str]:
        """Remove the (emptied) trash; what is left in it (undeletable) is reported."""
        try:
            left = os.listdir(self.fd)
            if left:
                left_over = f"{len(left)} undeletable tree(s) left in {self.name}"
                return [left_over + "; the next collect retries"]
            st = os.fstat(self.fd)
            named = os.stat(self.name, dir_fd=self.root_fd, follow_symlinks=False)
            if (named.st_dev, named.st_ino) == (st.st_dev, st.st_ino):
                os.rmdir(self.name, dir_fd=self.root_fd)
        except OSError as exc:
            return [f"cannot remove the trash {self.name}: {exc.strerror}"]
        finally:
            os.close(self.fd)
        return []


def empty_leftover_trash(root: Path, root_fd: int) -> list[str]:
    """Finish deletions killed collectors left (`.uvrefs-trash*` in the cache root).
    A planted link under that name is unlinked, never followed; a trash another
    collector still holds is left alone; what cannot be deleted is reported and the
    collect goes on."""
    warnings = []
    device = os.fstat(root_fd).st_dev
    for name in os.listdir(root_fd):
        if not TRASH_NAME.fullmatch(name):
            continue
        try:
            st = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=root_fd)
                continue
            mounted = mounts_inside(root / name)
            if mounted:
                warnings.append(f"leftover trash {name} not emptied: {mounted} is mounted in it")
                continue
            fd = open_dir(name, dir_fd=root_fd)
        except FileNotFoundError:
            continue  # its collector finished it meanwhile
        except OSError as exc:
            warnings.append(f"cannot empty the leftover trash {name}: {exc.strerror}")
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another collector's, in use
            tally = SizeTally()
            for child in os.listdir(fd):
                delete_at(fd, child, tally, device)
            os.rmdir(name, dir_fd=root_fd)
        except FileNotFoundError:
            pass  # its collector emptied and removed it before releasing it to us
        except OSError as exc:
            warnings.append(f"cannot empty the leftover trash {name}: {os_error_text(exc)}")
        finally:
            os.close(fd)
    return warnings
