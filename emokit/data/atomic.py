"""Atomic file writes: a killed run leaves either the old file or the new one, never a partial one."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it over ``final`` only if the block succeeds."""
    final = Path(final)
    with naming(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(final)
        prefix = f".{final.name}.{os.getpid()}."  # the writer's pid: a rerun can tell a dead one's
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TMP_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with naming(final):  # disk full, read-only, ... while writing: the error names the file
            yield tmp_path
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, final)
            fsync_dir(final.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries: after a power cut the rename is there, not only the data."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on this platform (Windows): the rename is all there is
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raise an OSError without a file name (pyarrow's, a full disk's) as one naming ``path``,
    so the user sees which output failed in one line instead of a traceback."""
    try:
        yield
    except OSError as e:
        if e.filename is not None and not str(e.filename).endswith(TMP_SUFFIX):
            raise
        reason = e.strerror or " ".join(str(e).split()) or type(e).__name__
        raise OSError(e.errno, f"cannot write: {reason}", str(path)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_dead_temps(final: Path) -> int:
    """Delete the temps of ``final`` whose writer process is gone (a killed generate left a
    hidden partial mp4 next to its output); a live writer's temp is left alone. Returns how many."""
    n = 0
    for p in final.parent.glob(f".{glob.escape(final.name)}.*{TMP_SUFFIX}"):
        pid = p.name[len(final.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or not _alive(int(pid)):
            p.unlink(missing_ok=True)
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temp files a killed run left behind in ``folder``; returns how many."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            n += 1
    return n
