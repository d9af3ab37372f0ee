"""Executors: run one stage function over many samples, locally or on Ray, same stage code.

A stage function takes one sample and returns its result; it reports bad input as a value, never by
raising, so one bad video never stops a run (video2dataset's rule). An exception that escapes anyway
is caught here and turned into an ``Failed`` value carrying a one-line reason.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True)
class Failed:
    """An unexpected error in a stage, as a value."""

    reason: str


@dataclass(frozen=True)
class Done(Generic[S, R]):
    index: int
    sample: S
    result: R | Failed


def one_line(exc: BaseException) -> str:
    """A one-line reason for an exception: its type and first message line."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _call(fn: Callable[[S], R], sample: S) -> R | Failed:
    try:
        return fn(sample)
    except Exception as e:  # noqa: BLE001 — any failure of one sample becomes its result
        if os.environ.get("EMOKIT_DEBUG"):
            traceback.print_exc()
        return Failed(one_line(e))


def _die_with_parent(parent: int, pdeathsig: bool) -> None:
    """Worker initializer: exit when the parent dies (SIGKILL, the OOM killer), never linger.

    Linux: the kernel sends SIGKILL on the parent's death (PR_SET_PDEATHSIG) — only when the pool
    was started from the parent's main thread, since the signal follows the creating thread. Everywhere:
    a watchdog thread polls the parent pid, for what prctl misses."""
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before this worker got here
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="emokit-orphan-watch").start()


def _watch_parent(parent: int, every_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def _pool(workers: int, ctx: Any) -> ProcessPoolExecutor:
    """A process pool whose workers exit when this process dies."""
    main = threading.current_thread() is threading.main_thread()
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_die_with_parent, initargs=(os.getpid(), main)
    )


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_local(
    fn: Callable[[S], R], samples: Iterable[S], workers: int | None = None
) -> Generator[Done[S, R], None, None]:
    """Yield results as they complete. ``workers <= 1`` runs in-process (easy to debug and profile).

    At most ``2 × workers`` samples are in flight, so memory stays bounded for long input lists.
    A worker that dies (a native crash, the OOM killer) takes the pool down with every sample in
    flight; the pool is rebuilt and those samples are retried one at a time in a process of their
    own, so only the sample that kills its process again becomes a ``Failed``.
    """
    workers = default_workers() if workers is None else workers
    items = list(enumerate(samples))
    if workers <= 1 or len(items) <= 1:
        for i, s in items:
            yield Done(i, s, _call(fn, s))
        return
    # spawn, not fork: MediaPipe and torch keep threads and native state that a forked child
    # inherits half-initialised (MediaPipe aborts when a graph is created after such a fork).
    ctx = multiprocessing.get_context("spawn")
    todo: Iterator[tuple[int, S]] = iter(items)
    pending: dict[Any, tuple[int, S]] = {}
    pool = _pool(workers, ctx)
    try:
        while True:
            broken = False
            while len(pending) < 2 * workers and (nxt := next(todo, None)) is not None:
                try:
                    pending[pool.submit(_call, fn, nxt[1])] = nxt
                except BrokenProcessPool:  # a worker died while we were away: not this sample
                    todo, broken = itertools.chain([nxt], todo), True
                    break
            if not broken:
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = any(isinstance(f.exception(), BrokenProcessPool) for f in finished)
                if not broken:
                    for fut in finished:
                        i, s = pending.pop(fut)
                        yield Done(i, s, fut.result())
                    continue
            for fut in [f for f in pending if f.done() and f.exception() is None]:
                i, s = pending.pop(fut)  # results that made it out before the pool broke
                yield Done(i, s, fut.result())
            suspects = sorted(pending.values(), key=lambda x: x[0])
            pending.clear()
            pool.shutdown(wait=True, cancel_futures=True)
            for i, s in suspects:
                yield Done(i, s, _alone(fn, s, ctx))
            pool = _pool(workers, ctx)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _alone(fn: Callable[[S], R], sample: S, ctx) -> R | Failed:
    """``fn(sample)`` in a fresh process of its own; a Failed if that process dies."""
    with _pool(1, ctx) as pool:
        try:
            return pool.submit(_call, fn, sample).result()
        except BrokenProcessPool:
            return Failed("the worker process died on this sample (native crash or out of memory)")


def run_ray(
    fn: Callable[[S], R], samples: Iterable[S], workers: int | None = None
) -> Generator[Done[S, R], None, None]:
    """Same contract as :func:`run_local`, on a Ray cluster (``ray.init()`` joins one if configured).

    Like the local pool: at most ``2 × workers`` tasks in flight (``workers`` default: the
    cluster's CPUs), samples pulled from ``samples`` only as slots free up, and a task whose worker
    process dies is retried once on its own (Ray's ``max_retries``) before it becomes a ``Failed``;
    the run goes on.
    """
    try:
        import ray
        from ray.exceptions import WorkerCrashedError
    except ImportError:
        raise RuntimeError("--engine ray needs Ray: pip install 'emokit[ray]'") from None
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    remote: Any = ray.remote(max_retries=1)(_call)
    todo = iter(enumerate(samples))
    refs: dict[Any, tuple[int, S]] = {}
    fn_ref = ray.put(fn)  # shipped once, not once per task
    while True:
        while len(refs) < 2 * workers and (nxt := next(todo, None)) is not None:
            refs[remote.remote(fn_ref, nxt[1])] = nxt
        if not refs:
            return
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            i, s = refs.pop(ref)
            try:
                result = ray.get(ref)
            except WorkerCrashedError:
                result = Failed("the worker process died on this sample (native crash or out of memory)")
            yield Done(i, s, result)


ENGINES = {"local": run_local, "ray": run_ray}


def run(
    fn: Callable[[S], R], samples: Iterable[S], workers: int | None = None, engine: str = "local"
) -> Generator[Done[S, R], None, None]:
    """Run ``fn`` over ``samples`` with the named engine; results arrive in completion order."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {sorted(ENGINES)}")
    return ENGINES[engine](fn, samples, workers)
