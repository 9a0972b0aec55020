"""Safe file writes: every file the project writes (reports, CSV, indexes, checkpoints, vector
files) goes through :func:`atomic_path` or :func:`atomic_open`, so an interrupted or failing
write never leaves a partial file where the real one belongs.

How a write goes (the same for both helpers):

1. Temporary files that earlier writes of the same target left behind when their process was
   killed (``kill -9``, power loss) are removed: ``.NAME.pqx-tmp-PID-…`` whose PID no longer
   runs, and the ``.NAME.tmpPID`` files of earlier versions.
2. A temporary file with an unpredictable name (PID plus 16 random hex digits) is created in the
   target's own folder with ``O_CREAT | O_EXCL``: creation fails rather than open anything that
   already exists there, so a symlink planted at a guessed name cannot redirect the write. Its
   mode is what ``open()`` would give (0o666 less the umask), not ``mkstemp``'s 0o600.
3. The caller writes it; the data are flushed and ``fsync``-ed.
4. It is renamed onto the target (``os.replace``, atomic on POSIX and Windows within one folder;
   a symlink at the target is replaced, not followed), then the folder is ``fsync``-ed so the
   rename itself survives a crash. On any error the temporary file is deleted.

The one place in the project that does not write this way is an append-only event log
(``explorer.events.EventLog``, a JSON-lines file grown line by line while training runs): a
rename would rewrite the whole log at every event. Its reader skips a torn last line instead.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import IO, Iterator

TMP_MARK = ".pqx-tmp-"


def temp_pattern(name: str) -> re.Pattern:
    """Regex matching the temporary names of writes to a file called ``name``, group 1 the PID:
    ``.NAME.pqx-tmp-PID-HEX`` (this module) and ``.NAME.tmpPID`` (earlier versions)."""
    n = re.escape(name)
    return re.compile(rf"^\.{n}(?:{re.escape(TMP_MARK)}(\d+)-[0-9a-f]+|\.tmp(\d+))$")


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's live process, or a platform without signal 0
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writes to ``path`` left in its folder; return them.

    A temporary file of a process that still runs (another write of the same target under way)
    is kept. Entries are removed with ``unlink``, which deletes a symlink, never its target.
    """
    path = Path(path)
    pattern = temp_pattern(path.name)
    removed = []
    try:
        entries = list(os.scandir(path.parent if str(path.parent) else "."))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1) or m.group(2))
        if _pid_running(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _create_temp(path: Path) -> tuple[int, Path]:
    """(fd, path) of a new, empty temporary file beside ``path``, created exclusively."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:  # 2^-64 odds, or someone planted the name: draw another
            continue
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        return fd, tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")  # pragma: no cover


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a folder; its rename is durable once it returns
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(fd: int, tmp: Path, path: Path) -> None:
    """fsync and close ``fd`` (the temporary file's), rename ``tmp`` onto ``path``, fsync the folder."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _atomic(path: str | os.PathLike, mode: str, **kwargs) -> Iterator[tuple[IO, Path]]:
    """(file object, temporary path) of a new temporary file beside ``path``; committed onto
    ``path`` (flush, fsync, rename, folder fsync) when the block ends, deleted on error."""
    path = Path(path)
    remove_stale_temps(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode, closefd=False, **kwargs) as fh:
            yield fh, tmp
            fh.flush()
        fd, ours = -1, fd
        _commit(ours, tmp, path)  # fsync through our fd reaches what a writer wrote by name: one inode
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the path of a new empty temporary file beside ``path`` for a writer that takes a
    file name and writes it in place (``faiss.write_index``); on success it is fsync-ed and
    renamed onto ``path``, on error deleted. See the module docstring for the steps; prefer
    :func:`atomic_open` for writers that take a file object."""
    with _atomic(path, "wb") as (_, tmp):
        yield tmp


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Yield a file object (``mode`` "w" text, or "wb" binary; ``kwargs`` go to ``open``) on a new
    temporary file beside ``path``, created exclusively; on success it is flushed, fsync-ed and
    renamed onto ``path``, on error deleted (see the module docstring)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode={mode!r}; use 'w' or 'wb'")
    with _atomic(path, mode, **kwargs) as (fh, _):
        yield fh
