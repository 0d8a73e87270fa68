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

The spectral densities (Rasmussen & Williams eqs. 4.15, 4.20) feed the Hilbert-space
approximation (:mod:`cube3d.spatial.hsgp`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

from ..errors import InputError

__all__ = ["KINDS", "KernelSpec", "parse_kernel", "correlation", "covariance", "spectral_density",
           "tinygp_kernel"]

KINDS = ("matern32", "matern52", "expsquared")
_NU = {"matern32": 1.5, "matern52": 2.5}


class KernelSpec(NamedTuple):
    """Which kernel: a tuple of term kinds (summed) and whether each term is separable.

    Parameters
    ----------
    terms : tuple of str
        Each one of :data:`KINDS`; several terms are summed, each with its own amplitude
        and length scale.
    separable : bool
        Product of one-dimensional correlations along y and x instead of a function of
        the Euclidean distance (needed by the Kronecker solver).
    """

    terms: tuple = ("matern52",)
    separable: bool = False

    @property
    def n_terms(self):
        return len(self.terms)


def parse_kernel(text, separable=False):
    """``"matern52"``, ``"matern32+expsquared"`` -> :class:`KernelSpec`; unknown names raise."""
    if isinstance(text, KernelSpec):
        return text
    terms = tuple(t.strip().lower() for t in str(text).split("+"))
    bad = [t for t in terms if t not in KINDS]
    if bad or not terms:
        raise InputError(f"kernel {text!r}: unknown term(s) {bad}; use {', '.join(KINDS)} or sums like 'matern32+expsquared'")
    return KernelSpec(terms=terms, separable=bool(separable))


def correlation(kind, u):
    """Unit-variance correlation of one term at scaled separation ``u = d / scale >= 0``."""
    if kind == "matern32":
        a = jnp.sqrt(3.0) * u
        return (1.0 + a) * jnp.exp(-a)
    if kind == "matern52":
        a = jnp.sqrt(5.0) * u
        return (1.0 + a + a * a / 3.0) * jnp.exp(-a)
    if kind == "expsquared":
        return jnp.exp(-0.5 * u * u)
    raise InputError(f"kernel term {kind!r}: use one of {KINDS}")


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
    for t, kind in enumerate(spec.terms):
        if spec.separable:
            rho = correlation(kind, jnp.abs(d[..., 0]) / scale[t]) * correlation(kind, jnp.abs(d[..., 1]) / scale[t])
        else:
            rho = correlation(kind, _safe_norm(d) / scale[t])
        out = out + amp[t] ** 2 * rho
    return out


def spectral_density(kind, omega2, scale, dim):
    """Spectral density of a unit-variance term in ``dim`` dimensions at squared angular
    frequency ``omega2`` (radians per spaxel, squared).

    Rasmussen & Williams (2006) eq. 4.20 (squared exponential) and eq. 4.15 (Matern),
    normalised so that the density integrates to 1 over d^dim omega / (2 pi)^dim.
    """
    if kind == "expsquared":
        return (2.0 * np.pi) ** (dim / 2.0) * scale**dim * jnp.exp(-0.5 * scale**2 * omega2)
    nu = _NU[kind]
    log_c = (dim * np.log(2.0) + 0.5 * dim * np.log(np.pi) + gammaln(nu + dim / 2.0) - gammaln(nu)
             + nu * np.log(2.0 * nu))
    return jnp.exp(log_c - 2.0 * nu * jnp.log(scale)) * (2.0 * nu / scale**2 + omega2) ** (-(nu + dim / 2.0))


def tinygp_kernel(spec: KernelSpec, amp, scale):
    """The same kernel as a tinygp kernel over 2-D inputs (for the dense solver and tests)."""
    from tinygp import kernels, transforms
    from tinygp.kernels.distance import L2Distance

    classes = {"matern32": kernels.Matern32, "matern52": kernels.Matern52, "expsquared": kernels.ExpSquared}
    total = None
    for t, kind in enumerate(spec.terms):
        cls = classes[kind]
        if spec.separable:
            k = transforms.Subspace(0, cls(scale=scale[t])) * transforms.Subspace(1, cls(scale=scale[t]))
        else:
            k = cls(scale=scale[t], distance=L2Distance())  # tinygp's Matern default is L1
        k = amp[t] ** 2 * k
        total = k if total is None else total + k
    return total
