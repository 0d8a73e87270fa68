"""Zhao (1996) double power-law (alpha, beta, gamma) profile."""

import jax
import jax.numpy as jnp

from ._fields import param
from .base import Profile, check_condition, check_positive, check_radius, mass_from_density

__all__ = ["Zhao", "density", "enclosed_mass"]


def density(r, rho_s, r_s, alpha, beta, gamma):
    """``rho = rho_s x^-gamma (1 + x^alpha)^(-(beta - gamma)/alpha)``, ``x = r/r_s``.

    Zhao (1996) eq. 1, evaluated in logarithms (``log1p(x^alpha)`` as a softplus of
    ``alpha ln x``) so that it neither overflows nor underflows; Msun/kpc^3.
    """
    x = r / r_s
    pos = x > 0
    lx = jnp.log(jnp.where(pos, x, 1.0))
    log_shape = -gamma * lx - (beta - gamma) / alpha * jnp.logaddexp(0.0, alpha * lx)
    at_zero = jnp.where(gamma > 0, jnp.inf, jnp.where(gamma == 0, 1.0, 0.0))
    return rho_s * jnp.where(pos, jnp.exp(log_shape), at_zero)


def enclosed_mass(r, rho_s, r_s, alpha, beta, gamma):
    """Enclosed mass in Msun by quadrature in ``ln r`` (differentiable in every parameter).

    The closed form is an incomplete beta function of non-integer order
    (Zhao 1996, eq. 5) whose parameter derivatives JAX does not provide; the
    quadrature of :func:`dynamics.profiles.base.mass_from_density` is accurate to
    ~1e-12 for ``alpha <= 4``.
    """
    return mass_from_density(lambda s: density(s, rho_s, r_s, alpha, beta, gamma), r)


class Zhao(Profile):
    """Zhao (alpha, beta, gamma) profile.

    Parameters
    ----------
    rho_s : Msun/kpc^3, r_s : kpc
        Scale density and radius.
    alpha, beta, gamma
        Transition sharpness, outer and inner logarithmic slopes (``gamma < 3``).
        ``(1, 3, 1)`` is NFW, ``(1, 4, 1)`` Hernquist, ``(2, 5, 0)`` Plummer and
        ``(1, 4, gamma)`` Dehnen (1993).

    References
    ----------
    Zhao (1996), MNRAS 278, 488; Dehnen (1993), MNRAS 265, 250.

    Examples
    --------
    >>> from dynamics import Zhao
    >>> halo = Zhao(rho_s=1e7, r_s=1.0, alpha=2.0, beta=3.0, gamma=0.5)
    >>> m = halo.enclosed_mass(1.0)
    """

    rho_s: jax.Array = param()
    r_s: jax.Array = param()
    alpha: jax.Array = param()
    beta: jax.Array = param()
    gamma: jax.Array = param()

    def __check_init__(self):
        check_positive("Zhao", rho_s=self.rho_s, r_s=self.r_s, alpha=self.alpha)
        check_condition("Zhao", "gamma", self.gamma, lambda v: v < 3, "< 3")
        check_condition("Zhao", "beta", self.beta, lambda v: v > 2, "> 2")

    def density(self, r):
        return density(check_radius(r), self.rho_s, self.r_s, self.alpha, self.beta, self.gamma)

    def enclosed_mass(self, r):
        return enclosed_mass(
            check_radius(r), self.rho_s, self.r_s, self.alpha, self.beta, self.gamma
        )

    def scale_radius(self):
        return self.r_s
