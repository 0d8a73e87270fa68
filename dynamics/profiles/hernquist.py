"""Hernquist (1990) profile."""

import jax
import jax.numpy as jnp

from ..constants import G
from ._fields import param, series_near_one, chi
from .base import Profile, check_positive, check_radius

__all__ = ["Hernquist", "density", "enclosed_mass", "potential", "surface_density"]

# Taylor coefficients in (s - 1) of ((2 + s^2) X(s) - 3) / (1 - s^2)^2 about s = 1.
_SIGMA_SERIES = (4 / 15, -16 / 35, 8 / 15, -368 / 693, 1468 / 3003, -928 / 2145,
                 41168 / 109395, -5792 / 17765, 91684 / 323323, -1264 / 5083,
                 3723288 / 16900975, -2307824 / 11700675, 25939948 / 145422675)


def density(r, m_tot, r_s):
    """``rho = M a / (2 pi r (r + a)^3)`` in Msun/kpc^3 (Hernquist 1990, eq. 2)."""
    return m_tot * r_s / (2.0 * jnp.pi * r * (r + r_s) ** 3)


def enclosed_mass(r, m_tot, r_s):
    """``M(r) = M r^2 / (r + a)^2`` in Msun (Hernquist 1990, eq. 3)."""
    return m_tot * (r / (r + r_s)) ** 2


def potential(r, m_tot, r_s):
    """``Phi = -G M / (r + a)`` in (km/s)^2 (Hernquist 1990, eq. 5)."""
    return -G * m_tot / (r + r_s)


def surface_density(R, m_tot, r_s):
    """``Sigma(s) = M / (2 pi a^2 (1 - s^2)^2) [(2 + s^2) X(s) - 3]``, ``s = R/a``.

    Hernquist (1990) eqs. 32-33, with a Taylor series about ``s = 1`` (where the
    bracket cancels to ``4/15``); in Msun/kpc^2.
    """
    s = R / r_s
    shape = series_near_one(s, lambda t: ((2.0 + t**2) * chi(t) - 3.0) / (1.0 - t**2) ** 2,
                            _SIGMA_SERIES)
    return m_tot / (2.0 * jnp.pi * r_s**2) * shape


class Hernquist(Profile):
    """Hernquist profile of total mass ``m_tot`` (Msun) and scale radius ``r_s`` (kpc).

    References
    ----------
    Hernquist (1990), ApJ 356, 359.

    Examples
    --------
    >>> from dynamics import Hernquist
    >>> h = Hernquist(m_tot=1e11, r_s=2.0)
    >>> float(h.enclosed_mass(2.0) / 1e11)
    0.25
    """

    m_tot: jax.Array = param()
    r_s: jax.Array = param()
    closed_mass = True

    def __check_init__(self):
        check_positive("Hernquist", m_tot=self.m_tot, r_s=self.r_s)

    def density(self, r):
        return density(check_radius(r), self.m_tot, self.r_s)

    def enclosed_mass(self, r):
        return enclosed_mass(check_radius(r), self.m_tot, self.r_s)

    def potential(self, r):
        return potential(check_radius(r), self.m_tot, self.r_s)

    def surface_density(self, R):
        return surface_density(check_radius(R, "R"), self.m_tot, self.r_s)

    def scale_radius(self):
        return self.r_s
