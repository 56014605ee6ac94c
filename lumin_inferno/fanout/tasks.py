"""Running independent tasks (picklable callables) here or on a Dask cluster, with retries, one progress bar and
failures collected into one :class:`~lumin_inferno.exceptions.FanOutError` that names every failed task."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Sequence

from ..exceptions import FanOutError

__all__ = ["run_tasks", "progress_advance"]


def run_tasks(tasks: Sequence[Callable[..., Any]], client: Any = None, retries: int = 2, progress: bool = True,
              done: int = 0, describe: Callable[[Any], str] = repr,
              on_result: Optional[Callable[[Any, Any], None]] = None, key: str = "lumin-inferno-task",
              args: Sequence[Any] = ()) -> List[Any]:
    """Call every task (``task(*args)``) and return the results in task order.

    Without ``client`` the tasks run here, one after the other; with a ``dask.distributed`` client on its workers,
    each retried ``retries`` times if it raises or its worker dies. ``on_result(task, result)`` is called here as
    each task finishes (e.g. to write it to disk, so that a rerun resumes); ``done`` tasks finished earlier count
    towards the progress bar. Raises :class:`FanOutError` naming each failed task (``describe(task)``) and its error
    once the others have finished. ``args`` are the same for every task: pass large shared inputs here, scattered
    to the workers once (``client.scatter(x, broadcast=True)``), instead of inside each task."""
    advance = progress_advance(progress, len(tasks) + done, done)
    results: List[Any] = [None] * len(tasks)
    failed: List[str] = []
    if client is None:
        errors: List[BaseException] = []
        for i, t in enumerate(tasks):
            try:
                results[i] = t(*args)
            except Exception as err:
                msg = str(err) if isinstance(err, FanOutError) else f"{describe(t)} failed: {type(err).__name__}: {err}"
                failed.append(msg)
                errors.append(err)
            else:
                if on_result is not None:
                    on_result(t, results[i])
            advance(1)
        if len(failed) == 1:
            raise FanOutError(failed[0]) from errors[0]
        if failed:
            raise FanOutError(f"{len(failed)} of {len(tasks)} task(s) failed; finished work is kept: " + "; ".join(failed))
        return results
    from distributed import as_completed

    stamp = time.time_ns()
    futures = {client.submit(t, *args, key=f"{key}-{i}-{stamp}", retries=retries, pure=False): i
               for i, t in enumerate(tasks)}
    for future in as_completed(futures):
        i = futures[future]
        try:
            results[i] = future.result()
        except Exception as err:
            failed.append(f"{describe(tasks[i])}: {type(err).__name__}: {err}")
        else:
            if on_result is not None:
                on_result(tasks[i], results[i])
        advance(1)
    if failed:
        hint = " (is lumin_inferno installed on the workers?)" if any("ModuleNotFound" in f for f in failed) else ""
        raise FanOutError(f"{len(failed)} of {len(tasks)} task(s) failed after {retries} retries{hint}; finished "
                          "work is kept: " + "; ".join(failed))
    return results


def progress_advance(progress: bool, total: int, done: int = 0) -> Callable[[int], None]:
    """One fastprogress bar over a fan-out (LUMIN's progress idiom), starting at ``done`` of ``total``; returns
    ``advance(n)``."""
    if not progress or total == 0:
        return lambda n: None
    from fastprogress.fastprogress import progress_bar

    pb = progress_bar(range(total), display=True, auto_update=False)  # driven by update(n), not by iteration
    state = {"n": done}
    if done:
        pb.update(done)

    def advance(n: int) -> None:
        state["n"] += n
        pb.update(state["n"])

    return advance
