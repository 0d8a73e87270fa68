"""Argument checks and the random source shared by the mock generators.

Every check runs outside jit on plain Python/NumPy values and raises
:class:`cube3d.errors.InputError` naming the argument at fault.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def shape2(shape, name="shape"):
    """``(ny, nx)`` as two positive Python ints.

    Parameters
    ----------
    shape : sequence of two ints
        Map shape, spaxels.
    name : str
        Argument name used in the error message.

    Returns
    -------
    (int, int)
    """
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"{name}: need two positive integers (ny, nx), got {shape!r}") from None
    if ny < 1 or nx < 1 or (ny, nx) != tuple(shape):
        raise InputError(f"{name}: need two positive integers (ny, nx), got {shape!r}")
    return ny, nx


def positive(value, name):
    """``value`` as a finite positive float (the unit is the caller's)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: must be a number, got {value!r}") from None
    if not (np.isfinite(x) and x > 0):
        raise InputError(f"{name}: must be a finite positive number, got {value!r}")
    return x


def as_map(value, shape, name, *, positive=False, lower=None):
    """``value`` (scalar or array) broadcast to ``shape`` as a float64 copy, checked finite.

    Parameters
    ----------
    value : float or array_like
        Broadcastable to ``shape``.
    shape : tuple of int
        Target shape.
    name : str
        Argument name used in the error messages.
    positive : bool
        Also require every value > 0.
    lower : float, optional
        Also require every value >= ``lower``.

    Returns
    -------
    ndarray, float64, shape ``shape``
    """
    try:
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    except (TypeError, ValueError):
        raise InputError(
            f"{name}: must be a number or an array broadcastable to {shape}, got shape {np.shape(value)}"
        ) from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: holds non-finite values")
    if positive and np.any(arr <= 0):
        raise InputError(f"{name}: must be positive everywhere (min {arr.min():g})")
    if lower is not None and np.any(arr < lower):
        raise InputError(f"{name}: must be >= {lower:g} everywhere (min {arr.min():g})")
    return arr


def check_key(key):
    """Reject anything but a non-negative int seed, a numpy Generator or a JAX PRNG key.

    Lets a generator fail on a bad ``key`` before it does any expensive work.  Draws
    nothing (a Generator's state is left untouched).
    """
    if isinstance(key, np.random.Generator):
        return
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if key < 0:
            raise InputError(f"key: a seed must be a non-negative integer, got {key}")
        return
    import jax

    if isinstance(key, jax.Array):
        return
    raise InputError(f"key: need an integer seed, a numpy Generator or a JAX PRNG key, got {type(key).__name__}")


def standard_normal(key, shape):
    """Independent N(0, 1) draws, float64, from an int seed, a numpy Generator or a JAX key.

    Parameters
    ----------
    key : int, numpy.random.Generator or JAX PRNG key
        An int seeds ``numpy.random.default_rng``; a Generator is advanced by the draw;
        a JAX key gives ``jax.random.normal(key, shape)`` in float64.
    shape : int or tuple of int
        Shape of the draw.

    Returns
    -------
    ndarray, float64, shape ``shape``
    """
    check_key(key)
    if isinstance(key, np.random.Generator):
        return key.standard_normal(shape)
    if isinstance(key, (int, np.integer)):
        return np.random.default_rng(int(key)).standard_normal(shape)
    import jax

    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    with jax.enable_x64(True):
        return np.asarray(jax.random.normal(key, shape, dtype=np.float64))
