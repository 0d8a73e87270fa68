"""Hilbert-space (reduced-rank) Gaussian process on the regular spaxel grid.

Solin & Saerkkae (2020, Stat. Comput. 30, 419) approximate a stationary kernel on a box
``[-L_y, L_y] x [-L_x, L_x]`` by the Laplacian's Dirichlet eigenfunctions::

    k(p, q) ~ sum_j S(sqrt(lambda_j)) phi_j(p) phi_j(q)                      (eq. 20)
    phi_j(y) = L^-1/2 sin(pi j (y + L) / (2 L)),  lambda_j = (pi j / (2 L))^2  (eq. 56)

so a field is ``f = Phi (s * u)`` with ``u ~ N(0, I_M)`` and ``s**2`` the spectral
density at the eigenvalues.  On a regular grid the two-dimensional eigenfunctions are
products of one-dimensional ones (``Phi = Phi_y kron Phi_x``), so every product with
``Phi`` costs ``O(N (m_y + m_x))`` and the precision ``I + s Phi^T W Phi s`` of the
weights is ``M x M`` with ``M = m_y m_x``: memory and time grow like the number of
spaxels ``N``, not ``N^2``.  ``Phi^T W Phi`` depends only on the noise weights and is
computed once; each hyperparameter evaluation is one ``M x M`` Cholesky.

The basis size follows Riutort-Mayol et al. (2023, Stat. Comput. 33, 17), Sect. 4:
``m >= c_nu * c * S / scale`` per axis with ``S`` the half-width of the grid, ``c`` the
boundary factor and ``c_nu`` about 1.75 (squared exponential), 2.65 (Matern-5/2), 3.42
(Matern-3/2) (:attr:`cube3d.spatial.kernels.KernelKind.hsgp_c_nu`); tests check the
approximation against the dense kernel.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from .kernels import KernelSpec

__all__ = ["HSGPBasis", "make_basis", "basis_size", "min_scale", "precompute", "log_evidence", "posterior",
           "spectral_weights", "Precomputed"]


class HSGPBasis(NamedTuple):
    """One-dimensional eigenfunctions on each axis of the grid.

    phi_y : (ny, my), phi_x : (nx, mx) eigenfunctions at the spaxel centres;
    lam_y : (my,), lam_x : (mx,) eigenvalues (radians per spaxel, squared).
    """

    phi_y: jax.Array
    phi_x: jax.Array
    lam_y: jax.Array
    lam_x: jax.Array

    @property
    def size(self):
        return self.phi_y.shape[1] * self.phi_x.shape[1]


def basis_size(spec: KernelSpec, shape, min_scale, boundary_factor=1.5):
    """Basis functions per axis (m_y, m_x) that resolve length scales down to ``min_scale``."""
    c_nu = max(k.hsgp_c_nu for k in spec.kinds)
    out = []
    for n in shape:
        half = max((n - 1) / 2.0, 0.5)
        # (1 - 1e-8): at min_scale = the solver's floor the ratio is max_basis up to round-off,
        # which must not round up to max_basis + 1
        out.append(max(int(math.ceil(c_nu * boundary_factor * half / min_scale * (1.0 - 1e-8))), 4))
    return tuple(out)


def min_scale(spec: KernelSpec, shape, max_basis, boundary_factor=1.5):
    """Shortest length scale (spaxels) that ``max_basis`` functions per axis resolve on a
    grid of ``shape`` (the inverse of :func:`basis_size` on the longer axis)."""
    c_nu = max(k.hsgp_c_nu for k in spec.kinds)
    half = max((max(shape) - 1) / 2.0, 0.5)
    return c_nu * boundary_factor * half / max_basis


def _axis(n, m, boundary_factor):
    half = max((n - 1) / 2.0, 0.5)
    big_l = boundary_factor * half
    y = np.arange(n) - (n - 1) / 2.0
    j = np.arange(1, m + 1)
    phi = np.sin(np.pi * j[None, :] * (y[:, None] + big_l) / (2 * big_l)) / np.sqrt(big_l)
    lam = (np.pi * j / (2 * big_l)) ** 2
    return jnp.asarray(phi), jnp.asarray(lam)


def make_basis(shape, m, boundary_factor=1.5):
    """Eigenfunctions for a grid of ``shape`` (ny, nx) with ``m`` (m_y, m_x) per axis."""
    if boundary_factor <= 1.0:
        raise InputError(f"boundary_factor={boundary_factor}: must exceed 1 (the box must contain the grid)")
    phi_y, lam_y = _axis(shape[0], m[0], boundary_factor)
    phi_x, lam_x = _axis(shape[1], m[1], boundary_factor)
    return HSGPBasis(phi_y, phi_x, lam_y, lam_x)


def spectral_weights(spec: KernelSpec, basis: HSGPBasis, amp, scale):
    """``s`` with ``s**2`` the kernel's spectral density at each eigenvalue: (m_y * m_x,)."""
    amp, scale = jnp.atleast_1d(jnp.asarray(amp)), jnp.atleast_1d(jnp.asarray(scale))
    ly, lx = basis.lam_y[:, None], basis.lam_x[None, :]
    total = 0.0
    for t, kind in enumerate(spec.kinds):
        if spec.separable:
            dens = kind.spectral_density(ly, scale[t], 1) * kind.spectral_density(lx, scale[t], 1)
        else:
            dens = kind.spectral_density(ly + lx, scale[t], 2)
        total = total + amp[t] ** 2 * dens
    return jnp.sqrt(total).reshape(-1)


