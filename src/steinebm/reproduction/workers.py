"""Worker processes for the reproductions' parallel work (training runs, judging image sets),
which stop when the command stops.

A plain ``ProcessPoolExecutor`` keeps training after its command is gone: stopped by SIGTERM
(``timeout``, a batch scheduler) or killed, the parent leaves its workers running as orphans;
interrupted, it waits for the runs in progress to finish, hours on a CPU, and a worker that saw
the Ctrl-C itself goes on to the next queued run. Here the parent alone answers Ctrl-C and
SIGTERM, by stopping every worker at once, and a worker whose parent has gone (killed) exits as
soon as it notices. Stopping a worker loses nothing saved: a run's checkpoint and a measure's
file are written whole or not at all (:func:`steinebm.engine.checkpoint.atomic_write`), and a second call
of the command resumes from them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

__all__ = ["map_in_workers"]

T = TypeVar("T")
R = TypeVar("R")


def map_in_workers(
    fn: Callable[[T], R],
    items: Sequence[T],
    jobs: int,
    done: Callable[[int, R], None] | None = None,
) -> list[R]:
    """``[fn(item) for item in items]``, computed ``jobs`` at a time in worker processes (spawned,
    one torch thread each); ``done(k, result)`` is called for each result in order as it
    arrives. ``fn`` must be importable (a module-level function) and ``items`` picklable. Keep
    each result small (a few kilobytes pickled: a run's name, a row of numbers; more is better
    read from the files the work wrote): a pipe takes a small message in one write, but a worker
    stopped halfway through sending a large one would leave the executor waiting for the rest.

    If anything stops it (an exception from ``fn``, which is re-raised here; Ctrl-C; SIGTERM
    turned into an exception by the caller), every worker is terminated before it returns.

    >>> map_in_workers(abs, [-3, 2, -1], jobs=2)
    [3, 2, 1]
    """
    if not items:
        return []
    pool = ProcessPoolExecutor(
        max_workers=max(1, min(jobs, len(items))),
        mp_context=multiprocessing.get_context("spawn"),  # fork would copy this process's threads and torch state
        initializer=_start_worker,
    )
    results: list[R] = []
    try:
        for k, res in enumerate(pool.map(fn, items)):
            if done is not None:
                done(k, res)
            results.append(res)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()
    return results


def _stop(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's workers, queued work cancelled. Without this the executor's own
    shutdown (and the interpreter's exit) would wait for the work in progress to finish."""
    # the executor names its workers only in a private attribute; shutdown() clears it
    workers: list[Any] = list((getattr(pool, "_processes", None) or {}).values())
    for p in workers:
        p.terminate()
    # the workers are gone, so this returns at once; it closes the queues they shared
    pool.shutdown(wait=True, cancel_futures=True)


def _start_worker() -> None:
    import torch

    # A terminal's Ctrl-C reaches the whole process group. The worker ignores it and the parent,
    # which also receives it, stops every worker: otherwise the worker's task fails with
    # KeyboardInterrupt and the worker takes the next queued one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # the workers share the cores
    # tqdm would give its first bar a multiprocessing lock, a semaphore that a terminated worker
    # leaves behind (the resource tracker warns of it at exit); a worker's bars need only a
    # thread lock
    from tqdm.std import tqdm

    tqdm.set_lock(threading.RLock())
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    """Exit this process as soon as its parent has ended, so that a killed command leaves no
    worker behind (the parent's sentinel, a pipe the system closes when it dies, is watched)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)
