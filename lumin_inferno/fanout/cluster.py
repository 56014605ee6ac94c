"""Getting a Dask client: an existing scheduler by address, or a local cluster of worker processes."""

from __future__ import annotations

from typing import Any, Optional

from ..exceptions import ConfigurationError

__all__ = ["connect"]


def connect(scheduler: Optional[str] = None, n_workers: int = 2, threads_per_worker: int = 1,
            timeout: float = 20.0) -> Any:
    """A ``dask.distributed.Client``: to the scheduler at ``scheduler`` (e.g. ``"tcp://host:8786"``, or the
    ``scheduler_address`` of a dask-jobqueue ``HTCondorCluster``/``SLURMCluster``), else to a new ``LocalCluster``
    of ``n_workers`` processes with ``threads_per_worker`` threads each. Close it (``client.close()``, and
    ``client.cluster.close()`` for a local one) or use it as a context manager.

    Raises :class:`~lumin_inferno.exceptions.ConfigurationError` naming the address when no scheduler answers
    within ``timeout`` seconds, and when dask.distributed is not installed."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ConfigurationError("fan-out needs dask.distributed: pip install 'dask[distributed]'") from err
    if scheduler:
        try:
            return Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise ConfigurationError(f"no Dask scheduler answered at {scheduler!r} within {timeout:.0f} s ({err})") from err
    if n_workers < 1 or threads_per_worker < 1:
        raise ConfigurationError(f"need ≥ 1 worker and ≥ 1 thread per worker, got {n_workers} and {threads_per_worker}")
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster)