class Precomputed(NamedTuple):
    """Noise-dependent pieces that do not change with the hyperparameters."""

    gram: jax.Array  # (M, M) Phi^T W Phi
    w: jax.Array  # (ny, nx) precisions, 0 = missing
    log_w_sum: jax.Array  # sum of log w over observed spaxels
    n_obs: jax.Array


def precompute(basis: HSGPBasis, w):
    """``Phi^T W Phi`` by two one-dimensional contractions: ``O(ny nx mx^2 + ny M^2)``."""
    w = jnp.asarray(w)
    pxx = basis.phi_x[:, :, None] * basis.phi_x[:, None, :]  # (nx, mx, mx)
    t = jnp.tensordot(w, pxx, axes=(1, 0))  # (ny, mx, mx)
    pyy = basis.phi_y[:, :, None] * basis.phi_y[:, None, :]  # (ny, my, my)
    g = jnp.tensordot(pyy, t, axes=(0, 0))  # (my, my, mx, mx) = [a, c, b, d]
    g = jnp.transpose(g, (0, 2, 1, 3))
    m = basis.size
    obs = w > 0
    return Precomputed(
        gram=g.reshape(m, m),
        w=w,
        log_w_sum=jnp.sum(jnp.where(obs, jnp.log(jnp.where(obs, w, 1.0)), 0.0)),
        n_obs=jnp.sum(obs),
    )


def _project(basis, field):
    """``Phi^T field`` for a (ny, nx) field: (M,)."""
    return (basis.phi_y.T @ field @ basis.phi_x).reshape(-1)


def _expand(basis, coef):
    """``Phi coef`` for coefficients (M,): (ny, nx)."""
    c = coef.reshape(basis.phi_y.shape[1], basis.phi_x.shape[1])
    return basis.phi_y @ c @ basis.phi_x.T


def _factor(pre, s, noise_scale):
    m = s.size
    prec = jnp.eye(m) + s[:, None] * pre.gram * s[None, :] / noise_scale**2
    return jnp.linalg.cholesky(prec)


def log_evidence(spec, basis, pre, amp, scale, resid, noise_scale=1.0):
    """log N(resid | 0, Phi S Phi^T + noise_scale^2 W^-1) over the observed spaxels
    (Woodbury and the matrix determinant lemma in the M-dimensional weight space)."""
    s = spectral_weights(spec, basis, amp, scale)
    chol = _factor(pre, s, noise_scale)
    wr = jnp.where(pre.w > 0, pre.w * resid, 0.0) / noise_scale**2
    b = s * _project(basis, wr)
    v = jax.scipy.linalg.solve_triangular(chol, b, lower=True)
    quad = jnp.sum(wr * resid) - jnp.sum(v * v)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))) - pre.log_w_sum + 2.0 * pre.n_obs * jnp.log(noise_scale)
    return -0.5 * (quad + logdet + pre.n_obs * jnp.log(2.0 * jnp.pi))


def posterior(spec, basis, pre, amp, scale, resid, noise_scale=1.0, chunk=64):
    """Posterior mean and variance of the field (ny, nx) given the residual data.

    The variance is ``diag(Phi B^T B Phi^T)`` with ``B = chol^-1 diag(s)``, summed over
    rows of ``B`` in chunks so memory stays ``O(N chunk)``.
    """
    s = spectral_weights(spec, basis, amp, scale)
    chol = _factor(pre, s, noise_scale)
    wr = jnp.where(pre.w > 0, pre.w * resid, 0.0) / noise_scale**2
    b = s * _project(basis, wr)
    u = jax.scipy.linalg.cho_solve((chol, True), b)
    mean = _expand(basis, s * u)

    m = s.size
    bmat = jax.scipy.linalg.solve_triangular(chol, jnp.diag(s), lower=True)  # (M, M)
    n_chunks = -(-m // chunk)
    bmat = jnp.pad(bmat, ((0, n_chunks * chunk - m), (0, 0))).reshape(n_chunks, chunk, m)
    my, mx = basis.phi_y.shape[1], basis.phi_x.shape[1]

    def add(acc, rows):
        fields = jnp.einsum("ya,kab,xb->kyx", basis.phi_y, rows.reshape(chunk, my, mx), basis.phi_x)
        return acc + jnp.sum(fields * fields, axis=0), None

    var, _ = jax.lax.scan(add, jnp.zeros(pre.w.shape), bmat)
    return mean, var
