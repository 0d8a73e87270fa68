"""coreNFW profile of Read, Agertz & Collins (2016)."""

import jax
import jax.numpy as jnp

from . import nfw
from ._fields import param
from .base import Profile, check_condition, check_positive, check_radius

__all__ = ["CoreNFW", "density", "enclosed_mass"]


def enclosed_mass(r, rho_s, r_s, r_c, n):
    """``M(r) = M_NFW(r) f^n``, ``f = tanh(r / r_c)``, in Msun (Read et al. 2016, eq. 18)."""
    return nfw.enclosed_mass(r, rho_s, r_s) * jnp.tanh(r / r_c) ** n


def density(r, rho_s, r_s, r_c, n):
    """``rho = f^n rho_NFW + n f^(n-1) (1 - f^2) M_NFW / (4 pi r^2 r_c)`` in Msun/kpc^3
    (Read et al. 2016, eq. 20)."""
    pos = r > 0
    r_safe = jnp.where(pos, r, 1.0)
    f = jnp.tanh(r_safe / r_c)
    m_nfw = nfw.enclosed_mass(r_safe, rho_s, r_s)
    rho = f**n * nfw.density(r_safe, rho_s, r_s) + n * f ** (n - 1.0) * (1.0 - f**2) * m_nfw / (
        4.0 * jnp.pi * r_safe**2 * r_c
    )
    # r -> 0: rho -> rho_s (r_s / r_c)^n (r/r_s)^(n-1) (1 + n / 2 ...); finite (n=1) or divergent.
    at_zero = jnp.where(n >= 1.0, rho_s * r_s / r_c * (1.0 + n / 2.0), jnp.inf)
    return jnp.where(pos, rho, at_zero)


class CoreNFW(Profile):
    """coreNFW profile: an NFW halo (``rho_s``, ``r_s``) whose mass is multiplied by
    ``tanh(r / r_c)^n`` (core radius ``r_c`` in kpc, ``0 <= n <= 1``).

    References
    ----------
    Read, Agertz & Collins (2016), MNRAS 459, 2573, eqs. 18-20.

    Examples
    --------
    >>> from dynamics import CoreNFW
    >>> halo = CoreNFW(rho_s=1e7, r_s=1.0, r_c=0.3, n=1.0)
    >>> m = halo.enclosed_mass(0.5)
    """

    rho_s: jax.Array = param()
    r_s: jax.Array = param()
    r_c: jax.Array = param()
    n: jax.Array = param()
    closed_mass = True

    def __check_init__(self):
        check_positive("CoreNFW", rho_s=self.rho_s, r_s=self.r_s, r_c=self.r_c)
        check_condition("CoreNFW", "n", self.n, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")

    def density(self, r):
        return density(check_radius(r), self.rho_s, self.r_s, self.r_c, self.n)

    def enclosed_mass(self, r):
        return enclosed_mass(check_radius(r), self.rho_s, self.r_s, self.r_c, self.n)

    def scale_radius(self):
        return self.r_s
