"""Einasto (1965) profile."""

import jax
import jax.numpy as jnp
from jax.scipy.special import gammainc, gammaincc, gammaln

from ..constants import G
from ._fields import param
from .base import Profile, check_positive, check_radius

__all__ = ["Einasto", "density", "enclosed_mass", "potential"]


def density(r, rho_2, r_2, alpha):
    """``rho = rho_2 exp(-(2/alpha) [(r/r_2)^alpha - 1])`` in Msun/kpc^3 (Navarro et al. 2004, eq. 5)."""
    return rho_2 * jnp.exp(-(2.0 / alpha) * ((r / r_2) ** alpha - 1.0))


def _log_norm(alpha, k):
    # ln[ e^(2/alpha) (alpha/2)^(k/alpha) Gamma(k/alpha) / alpha ]
    return 2.0 / alpha + (k / alpha) * jnp.log(alpha / 2.0) + gammaln(k / alpha) - jnp.log(alpha)


def enclosed_mass(r, rho_2, r_2, alpha):
    """``M(r) = 4 pi rho_2 r_2^3 e^(2/a) (a/2)^(3/a) Gamma(3/a) P(3/a, (2/a) x^a) / a`` in Msun
    (Cardone, Piedipalumbo & Tortora 2005, eq. 13; P the regularised lower incomplete gamma)."""
    y = (2.0 / alpha) * (r / r_2) ** alpha
    return 4.0 * jnp.pi * rho_2 * r_2**3 * jnp.exp(_log_norm(alpha, 3.0)) * gammainc(3.0 / alpha, y)


def potential(r, rho_2, r_2, alpha):
    """``Phi = -G [M(r)/r + 4 pi rho_2 r_2^2 e^(2/a) (a/2)^(2/a) Gamma(2/a) Q(2/a, y) / a]`` in (km/s)^2.

    Binney & Tremaine (2008) eq. 2.28 with the outer integral in closed form
    (Q the regularised upper incomplete gamma, ``y = (2/a) (r/r_2)^a``).
    """
    pos = r > 0
    r_safe = jnp.where(pos, r, 1.0)
    inner = jnp.where(pos, enclosed_mass(r_safe, rho_2, r_2, alpha) / r_safe, 0.0)
    y = (2.0 / alpha) * (r / r_2) ** alpha
    outer = 4.0 * jnp.pi * rho_2 * r_2**2 * jnp.exp(_log_norm(alpha, 2.0)) * gammaincc(2.0 / alpha, y)
    return -G * (inner + outer)


class Einasto(Profile):
    """Einasto profile: density ``rho_2`` (Msun/kpc^3) at the radius ``r_2`` (kpc) where the
    logarithmic slope is -2, shape ``alpha``.  Surface density by the base-class quadrature.

    References
    ----------
    Einasto (1965), Trudy Astrofiz. Inst. Alma-Ata 5, 87; Navarro et al. (2004), MNRAS 349, 1039;
    Cardone, Piedipalumbo & Tortora (2005), MNRAS 358, 1325.

    Examples
    --------
    >>> from dynamics import Einasto
    >>> e = Einasto(rho_2=1e7, r_2=1.0, alpha=0.17)
    >>> m = e.enclosed_mass(1.0)
    """

    rho_2: jax.Array = param()
    r_2: jax.Array = param()
    alpha: jax.Array = param()
    closed_mass = True

    def __check_init__(self):
        check_positive("Einasto", rho_2=self.rho_2, r_2=self.r_2, alpha=self.alpha)

    def density(self, r):
        return density(check_radius(r), self.rho_2, self.r_2, self.alpha)

    def enclosed_mass(self, r):
        return enclosed_mass(check_radius(r), self.rho_2, self.r_2, self.alpha)

    def potential(self, r):
        return potential(check_radius(r), self.rho_2, self.r_2, self.alpha)

    def scale_radius(self):
        return self.r_2
