"""The chunks of a fit as Dask tasks, on worker processes of this machine or on a cluster.

``cube3d fit ... --workers N`` starts a :class:`distributed.LocalCluster` of N worker
processes; ``--scheduler ADDRESS`` joins a running Dask scheduler (one started by
``dask-jobqueue`` on SLURM, say).  Every chunk the journal lacks becomes one task,
:func:`cube3d.pipeline.fit_journal_chunk`: the worker reads the cube, the plan and the fit
settings from the journal directory, fits the chunk and writes its file there
(atomically), so results land in the journal as they finish and a rerun resumes exactly
as it does after a serial run.  Nothing else travels between processes: the tasks are
(journal path, chunk index) and return None.  Each worker process compiles the fit once
(JAX keeps it for the next chunk).  A worker that dies has its chunk run again elsewhere
by Dask (after ``distributed.scheduler.allowed-failures`` deaths, 3 by default, the chunk
is given up: one line); a chunk's file depends only on (cube, plan, chunk, settings), so
the maps are those of a serial run.

The journal and the cube must be at the same paths for the workers (a shared filesystem
on a cluster).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from typing import Callable, Iterable, Optional

import numpy as np

from .compile_cache import CACHE_ENV, active_cache_dir
from .devices import THREADS_ENV, usable_cores
from .errors import InputError

__all__ = ["check_cluster_request", "dask_client", "fit_chunks_on_cluster", "SCHEDULER_TIMEOUT"]

#: seconds to wait for a ``--scheduler`` to answer
SCHEDULER_TIMEOUT = 10.0


def check_cluster_request(workers, scheduler) -> None:
    """Reject, before any file is read, a bad ``workers`` / ``scheduler`` pair.

    Parameters
    ----------
    workers : int
        Worker processes of a local Dask cluster; 0 for none (serial, or ``scheduler``).
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://host:8786``).

    Raises
    ------
    InputError
        ``workers`` not an integer >= 0, an empty ``scheduler``, or both given.
    """
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise InputError(f"--workers: must be a positive integer (worker processes), got {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise InputError(f"--scheduler: must be the address of a Dask scheduler (tcp://host:port), got {scheduler!r}")
    if workers and scheduler is not None:
        raise InputError("--workers and --scheduler: give one (--workers starts a cluster on this machine, "
                         "--scheduler uses a running one)")


@contextlib.contextmanager
def dask_client(workers: int = 0, scheduler: Optional[str] = None, log: Optional[Callable[[str], None]] = None):
    """A :class:`distributed.Client` of a new local cluster of ``workers`` processes, or of the
    scheduler at ``scheduler``; closed (and the local cluster shut down) on exit.

    Raises
    ------
    InputError
        One line naming ``--scheduler`` and the address when no scheduler answers there
        within :data:`SCHEDULER_TIMEOUT` seconds.
    """
    from distributed import Client, LocalCluster

    say = log or (lambda msg: None)
    check_cluster_request(workers, scheduler)
    if scheduler is not None:
        _check_address(scheduler)
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT, set_as_default=False)
        except Exception as exc:  # OSError, TimeoutError, ValueError (malformed address), ...
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"--scheduler {scheduler}: no Dask scheduler answers ({reason[:200]})") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            say(f"Dask scheduler {scheduler}: {n} worker{'' if n == 1 else 's'} now (more may join)")
            yield client
        finally:
            client.close()
        return
    # each worker fits its chunks on its share of the cores (its own threads, XLA's)
    share = max(1, usable_cores() // int(workers))
    env = {THREADS_ENV: str(share)}
    cache = active_cache_dir()  # the workers load and store compiled programs where this process does
    env[CACHE_ENV] = str(cache) if cache is not None else "off"
    if share == 1:
        env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR, env=env)
    try:
        client = Client(cluster, set_as_default=False)
        try:
            say(f"started a Dask LocalCluster of {workers} worker processes, {share} thread{'' if share == 1 else 's'} "
                "each")
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _check_address(scheduler: str) -> None:
    """A malformed TCP address is refused here: a Client given one would linger (and complain) until exit."""
    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, location = parse_address(scheduler)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except ValueError as exc:
        raise InputError(f"--scheduler {scheduler}: not the address of a Dask scheduler ({exc}); "
                         "e.g. tcp://host:8786") from None


def fit_chunks_on_cluster(client, task, journal, chunks: Iterable[int], sizes: Iterable[int], *,
                          keep_spectra: bool, progress: Optional[Callable[[int], None]] = None) -> None:
    """Fit ``chunks`` of the journal in ``journal`` as Dask tasks, as they finish.

    Parameters
    ----------
    client : distributed.Client
    task : callable
        ``task(journal, k, keep_spectra=...)`` fits chunk ``k`` and writes it into the
        journal (:func:`cube3d.pipeline.fit_journal_chunk`); importable by the workers.
    journal : str or Path
        A journal with its plan (:meth:`cube3d.journal.Journal.create`), at a path the
        workers reach.
    chunks, sizes : iterables of int
        The chunk indices to fit and their numbers of spectra.
    keep_spectra : bool
        Journal the spectra, models and weights too.
    progress : callable, optional
        ``progress(n)`` with the spectra of each chunk as it finishes.

    Raises
    ------
    InputError
        A chunk's error (the first, one line: a cube changed since the plan, a journal
        that cannot be written), or a chunk whose workers kept dying.
    """
    from distributed import KilledWorker, as_completed

    journal = os.fspath(os.path.abspath(journal))
    tag = hashlib.sha256(journal.encode()).hexdigest()[:8] + "-" + uuid.uuid4().hex[:8]
    size = dict(zip(chunks, sizes))
    futures = {client.submit(task, journal, int(k), keep_spectra=keep_spectra, pure=False,
                             key=f"cube3d-chunk-{k:06d}-{tag}"): k for k in size}
    try:
        for future in as_completed(futures, loop=client.loop):
            k = futures[future]
            try:
                future.result()
            except InputError as exc:
                raise InputError(f"chunk {k} on a Dask worker: {exc}") from None
            except OSError as exc:
                raise InputError(f"chunk {k} on a Dask worker: {exc.strerror or exc} ({exc.filename or journal}); "
                                 f"the workers must reach the cube and {journal} at the same paths; the chunks "
                                 "journalled so far are kept: run the same command again to resume") from None
            except ImportError as exc:
                raise InputError(f"chunk {k}: the Dask workers cannot import cube3d ({exc}): install it where "
                                 "they run") from None
            except KilledWorker:
                raise InputError(f"chunk {k}: the Dask workers fitting it kept dying (out of memory? try a smaller "
                                 f"--chunk-spectra); the finished chunks are kept in {journal}: run the same "
                                 "command again to resume") from None
            if progress is not None:
                progress(int(size[k]))
    finally:
        client.cancel([f for f in futures if not f.done()])

