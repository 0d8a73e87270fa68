"""Plummer (1911) sphere."""

import jax
import jax.numpy as jnp

from ..constants import G
from ._fields import param
from .base import Profile, check_positive, check_radius

__all__ = ["Plummer", "density", "enclosed_mass", "potential", "surface_density"]


def density(r, m_tot, r_s):
    """``rho = 3 M / (4 pi a^3) (1 + r^2/a^2)^(-5/2)`` in Msun/kpc^3 (Plummer 1911)."""
    return 3.0 * m_tot / (4.0 * jnp.pi * r_s**3) * (1.0 + (r / r_s) ** 2) ** -2.5


def enclosed_mass(r, m_tot, r_s):
    """``M(r) = M r^3 / (r^2 + a^2)^(3/2)`` in Msun."""
    return m_tot * r**3 / (r**2 + r_s**2) ** 1.5


def potential(r, m_tot, r_s):
    """``Phi = -G M / sqrt(r^2 + a^2)`` in (km/s)^2."""
    return -G * m_tot / jnp.sqrt(r**2 + r_s**2)


def surface_density(R, m_tot, r_s):
    """``Sigma = M a^2 / (pi (a^2 + R^2)^2)`` in Msun/kpc^2."""
    return m_tot * r_s**2 / (jnp.pi * (r_s**2 + R**2) ** 2)


class Plummer(Profile):
    """Plummer sphere of total mass ``m_tot`` (Msun) and scale radius ``r_s`` (kpc).

    References
    ----------
    Plummer (1911), MNRAS 71, 460; Dejonghe (1987), MNRAS 224, 13.

    Examples
    --------
    >>> from dynamics import Plummer
    >>> p = Plummer(m_tot=1e7, r_s=0.3)
    >>> float(p.enclosed_mass(1e9) / 1e7)
    1.0
    """

    m_tot: jax.Array = param()
    r_s: jax.Array = param()
    closed_mass = True

    def __check_init__(self):
        check_positive("Plummer", m_tot=self.m_tot, r_s=self.r_s)

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
