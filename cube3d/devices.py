"""A batch of spectra split over the JAX devices of this process (GPUs, or CPU devices).

Every spectrum's fit is independent of the others, so a batch is cut into equal slices
along its leading axis, one per device, and each device runs the same compiled fit on
its slice (:func:`jax.shard_map`: no communication between devices; the templates and
settings are copied to every device).  With one device nothing changes.

Several CPU devices can be made for tests or to compare with a GPU::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 cube3d fit ...

(they share the process's CPU threads, so this is no faster than one device on a CPU).
"""

from __future__ import annotations

import functools
import os

import jax
from jax.sharding import Mesh, PartitionSpec

__all__ = ["n_devices", "over_devices", "usable_cores", "SPECTRA_AXIS", "THREADS_ENV"]

#: environment variable giving a process its share of the cores (set for Dask workers)
THREADS_ENV = "CUBE3D_THREADS"

#: name of the mesh axis along which spectra are split
SPECTRA_AXIS = "spectra"


def n_devices() -> int:
    """Number of devices of JAX's default backend in this process."""
    return len(jax.devices())


def usable_cores() -> int:
    """Cores this process should use for its threads of chunks.

    ``$CUBE3D_THREADS`` when set (each worker of ``--workers N`` gets its share of the
    machine, :mod:`cube3d.cluster`), else the cores the process may run on (its CPU
    affinity: a SLURM allocation or ``taskset``, which ``os.cpu_count`` ignores), else
    ``os.cpu_count()``.
    """
    given = os.environ.get(THREADS_ENV, "").strip()
    if given.isdigit() and int(given) >= 1:
        return int(given)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def _shard_map(fn, mesh, in_specs, out_specs):
    if hasattr(jax, "shard_map"):  # jax >= 0.6
        return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map

    return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


@functools.lru_cache(maxsize=None)
def _mesh(count):
    devices = jax.devices()
    if count > len(devices):
        raise ValueError(f"over_devices: {count} devices asked for, {len(devices)} present")
    return Mesh(devices[:count], (SPECTRA_AXIS,))


def over_devices(fn, n_batched: int, count: int):
    """``fn`` with its first ``n_batched`` arguments split over ``count`` devices.

    Parameters
    ----------
    fn : callable
        ``fn(*batched, *shared)``, whose batched arguments share a leading axis and whose
        outputs (any pytree) all have that leading axis; it must treat the spectra
        independently (a slice's results do not depend on the other slices).
    n_batched : int
        How many leading arguments are split; the others are given whole to every device.
    count : int
        Number of devices (the first ``count`` of :func:`jax.devices`); the leading axis
        must be a multiple of it.  1 returns ``fn`` itself.

    Returns
    -------
    callable
        To be called inside :func:`jax.jit` (or jitted) with the same arguments.
    """
    if count <= 1:
        return fn
    spec = PartitionSpec(SPECTRA_AXIS)

    def split(*args):
        in_specs = (spec,) * n_batched + (PartitionSpec(),) * (len(args) - n_batched)
        return _shard_map(fn, _mesh(count), in_specs, spec)(*args)

    return split
