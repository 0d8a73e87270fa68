"""Stationary covariance kernels for the spatial priors, in sky-grid units (spaxels).

A kernel is a sum of terms, each a unit-variance stationary correlation times an
amplitude squared::

    k(d) = sum_t amp_t**2 * rho_t(d / scale_t)

with ``rho`` one of Matern-3/2, Matern-5/2 or the squared exponential (Rasmussen &
Williams 2006, eqs. 4.9, 4.14, 4.17), ``d`` either the Euclidean separation
(isotropic) or, for a *separable* kernel, the product of one-dimensional correlations
along y and x, which is what Kronecker algebra on a regular grid needs.  The same
conventions as tinygp's ``Matern32(scale)``, ``Matern52(scale)`` and
``ExpSquared(scale)``.

Each kind of term is one :class:`KernelKind` object holding everything the solvers need
of it: the correlation, the spectral density (Rasmussen & Williams eqs. 4.15, 4.20; for
the Hilbert-space approximation, :mod:`cube3d.spatial.hsgp`), the Hilbert basis size
factor and the tinygp counterpart (dense solver, tests).  :data:`KERNELS` registers them
by name; kernel strings such as ``"matern32+expsquared"`` are parsed against it.  A new
kernel is a new subclass added to :data:`KERNELS`, nothing else.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from ..errors import InputError

__all__ = ["KernelKind", "Matern32", "Matern52", "ExpSquared", "KERNELS", "KINDS", "get_kernel", "KernelSpec",
           "parse_kernel", "correlation", "covariance", "spectral_density", "tinygp_kernel"]


# ---------------------------------------------------------------- pure functions, one element

def matern_correlation(nu, u):
    """Matern correlation for half-integer ``nu`` in {3/2, 5/2} at ``u = d / scale >= 0``
    (Rasmussen & Williams 2006 eqs. 4.16, 4.17)."""
    if nu == 1.5:
        a = jnp.sqrt(3.0) * u
        return (1.0 + a) * jnp.exp(-a)
    a = jnp.sqrt(5.0) * u
    return (1.0 + a + a * a / 3.0) * jnp.exp(-a)


def matern_spectral_density(nu, omega2, scale, dim):
    """Spectral density of a unit-variance Matern-``nu`` correlation in ``dim`` dimensions
    (Rasmussen & Williams 2006 eq. 4.15), integrating to 1 over d^dim omega / (2 pi)^dim."""
    log_c = (dim * np.log(2.0) + 0.5 * dim * np.log(np.pi) + gammaln(nu + dim / 2.0) - gammaln(nu)
             + nu * np.log(2.0 * nu))
    return jnp.exp(log_c - 2.0 * nu * jnp.log(scale)) * (2.0 * nu / scale**2 + omega2) ** (-(nu + dim / 2.0))


def expsquared_correlation(u):
    """Squared-exponential correlation at ``u = d / scale`` (Rasmussen & Williams 2006 eq. 4.9)."""
    return jnp.exp(-0.5 * u * u)


def expsquared_spectral_density(omega2, scale, dim):
    """Spectral density of the unit-variance squared exponential (Rasmussen & Williams 2006
    eq. 4.20), integrating to 1 over d^dim omega / (2 pi)^dim."""
    return (2.0 * np.pi) ** (dim / 2.0) * scale**dim * jnp.exp(-0.5 * scale**2 * omega2)


# ---------------------------------------------------------------- one object per kind of term

class KernelKind(abc.ABC):
    """One kind of stationary correlation term.

    Attributes
    ----------
    name : str
        Registry key, as written in kernel strings (``"matern52"``).
    hsgp_c_nu : float
        Hilbert basis functions per unit of ``boundary_factor * half-width / scale``
        that resolve this correlation (Riutort-Mayol et al. 2023, Stat. Comput. 33, 17,
        Sect. 4.3).
    """

    name: str
    hsgp_c_nu: float

    @abc.abstractmethod
    def correlation(self, u):
        """Unit-variance correlation at scaled separation ``u = d / scale >= 0``."""

    @abc.abstractmethod
    def spectral_density(self, omega2, scale, dim):
        """Spectral density of the unit-variance correlation with length ``scale`` in ``dim``
        dimensions at squared angular frequency ``omega2`` (radians per spaxel, squared),
        normalised to integrate to 1 over d^dim omega / (2 pi)^dim."""

    @property
    @abc.abstractmethod
    def tinygp_class(self):
        """The tinygp kernel class with the same correlation (``cls(scale=..., distance=...)``)."""

    def __repr__(self):
        return f"{type(self).__name__}()"


class _Matern(KernelKind):
    """Matern correlations of half-integer order ``nu`` (set by the subclass)."""

    nu: float
    tinygp_name: str

    def correlation(self, u):
        return matern_correlation(self.nu, u)

    def spectral_density(self, omega2, scale, dim):
        return matern_spectral_density(self.nu, omega2, scale, dim)

    @property
    def tinygp_class(self):
        from tinygp import kernels

        return getattr(kernels, self.tinygp_name)


class Matern32(_Matern):
    """Matern-3/2: ``(1 + sqrt(3) u) exp(-sqrt(3) u)``."""

    name = "matern32"
    hsgp_c_nu = 3.42
    nu = 1.5
    tinygp_name = "Matern32"


class Matern52(_Matern):
    """Matern-5/2: ``(1 + sqrt(5) u + 5 u^2 / 3) exp(-sqrt(5) u)``."""

    name = "matern52"
    hsgp_c_nu = 2.65
    nu = 2.5
    tinygp_name = "Matern52"


class ExpSquared(KernelKind):
    """Squared exponential: ``exp(-u^2 / 2)``."""

    name = "expsquared"
    hsgp_c_nu = 1.75

    def correlation(self, u):
        return expsquared_correlation(u)

    def spectral_density(self, omega2, scale, dim):
        return expsquared_spectral_density(omega2, scale, dim)

    @property
    def tinygp_class(self):
        from tinygp import kernels

        return kernels.ExpSquared


#: name -> kind of kernel term; the one place a new kernel is registered
KERNELS = {k.name: k for k in (Matern32(), Matern52(), ExpSquared())}
KINDS = tuple(KERNELS)


def get_kernel(kind) -> KernelKind:
    """The registered :class:`KernelKind` named ``kind`` (or ``kind`` itself)."""
    if isinstance(kind, KernelKind):
        return kind
    try:
        return KERNELS[kind]
    except (KeyError, TypeError):
        raise InputError(f"kernel term {kind!r}: use one of {KINDS}") from None


# ---------------------------------------------------------------- sums of terms

class KernelSpec(NamedTuple):
    """Which kernel: a tuple of term kinds (summed) and whether each term is separable.

    Parameters
    ----------
    terms : tuple of str
        Each a key of :data:`KERNELS`; several terms are summed, each with its own
        amplitude and length scale.
    separable : bool
        Product of one-dimensional correlations along y and x instead of a function of
        the Euclidean distance (needed by the Kronecker solver).
    """

    terms: tuple = ("matern52",)
    separable: bool = False

    @property
    def n_terms(self):
        return len(self.terms)

    @property
    def kinds(self):
        """The terms' :class:`KernelKind` objects."""
        return tuple(get_kernel(t) for t in self.terms)


