"""Run a function over items in worker processes with a progress bar and errors that name the item."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tqdm import tqdm


class WorkerError(RuntimeError):
    """A worker failed on one item (its exception is chained) or died."""


def _leave_ctrl_c_to_the_parent() -> None:
    """Worker initializer: ignore SIGINT, so Ctrl-C ends the run once, in the main process, without a traceback
    from every worker (the pool then finishes the items in flight and stops)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], num_processes: int, desc: str,
                 names: Sequence[str] | None = None, disable_progress_bar: bool = False) -> list[Any]:
    """``[fn(i) for i in items]``, in ``num_processes`` spawned workers (in-process when 1).

    ``names`` label items in error messages (default: ``str(item)``). Results keep the order of ``items``.
    """
    names = list(names) if names is not None else [str(i) for i in items]
    results: list[Any] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=disable_progress_bar, unit="case")
    if num_processes <= 1 or len(items) <= 1:
        for k, item in enumerate(items):
            try:
                results[k] = fn(item)
            except Exception as e:
                bar.close()
                raise WorkerError(f"{desc} failed on {names[k]}: {e}") from e
            bar.update()
        bar.close()
        return results
    ctx = multiprocessing.get_context("spawn")
    # at most num_processes items in flight, so a dying worker can be pinned to the few items it may have held
    pending = iter(range(len(items)))
    with ProcessPoolExecutor(max_workers=num_processes, mp_context=ctx,
                             initializer=_leave_ctrl_c_to_the_parent) as pool:
        futures = {}

        def submit_next() -> None:
            k = next(pending, None)
            if k is not None:
                futures[pool.submit(fn, items[k])] = k

        try:
            for _ in range(num_processes):
                submit_next()
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    k = futures[fut]
                    try:
                        results[k] = fut.result()
                    except BrokenProcessPool:
                        raise
                    except Exception as e:
                        raise WorkerError(f"{desc} failed on {names[k]}: {e}") from e
                    del futures[fut]
                    bar.update()
                    submit_next()
        except BrokenProcessPool as e:  # from a result or from submitting to the broken pool
            held = sorted(names[j] for j in futures.values())
            raise WorkerError(
                f"{desc}: a worker process died while processing {' or '.join(held)} (often: out of "
                f"memory). Re-run with fewer processes (-np 1) to see the error or lower memory use.") from e
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()
    return results
