"""Burkert (1995) cored profile."""

import jax
import jax.numpy as jnp

from ._fields import param
from .base import Profile, check_positive, check_radius

__all__ = ["Burkert", "density", "enclosed_mass"]


def density(r, rho_0, r_0):
    """``rho = rho_0 / ((1 + x)(1 + x^2))``, ``x = r / r_0``, in Msun/kpc^3 (Burkert 1995, eq. 2)."""
    x = r / r_0
    return rho_0 / ((1.0 + x) * (1.0 + x**2))


def _mass_shape(x):
    """``ln(1 + x^2) + 2 ln(1 + x) - 2 arctan(x)``; series ``4 sum c_n x^(n+3)/(n+3)``
    (``c_n`` = 1, -1, 0, 0 repeating) below ``x = 0.05``."""
    small = x < 0.05
    xb = jnp.where(small, 1.0, x)
    xs = jnp.where(small, x, 0.0)
    direct = jnp.log1p(xb**2) + 2.0 * jnp.log1p(xb) - 2.0 * jnp.arctan(xb)
    series = jnp.zeros_like(xs)
    for n in range(13, -1, -1):
        c = (1.0, -1.0, 0.0, 0.0)[n % 4]
        series = series * xs + 4.0 * c / (n + 3)
    series = series * xs**3
    return jnp.where(small, series, direct)


def enclosed_mass(r, rho_0, r_0):
    """``M(r) = pi rho_0 r_0^3 [ln(1 + x^2) + 2 ln(1 + x) - 2 arctan x]`` in Msun
    (Burkert 1995; Mori & Burkert 2000, eq. 5)."""
    return jnp.pi * rho_0 * r_0**3 * _mass_shape(r / r_0)


class Burkert(Profile):
    """Burkert profile with central density ``rho_0`` (Msun/kpc^3) and core radius ``r_0`` (kpc).

    Potential and surface density come from the base-class quadratures.

    References
    ----------
    Burkert (1995), ApJ 447, L25; Mori & Burkert (2000), ApJ 538, 559.

    Examples
    --------
    >>> from dynamics import Burkert
    >>> b = Burkert(rho_0=5e7, r_0=0.8)
    >>> m = b.enclosed_mass(1.0)
    """

    rho_0: jax.Array = param()
    r_0: jax.Array = param()
    closed_mass = True

    def __check_init__(self):
        check_positive("Burkert", rho_0=self.rho_0, r_0=self.r_0)

    def density(self, r):
        return density(check_radius(r), self.rho_0, self.r_0)

    def enclosed_mass(self, r):
        return enclosed_mass(check_radius(r), self.rho_0, self.r_0)

    def scale_radius(self):
        return self.r_0
