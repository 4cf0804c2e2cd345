"""The one door to files outside uvrefs's own package: every file or directory uvrefs opens
in the cache, the refs store, an environment or the system goes through here.

Anything there may have been planted by someone else, so a read takes a regular file only,
never through a symlink, never waiting (a FIFO), and never more than a stated size; a
write goes to a temp file created exclusively under an unpredictable name, renamed into
place; a directory is opened without following a symlink. `tests/test_files.py` fails
on any other open in `uvrefs/`. Light on purpose (`os` only): the install path uses it."""

from __future__ import annotations

import errno
import os
import stat

# Never wait on a FIFO, never follow a symlink in the last component.
NO_WAIT = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
SMALL = 1 << 20  # bytes: a config file, a pyvenv.cfg, a METADATA or RECORD


def read_file(path: str, limit: int, *, dir_fd: int | None = None) -> bytes:
    """A file's bytes: a regular file, opened without blocking and without following a
    symlink. Raises FileNotFoundError if it is missing, and OSError if it is a link, not
    a regular file, or holds more than `limit` bytes."""
    return read_file_stat(path, limit, dir_fd=dir_fd)[0]


def read_file_stat(
    path: str, limit: int, *, dir_fd: int | None = None
) -> tuple[bytes, os.stat_result]:
    """`read_file`, with the file's status as it was opened (to tell later whether it was
    replaced since)."""
    try:
        fd = os.open(path, os.O_RDONLY | NO_WAIT, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OSError(errno.ELOOP, "a symbolic link, not followed", path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while size <= limit and st.st_size <= limit:
            chunk = os.read(fd, max(st.st_size + 1 - size, 1 << 16))
            if not chunk:
                return b"".join(chunks), st
            chunks.append(chunk)
            size += len(chunk)
        raise OSError(errno.EFBIG, f"larger than {_size(limit)}", path)
    finally:
        os.close(fd)


def read_utf8(path: str, limit: int = SMALL, errors: str = "replace") -> str:
    """`read_file` decoded as UTF-8."""
    return read_file(path, limit).decode("utf-8", errors)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"


def write_atomic(
    path: str, data: str | bytes, *, durable: bool = False, dir_fd: int | None = None
) -> None:
    """Write beside the target, then rename over it: readers see old or new, never half.
    The temp file (`.<name>.<random>.tmp`) is created exclusively and never through a
    symlink, and removed if anything fails; the rename replaces whatever is at `path`
    (a planted symlink included) without following it. `durable`: the file and then its
    directory are synced, so the write survives a power cut. With `dir_fd`, `path` is a
    name in that directory (opened without following links by the caller)."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.urandom(8).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
    try:
        try:
            raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if dir_fd is None:
            os.replace(tmp, path)
        else:
            os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if durable and dir_fd is not None:
        os.fsync(dir_fd)
    elif durable:
        sync_dir(directory or ".")


def sync_dir(path: str) -> None:
    """Make a rename in `path` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_exclusive(directory: str, prefix: str, *, dir_fd: int | None = None) -> tuple[int, str]:
    """A new empty file under an unpredictable name in `directory` (relative to `dir_fd`,
    if given), created exclusively and never through a symlink: (descriptor, path). The
    caller closes and removes it."""
    for _ in range(16):
        path = os.path.join(directory, f"{prefix}{os.urandom(8).hex()}")
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(path, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        return fd, path
    raise OSError(errno.EEXIST, "no free temp name", directory)


def open_dir(path: str, *, dir_fd: int | None = None) -> int:
    """A descriptor of the directory `path` (relative to `dir_fd` if given), never through
    a symlink in its last component."""
    return os.open(path, DIRECTORY, dir_fd=dir_fd)


def open_dir_below(root_fd: int, parts: tuple[str, ...]) -> int:
    """A descriptor of the directory `parts` below `root_fd`, opened one component at a
    time with O_NOFOLLOW on the root's filesystem: a symlink or mount planted anywhere on
    the way fails (ELOOP, ENOTDIR, EXDEV) instead of leading elsewhere."""
    device = os.fstat(root_fd).st_dev
    fd = os.dup(root_fd)
    try:
        for part in parts:
            if part in ("", ".", "..") or os.sep in part:
                raise OSError(errno.EINVAL, "not a plain path component", part)
            child = os.open(part, DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if os.fstat(fd).st_dev != device:
                raise OSError(errno.EXDEV, "another filesystem is mounted here", part)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_lock(path: str, *, create: bool, writable: bool = True) -> int:
    """A lock file to `flock`: a regular file, never through a symlink, never waiting;
    created (mode 0666, as uv makes its `.lock`) when `create`. Raises OSError otherwise."""
    mode = (os.O_RDWR if writable else os.O_RDONLY) | NO_WAIT | (os.O_CREAT if create else 0)
    fd = os.open(path, mode, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def open_append(path: str) -> int:
    """A log to append lines to: created if missing, a regular file, never through a
    symlink, never waiting on a FIFO."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NO_WAIT, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def mark(path: str) -> None:
    """Write one byte into an existing empty regular file (a `mktemp` marker another
    process made), never through a link, never waiting; best effort."""
    try:
        fd = os.open(path, os.O_WRONLY | NO_WAIT)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.write(fd, b"1")
    except OSError:
        pass
    finally:
        os.close(fd)


def tail(path: str, size: int = 8192) -> tuple[float, bytes] | None:
    """The last `size` bytes of a regular file and its mtime, or None if it cannot be read
    that way (missing, a link, a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | NO_WAIT)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        os.lseek(fd, max(0, st.st_size - size), os.SEEK_SET)
        return st.st_mtime, os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)
