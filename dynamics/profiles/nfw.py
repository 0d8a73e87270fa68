"""Navarro, Frenk & White (1996, 1997) profile."""

import jax
import jax.numpy as jnp

from ..constants import G
from ._fields import param, series_near_one, chi
from .base import Profile, check_positive, check_radius

__all__ = ["NFW", "density", "enclosed_mass", "potential", "surface_density", "mass_shape"]

# Taylor coefficients in (X - 1) of (1 - X(x)) / (x^2 - 1) about x = 1.
_SIGMA_SERIES = (1 / 3, -2 / 5, 13 / 35, -20 / 63, 61 / 231, -94 / 429, 1181 / 6435,
                 -1896 / 12155, 6223 / 46189, -3474 / 29393, 71081 / 676039,
                 -123084 / 1300075, 431893 / 5014575)


def mass_shape(x):
    """``m(x) = ln(1 + x) - x / (1 + x)``, with its series ``sum (-1)^n (n-1)/n x^n``
    below ``x = 0.01`` where the difference cancels."""
    small = x < 1e-2
    x_big = jnp.where(small, 1.0, x)
    x_small = jnp.where(small, x, 0.0)
    direct = jnp.log1p(x_big) - x_big / (1.0 + x_big)
    series = jnp.zeros_like(x_small)
    for n in range(12, 1, -1):
        series = (series + (-1) ** n * (n - 1) / n) * x_small
    series = series * x_small
    return jnp.where(small, series, direct)


def density(r, rho_s, r_s):
    """``rho = rho_s / (x (1 + x)^2)``, ``x = r / r_s``, in Msun/kpc^3 (NFW 1996, eq. 3)."""
    x = r / r_s
    return rho_s / (x * (1.0 + x) ** 2)


def enclosed_mass(r, rho_s, r_s):
    """``M(r) = 4 pi rho_s r_s^3 [ln(1 + x) - x/(1 + x)]`` in Msun."""
    return 4.0 * jnp.pi * rho_s * r_s**3 * mass_shape(r / r_s)


def potential(r, rho_s, r_s):
    """``Phi = -4 pi G rho_s r_s^2 ln(1 + x) / x`` in (km/s)^2 (``-4 pi G rho_s r_s^2`` at 0)."""
    x = r / r_s
    pos = x > 0
    x_safe = jnp.where(pos, x, 1.0)
    shape = jnp.where(pos, jnp.log1p(x_safe) / x_safe, 1.0 - x / 2.0)
    return -4.0 * jnp.pi * G * rho_s * r_s**2 * shape


def surface_density(R, rho_s, r_s):
    """``Sigma = 2 rho_s r_s (1 - X(x)) / (x^2 - 1)``, ``x = R / r_s`` (Bartelmann 1996),
    with a Taylor series about ``x = 1`` (value ``2 rho_s r_s / 3``); in Msun/kpc^2."""
    x = R / r_s
    shape = series_near_one(x, lambda t: (1.0 - chi(t)) / (t**2 - 1.0), _SIGMA_SERIES)
    return 2.0 * rho_s * r_s * shape


class NFW(Profile):
    """NFW profile with characteristic density ``rho_s`` (Msun/kpc^3) and scale radius ``r_s`` (kpc).

    References
    ----------
    Navarro, Frenk & White (1996), ApJ 462, 563; Bartelmann (1996), A&A 313, 697
    (projection); Lokas & Mamon (2001), MNRAS 321, 155.

    Examples
    --------
    >>> from dynamics import NFW
    >>> halo = NFW(rho_s=1e7, r_s=1.0)
    >>> m1 = halo.enclosed_mass(1.0)       # 4 pi rho_s r_s^3 (ln 2 - 1/2)
    """

    rho_s: jax.Array = param()
    r_s: jax.Array = param()
    closed_mass = True

    def __check_init__(self):
        check_positive("NFW", rho_s=self.rho_s, r_s=self.r_s)

    def density(self, r):
        return density(check_radius(r), self.rho_s, self.r_s)

    def enclosed_mass(self, r):
        return enclosed_mass(check_radius(r), self.rho_s, self.r_s)

    def potential(self, r):
        return potential(check_radius(r), self.rho_s, self.r_s)

    def surface_density(self, R):
        return surface_density(check_radius(R, "R"), self.rho_s, self.r_s)

    def scale_radius(self):
        return self.r_s
