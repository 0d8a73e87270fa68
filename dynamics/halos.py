"""Dark haloes by virial mass and concentration: NFW and generalised NFW (gNFW).

The virial radius ``r200`` encloses a mean density of 200 times the critical density,
``M200 = (4 pi / 3) 200 rho_crit r200^3`` (Navarro, Frenk & White 1997), with
``rho_crit = 3 H0^2 / (8 pi G)`` for ``H0`` = :data:`H0` (70 km/s/Mpc, 136 Msun/kpc^3).
The scale radius is ``r_s = r200 / c``.  The gNFW halo,
``rho = rho_s x^-gamma (1 + x)^(gamma - 3)`` (``x = r / r_s``; Zhao 1996 with
``alpha = 1, beta = 3``), is normalised so that it too holds ``M200`` within ``r200``;
``gamma = 1`` is NFW, with its concentration ``c = r200 / r_s`` (for ``gamma != 1``
the concentration is a shape parameter, not the radius of slope -2).

Every function is jit/grad-able in every argument.  Units: kpc, Msun.
"""

import math

import jax.numpy as jnp

from .constants import G
from .profiles import NFW, Zhao
from .profiles.nfw import mass_shape

__all__ = ["H0", "RHO_CRIT", "r200_from_m200", "nfw_from_m200", "gnfw_from_m200"]

#: Hubble constant in km/s/kpc (70 km/s/Mpc).
H0 = 70.0e-3

#: Critical density of the Universe for :data:`H0`, Msun/kpc^3.
RHO_CRIT = 3.0 * H0**2 / (8.0 * math.pi * G)


def r200_from_m200(m200):
    """Virial radius (kpc) holding a mean density ``200 rho_crit`` around mass ``m200`` (Msun)."""
    return (3.0 * m200 / (800.0 * math.pi * RHO_CRIT)) ** (1.0 / 3.0)


def nfw_from_m200(m200, concentration):
    """NFW halo of virial mass ``m200`` (Msun) and concentration ``c = r200 / r_s``.

    ``M(<r) = 4 pi rho_s r_s^3 m(r / r_s)``, ``m(x) = ln(1 + x) - x / (1 + x)``
    (Navarro et al. 1997), so ``rho_s = M200 / (4 pi r_s^3 m(c))``.
    """
    r_s = r200_from_m200(m200) / concentration
    rho_s = m200 / (4.0 * math.pi * r_s**3 * mass_shape(jnp.asarray(concentration, dtype=float)))
    return NFW(rho_s, r_s)


def gnfw_from_m200(m200, concentration, gamma):
    """Generalised NFW halo (inner slope ``gamma`` < 3) holding ``m200`` (Msun) within ``r200``.

    ``r_s = r200 / concentration``; ``rho_s`` from the enclosed mass of a unit-density
    halo at ``r200`` (quadrature, :func:`dynamics.profiles.zhao.enclosed_mass`).
    """
    r200 = r200_from_m200(m200)
    r_s = r200 / concentration
    unit = Zhao(1.0, r_s, 1.0, 3.0, gamma).enclosed_mass(r200)
    return Zhao(m200 / unit, r_s, 1.0, 3.0, gamma)
