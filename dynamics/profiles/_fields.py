"""Field helpers shared by the built-in profiles (private)."""

import equinox as eqx
import jax.numpy as jnp


def as_float(x):
    """Convert a parameter to a float array (float64 when x64 is enabled)."""
    return jnp.asarray(x, dtype=jnp.result_type(float))


def param():
    """An array parameter field converted to float."""
    return eqx.field(converter=as_float)


_CHI_SERIES = (1, -2 / 3, 7 / 15, -12 / 35, 83 / 315, -146 / 693, 523 / 3003, -952 / 6435,
               14051 / 109395, -26206 / 230945, 32867 / 323323, -62260 / 676039,
               1423159 / 16900975)


def chi(x):
    """``arccosh(1/x)/sqrt(1-x^2)`` (x<1), ``arccos(1/x)/sqrt(x^2-1)`` (x>1), 1 at x=1.

    The function ``X(s)`` of Hernquist (1990) eq. 33 (also in the projected NFW
    profile, Bartelmann 1996), written with ``log1p``/``arctan`` of ``(1-x)(1+x)`` so
    that it keeps full precision near 1, and a Taylor series in ``x - 1`` for
    ``|x - 1| < 0.02``; gradient-safe (every branch sees a valid argument).
    """
    return series_near_one(x, _chi_direct, _CHI_SERIES)


def _chi_direct(x):
    lo = x < 1.0
    x_lo = jnp.where(lo, x, 0.5)
    x_hi = jnp.where(lo, 2.0, x)
    q_lo = jnp.sqrt((1.0 - x_lo) * (1.0 + x_lo))
    q_hi = jnp.sqrt((x_hi - 1.0) * (x_hi + 1.0))
    f_lo = jnp.log1p((1.0 - x_lo + q_lo) / x_lo) / q_lo       # arccosh(1/x) / sqrt(1 - x^2)
    f_hi = jnp.arctan(q_hi) / q_hi                              # arccos(1/x) / sqrt(x^2 - 1)
    return jnp.where(lo, f_lo, f_hi)


def _horner(coef, d):
    out = jnp.zeros_like(d) + coef[-1]
    for c in coef[-2::-1]:
        out = out * d + c
    return out


def series_near_one(x, direct, coef, width=2e-2):
    """Use ``direct(x_safe)`` away from x = 1 and the Taylor series in ``x - 1`` near it."""
    d = x - 1.0
    near = jnp.abs(d) < width
    x_safe = jnp.where(near, 1.0 + 2.0 * width, x)
    d_s = jnp.where(near, d, 0.0)
    return jnp.where(near, _horner(coef, d_s), direct(x_safe))
