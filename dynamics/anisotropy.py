"""Velocity anisotropy models ``beta(r) = 1 - sigma_t^2 / sigma_r^2``.

Each model gives ``beta(r)`` and the logarithm of the Jeans integrating factor
``f(r) = exp(2 int beta(r)/r dr)`` (defined up to a constant: only ratios enter), so
that ``nu sigma_r^2 (r) = f(r)^-1 int_r^inf f(s) nu(s) G M(s) / s^2 ds`` (Mamon &
Lokas 2005, eq. A3).  Isotropic and Osipkov-Merritt models also provide the closed-
form line-of-sight kernel ``K(u, u_a)`` of Mamon & Lokas (2005, eqs. A16) with which

    Sigma sigma_los^2 (R) = 2 G int_R^inf K(r/R, r_a/R) nu(r) M(r) dr / r;

the other models use the same single integral with the kernel computed by
quadrature (:mod:`dynamics.jeans`).

Kernels are written in ``t = arccosh(r/R)`` (``u = cosh t``), the variable of the
projection quadrature.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .profiles._fields import param
from .profiles.base import check_condition, check_positive, check_radius

__all__ = ["Anisotropy", "Isotropic", "ConstantBeta", "OsipkovMerritt", "BaesVanHese"]


class Anisotropy(eqx.Module):
    """Base class: write :meth:`beta` and :meth:`log_integrating_factor`.

    Set ``has_kernel = True`` and write :meth:`kernel` for a closed-form LOS kernel.
    """

    has_kernel: ClassVar[bool] = False

    def beta(self, r):
        """Anisotropy ``beta(r)`` (dimensionless) at radius ``r`` (kpc)."""
        raise NotImplementedError

    def log_integrating_factor(self, r):
        """``ln f(r)`` with ``d ln f / d ln r = 2 beta(r)`` (up to an additive constant)."""
        raise NotImplementedError

    def kernel(self, t, R):
        """Closed-form Mamon & Lokas (2005) kernel at ``u = cosh t``, projected radius ``R``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form kernel")


class Isotropic(Anisotropy):
    """``beta = 0``; kernel ``K = sqrt(1 - 1/u^2)`` (Mamon & Lokas 2005, eq. A16)."""

    has_kernel = True

    def beta(self, r):
        return jnp.zeros_like(check_radius(r))

    def log_integrating_factor(self, r):
        return jnp.zeros_like(check_radius(r))

    def kernel(self, t, R):
        return jnp.tanh(t) + jnp.zeros_like(R)            # sqrt(1 - 1/cosh^2 t)


class ConstantBeta(Anisotropy):
    """Constant anisotropy ``beta < 1``; ``f = r^(2 beta)``.

    Examples
    --------
    >>> from dynamics import ConstantBeta
    >>> a = ConstantBeta(0.3)
    """

    beta_0: jax.Array = param()

    def __init__(self, beta):
        self.beta_0 = beta

    def __check_init__(self):
        check_condition("ConstantBeta", "beta", self.beta_0, lambda v: v < 1, "< 1")

    def beta(self, r):
        return self.beta_0 + jnp.zeros_like(check_radius(r))

    def log_integrating_factor(self, r):
        r = check_radius(r)
        return 2.0 * self.beta_0 * jnp.log(r)


class OsipkovMerritt(Anisotropy):
    """Osipkov (1979) - Merritt (1985) anisotropy ``beta = r^2 / (r^2 + r_a^2)``.

    ``f = 1 + r^2 / r_a^2``; closed-form kernel of Mamon & Lokas (2005) eq. A16:
    ``K = (u_a^2 + 1/2) / (u_a^2 + 1)^(3/2) (u^2 + u_a^2) / u arctan(sqrt((u^2 - 1)/(u_a^2 + 1)))
    - 1/2 / (u_a^2 + 1) sqrt(1 - 1/u^2)`` with ``u_a = r_a / R``.

    Examples
    --------
    >>> from dynamics import OsipkovMerritt
    >>> om = OsipkovMerritt(r_a=0.5)
    """

    r_a: jax.Array = param()
    has_kernel = True

    def __check_init__(self):
        check_positive("OsipkovMerritt", r_a=self.r_a)

    def beta(self, r):
        r = check_radius(r)
        return r**2 / (r**2 + self.r_a**2)

    def log_integrating_factor(self, r):
        r = check_radius(r)
        return jnp.log1p((r / self.r_a) ** 2)

    def kernel(self, t, R):
        ua2 = (self.r_a / R) ** 2
        u = jnp.cosh(t)
        arg = jnp.sinh(t) / jnp.sqrt(ua2 + 1.0)
        return (ua2 + 0.5) / (ua2 + 1.0) ** 1.5 * (u**2 + ua2) / u * jnp.arctan(arg) - 0.5 / (
            ua2 + 1.0
        ) * jnp.tanh(t)


class BaesVanHese(Anisotropy):
    """Baes & van Hese (2007) anisotropy
    ``beta(r) = (beta_0 + beta_inf (r/r_a)^eta) / (1 + (r/r_a)^eta)``.

    ``ln f = 2 beta_0 ln r + 2 (beta_inf - beta_0) / eta ln(1 + (r/r_a)^eta)``.

    References
    ----------
    Baes & van Hese (2007), A&A 471, 419, eq. 8.

    Examples
    --------
    >>> from dynamics import BaesVanHese
    >>> a = BaesVanHese(beta_0=0.0, beta_inf=0.5, r_a=1.0, eta=2.0)
    """

    beta_0: jax.Array = param()
    beta_inf: jax.Array = param()
    r_a: jax.Array = param()
    eta: jax.Array = param()

    def __check_init__(self):
        check_condition("BaesVanHese", "beta_0", self.beta_0, lambda v: v < 1, "< 1")
        check_condition("BaesVanHese", "beta_inf", self.beta_inf, lambda v: v < 1, "< 1")
        check_positive("BaesVanHese", r_a=self.r_a, eta=self.eta)

    def beta(self, r):
        r = check_radius(r)
        lx = self.eta * jnp.log(r / self.r_a)
        w = jax.nn.sigmoid(lx)                        # x^eta / (1 + x^eta)
        return self.beta_0 + (self.beta_inf - self.beta_0) * w

    def log_integrating_factor(self, r):
        r = check_radius(r)
        lx = self.eta * jnp.log(r / self.r_a)
        return 2.0 * self.beta_0 * jnp.log(r) + 2.0 * (self.beta_inf - self.beta_0) / self.eta * (
            jnp.logaddexp(0.0, lx)
        )
