"""One run per dataset: an advisory lock on ``DATASET/.lock``.

Every run removes the temp files killed runs left behind; without a lock, a second run on the same
dataset would remove the first run's in-flight temps and abort it. The lock is ``flock``: the
kernel drops it when its holder dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not serialised there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
F = TypeVar("F", bound=Callable[..., Any])


class DatasetLockedError(RuntimeError):
    """Another emokit run holds the dataset."""


@contextlib.contextmanager
def dataset_lock(dataset: str | Path) -> Iterator[None]:
    """Hold ``dataset``'s lock for the block; DatasetLockedError at once if another run has it."""
    path = Path(dataset) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise DatasetLockedError(
                    f"{dataset} is in use by another emokit run (pid {holder}); wait for it to finish"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def locks_dataset(arg: str = "dataset", create: bool = False) -> Callable[[F], F]:
    """Decorator: run the function holding the lock of the dataset passed as ``arg``.

    ``create``: make the dataset folder first (ingest); otherwise a missing folder is left to the
    function to report."""

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            dataset = Path(sig.bind(*args, **kwargs).arguments[arg])
            if create:
                if dataset.exists() and not dataset.is_dir():
                    raise NotADirectoryError(errno.ENOTDIR, "the dataset path is not a folder", str(dataset))
                dataset.mkdir(parents=True, exist_ok=True)
            if not dataset.is_dir():
                return fn(*args, **kwargs)
            with dataset_lock(dataset):
                return fn(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return wrap