def parse_kernel(text, separable=False):
    """``"matern52"``, ``"matern32+expsquared"`` -> :class:`KernelSpec`; unknown names raise."""
    if isinstance(text, KernelSpec):
        return text
    terms = tuple(t.strip().lower() for t in str(text).split("+"))
    bad = [t for t in terms if t not in KERNELS]
    if bad or not terms:
        raise InputError(f"kernel {text!r}: unknown term(s) {bad}; use {', '.join(KINDS)} or sums like 'matern32+expsquared'")
    return KernelSpec(terms=terms, separable=bool(separable))


def correlation(kind, u):
    """Unit-variance correlation of one term at scaled separation ``u = d / scale >= 0``."""
    return get_kernel(kind).correlation(u)


def spectral_density(kind, omega2, scale, dim):
    """Spectral density of a unit-variance term in ``dim`` dimensions at squared angular
    frequency ``omega2`` (radians per spaxel, squared); see :meth:`KernelKind.spectral_density`."""
    return get_kernel(kind).spectral_density(omega2, scale, dim)


def _safe_norm(d):
    # |d| with a finite gradient at d = 0 (STYLE point 10)
    sq = jnp.sum(d * d, axis=-1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def covariance(spec: KernelSpec, amp, scale, x1, x2):
    """Kernel matrix between point sets ``x1`` (n1, 2) and ``x2`` (n2, 2) in spaxels.

    ``amp`` and ``scale`` have one entry per term of ``spec``.
    """
    amp, scale = jnp.atleast_1d(jnp.asarray(amp)), jnp.atleast_1d(jnp.asarray(scale))
    d = jnp.asarray(x1)[:, None, :] - jnp.asarray(x2)[None, :, :]
    out = 0.0
    for t, kind in enumerate(spec.kinds):
        if spec.separable:
            rho = kind.correlation(jnp.abs(d[..., 0]) / scale[t]) * kind.correlation(jnp.abs(d[..., 1]) / scale[t])
        else:
            rho = kind.correlation(_safe_norm(d) / scale[t])
        out = out + amp[t] ** 2 * rho
    return out


def tinygp_kernel(spec: KernelSpec, amp, scale):
    """The same kernel as a tinygp kernel over 2-D inputs (for the dense solver and tests)."""
    from tinygp import transforms
    from tinygp.kernels.distance import L2Distance

    total = None
    for t, kind in enumerate(spec.kinds):
        cls = kind.tinygp_class
        if spec.separable:
            k = transforms.Subspace(0, cls(scale=scale[t])) * transforms.Subspace(1, cls(scale=scale[t]))
        else:
            k = cls(scale=scale[t], distance=L2Distance())  # tinygp's Matern default is L1
        k = amp[t] ** 2 * k
        total = k if total is None else total + k
    return total
