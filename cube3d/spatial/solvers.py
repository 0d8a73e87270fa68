"""One interface over the GP solvers: log evidence and posterior of a field on the grid.

A :class:`Solver` is built for one field's noise weights ``w`` (ny, nx; 0 = unobserved)
and promises

- :meth:`Solver.log_evidence` ``(amp, scale, resid, noise_scale)``: the log marginal
  likelihood of the residual data about the mean (differentiable),
- :meth:`Solver.posterior` ``(amp, scale, resid, noise_scale)``: mean, variance and
  standard deviation maps of the zero-mean GP part (:class:`FieldPosterior`),
- :attr:`Solver.evidence`: the same log evidence as a pure function and its array state
  (:class:`Evidence`), so that the hyperparameter optimiser compiles its objective once
  per solver class, kernel and grid shape (:mod:`cube3d.spatial.hyper`).

Solvers with a weight-space form ``f = B z``, ``z ~ N(0, I)`` (:class:`WeightSpaceSolver`)
also serve the NUTS tier (:mod:`cube3d.spatial.nuts`).

- :class:`DenseSolver`: tinygp on the observed spaxels, exact; memory ~ 24 N^2 bytes.
- :class:`HSGPSolver`: Hilbert-space reduced rank (:mod:`cube3d.spatial.hsgp`); memory ~ N M.
- :class:`KroneckerSolver`: exact separable kernel; posterior mean by conjugate gradients
  with the Kronecker matrix-vector product, standard deviation by posterior sampling,
  evidence exact on a full grid with equal noise and from the Hilbert-space form of the
  same separable kernel otherwise (:mod:`cube3d.spatial.kronecker`).

:func:`make_solver` picks and builds one from the ``solver`` setting of a
:class:`~cube3d.spatial.config.GPConfig`.
"""

from __future__ import annotations

import abc
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from ..errors import InputError
from . import hsgp, kronecker
from .kernels import KernelSpec, covariance, tinygp_kernel

__all__ = ["Solver", "WeightSpaceSolver", "DenseSolver", "HSGPSolver", "KroneckerSolver", "FieldPosterior",
           "Evidence", "SOLVER_CLASSES", "make_solver", "dense_bytes", "hsgp_min_scale", "JITTER"]

#: on the diagonal of the dense prior covariance in the weight-space form, relative to sum(amp**2)
JITTER = 1e-6


class FieldPosterior(NamedTuple):
    """GP posterior of the zero-mean part of a field: ``mean`` and ``var`` (ny, nx)."""

    mean: jax.Array
    var: jax.Array

    @property
    def std(self):
        """Standard deviation (ny, nx), numpy; negative round-off variances read as 0."""
        return np.sqrt(np.maximum(np.asarray(self.var), 0.0))


class Evidence(NamedTuple):
    """The log evidence as ``fn(spec, state, amp, scale, resid, noise_scale)``: ``fn`` a
    module-level function (static under jit), ``state`` a pytree of arrays."""

    fn: Callable
    state: object


def dense_bytes(n):
    """Approximate peak memory of the dense solver for ``n`` observed spaxels (bytes)."""
    return 24.0 * float(n) ** 2


def hsgp_min_scale(spec: KernelSpec, shape, config):
    """Shortest length scale (spaxels) that ``config.max_basis`` functions per axis resolve."""
    return hsgp.min_scale(spec, shape, config.max_basis, config.boundary_factor)


# ---------------------------------------------------------------- the interface

class Solver(abc.ABC):
    """Log evidence and posterior of one field's GP, for fixed noise weights.

    Parameters common to the methods: ``amp``, ``scale`` (n_terms,) kernel amplitudes
    (data units) and length scales (spaxels); ``resid`` (ny, nx) data minus mean (ignored
    where unobserved); ``noise_scale`` a factor on the per-spaxel errors.
    """

    #: short name, as in ``GPConfig.solver`` and the maps header
    name: str

    @abc.abstractmethod
    def log_evidence(self, amp, scale, resid, noise_scale=1.0):
        """``log N(resid_obs | 0, K + noise_scale^2 W^-1)`` (Rasmussen & Williams 2006 eq. 2.30)."""

    @abc.abstractmethod
    def posterior(self, amp, scale, resid, noise_scale=1.0) -> FieldPosterior:
        """Posterior mean and variance of the zero-mean field on the whole grid
        (Rasmussen & Williams 2006 eqs. 2.22-2.24)."""

    @property
    @abc.abstractmethod
    def evidence(self) -> Evidence:
        """:meth:`log_evidence` as a pure function and its array state (for jit)."""


class WeightSpaceSolver(Solver):
    """A solver whose field has a weight-space form ``f = B z``, ``z ~ N(0, I_size)``.

    Subclasses give ``B`` (:meth:`prior_factor`) and its products; the posterior of
    ``z`` and the marginal likelihood follow here (Woodbury; Rasmussen & Williams 2006
    eqs. 2.8, 2.30 in weight space).
    """

    @property
    @abc.abstractmethod
    def latent_size(self) -> int:
        """Length of ``z``."""

    @abc.abstractmethod
    def prior_factor(self, amp, scale):
        """``B`` in whatever form :meth:`apply_factor` takes."""

    @abc.abstractmethod
    def apply_factor(self, fac, z):
        """``B z`` as a (ny, nx) map."""

    @abc.abstractmethod
    def transpose_apply(self, fac, v):
        """``B^T v`` for a (ny, nx) map ``v``: (latent_size,)."""

    @abc.abstractmethod
    def weighted_gram(self, fac, wn, noise_scale):
        """``B^T W B / noise_scale^2`` with ``wn = W / noise_scale^2`` the scaled precisions."""

    def posterior_weights(self, amp, scale, noise_scale, c, y, w):
        """``(B, chol(P), b, wn, r)``: ``P = I + B^T D^-1 B``, ``b = B^T D^-1 (y - c)``,
        ``D = noise_scale^2 diag(1 / w)``, ``r`` the masked residual."""
        fac = self.prior_factor(amp, scale)
        obs = w > 0
        wn = w / noise_scale**2
        r = jnp.where(obs, y - c, 0.0)
        prec = jnp.eye(self.latent_size) + self.weighted_gram(fac, wn, noise_scale)
        return fac, jnp.linalg.cholesky(prec), self.transpose_apply(fac, wn * r), wn, r

    def log_marginal(self, amp, scale, noise_scale, c, y, w):
        """``log N(y_obs | c, B B^T + D)`` by Woodbury and the determinant lemma:
        ``log|B B^T + D| = log|D| + log|P|``, ``r^T (B B^T + D)^-1 r = r^T D^-1 r - b^T P^-1 b``."""
        fac, cp, b, wn, r = self.posterior_weights(amp, scale, noise_scale, c, y, w)
        v = solve_triangular(cp, b, lower=True)
        quad = jnp.sum(wn * r * r) - v @ v
        obs = w > 0
        log_w = jnp.sum(jnp.where(obs, jnp.log(jnp.where(obs, wn, 1.0)), 0.0))
        n_obs = jnp.sum(obs)
        return -0.5 * (quad + 2.0 * jnp.sum(jnp.log(jnp.diagonal(cp))) - log_w + n_obs * jnp.log(2.0 * jnp.pi))


# ---------------------------------------------------------------- dense (tinygp)

def _dense_evidence(spec, state, amp, scale, resid, noise_scale):
    from tinygp import GaussianProcess

    points, noise, index = state
    gp = GaussianProcess(tinygp_kernel(spec, amp, scale), points, diag=noise * noise_scale**2)
    return gp.log_probability(resid.reshape(-1)[index])


# the same, compiled once per kernel and number of observed spaxels (called eagerly it
# compiled every array operation of tinygp's kernel for each new number of spaxels)
_dense_evidence_jit = jax.jit(_dense_evidence, static_argnames=("spec",))


@functools.partial(jax.jit, static_argnames=("spec",))
def _dense_posterior(spec, state, amp, scale, resid, noise_scale):
    """Posterior mean and variance on the whole grid (Rasmussen & Williams 2006 eqs.
    2.23-2.24 by tinygp's ``condition``); jitted once per kernel and grid shape."""
    from tinygp import GaussianProcess

    points, noise, index, grid = state
    gp = GaussianProcess(tinygp_kernel(spec, amp, scale), points, diag=noise * noise_scale**2)
    cond = gp.condition(resid.reshape(-1)[index], grid).gp
    return cond.loc, cond.variance


class DenseSolver(WeightSpaceSolver):
    """Exact GP by tinygp on the observed spaxels; weight space ``B = chol(K + jitter I)``
    over the whole grid."""

    name = "dense"

    def __init__(self, spec: KernelSpec, shape, w):
        ny, nx = shape
        yy, xx = np.mgrid[:ny, :nx]
        self.points = jnp.asarray(np.c_[yy.ravel(), xx.ravel()], dtype=float)
        self.obs = np.asarray(w).ravel() > 0
        self.obs_idx = np.flatnonzero(self.obs)
        self.noise = jnp.asarray(1.0 / np.asarray(w).ravel()[self.obs])
        self.spec, self.shape = spec, tuple(shape)
        # a module-level function and array state: the optimiser's compiled objective is reused
        self._evidence = Evidence(_dense_evidence, (self.points[self.obs], self.noise, jnp.asarray(self.obs_idx)))

    @property
    def evidence(self):
        return self._evidence

    def log_evidence(self, amp, scale, resid, noise_scale=1.0):
        return _dense_evidence_jit(self.spec, self._evidence.state, jnp.asarray(amp, dtype=float),
                                   jnp.asarray(scale, dtype=float), jnp.asarray(resid, dtype=float),
                                   jnp.asarray(noise_scale, dtype=float))

    def posterior(self, amp, scale, resid, noise_scale=1.0):
        state = self._evidence.state + (self.points,)
        mean, var = _dense_posterior(self.spec, state, jnp.asarray(amp, dtype=float), jnp.asarray(scale, dtype=float),
                                     jnp.asarray(resid, dtype=float), jnp.asarray(noise_scale, dtype=float))
        return FieldPosterior(mean.reshape(self.shape), var.reshape(self.shape))

    @property
    def latent_size(self):
        return self.shape[0] * self.shape[1]

    def prior_factor(self, amp, scale):
        k = covariance(self.spec, amp, scale, self.points, self.points)
        return jnp.linalg.cholesky(k + JITTER * jnp.sum(amp**2) * jnp.eye(self.latent_size))

    def apply_factor(self, fac, z):
        return (fac @ z).reshape(self.shape)

    def transpose_apply(self, fac, v):
        return fac.T @ v.reshape(-1)

    def weighted_gram(self, fac, wn, noise_scale):
        return fac.T @ (wn.reshape(-1)[:, None] * fac)

    def log_marginal(self, amp, scale, noise_scale, c, y, w):
        """One Cholesky of the observed block of ``K + jitter I + D``."""
        idx = self.obs_idx
        pts = self.points[idx]
        k = covariance(self.spec, amp, scale, pts, pts)
        d = noise_scale**2 / w.reshape(-1)[idx]
        chol = jnp.linalg.cholesky(k + jnp.diag(JITTER * jnp.sum(amp**2) + d))
        v = solve_triangular(chol, y.reshape(-1)[idx] - c, lower=True)
        return -0.5 * (v @ v + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol))) + idx.size * jnp.log(2.0 * jnp.pi))


# ---------------------------------------------------------------- Hilbert space

def _hsgp_evidence(spec, state, amp, scale, resid, noise_scale):
    basis, pre = state
    return hsgp.log_evidence(spec, basis, pre, amp, scale, resid, noise_scale)


#: :func:`hsgp.posterior` compiled once per kernel and basis shape (the integration over
#: the hyperparameters calls it at every design point)
_hsgp_posterior = jax.jit(hsgp.posterior, static_argnames=("spec", "chunk"))


class HSGPSolver(WeightSpaceSolver):
    """Hilbert-space reduced-rank GP resolving length scales down to ``min_scale``;
    weight space ``B = Phi diag(s)`` (Solin & Saerkkae 2020 eq. 20)."""

    name = "hsgp"

    def __init__(self, spec: KernelSpec, shape, w, min_scale, boundary_factor):
        m = hsgp.basis_size(spec, shape, min_scale, boundary_factor)
        self.basis = hsgp.make_basis(shape, m, boundary_factor)
        self.pre = hsgp.precompute(self.basis, jnp.asarray(w))
        self.spec, self.shape = spec, tuple(shape)

    @property
    def evidence(self):
        return Evidence(_hsgp_evidence, (self.basis, self.pre))

    def log_evidence(self, amp, scale, resid, noise_scale=1.0):
        return hsgp.log_evidence(self.spec, self.basis, self.pre, amp, scale, resid, noise_scale)

    def posterior(self, amp, scale, resid, noise_scale=1.0):
        return FieldPosterior(*_hsgp_posterior(self.spec, self.basis, self.pre, jnp.asarray(amp, dtype=float),
                                               jnp.asarray(scale, dtype=float), jnp.asarray(resid, dtype=float),
                                               jnp.asarray(noise_scale, dtype=float)))

    @property
    def latent_size(self):
        return self.basis.size

    def prior_factor(self, amp, scale):
        return hsgp.spectral_weights(self.spec, self.basis, amp, scale)

    def apply_factor(self, fac, z):
        b = self.basis
        return b.phi_y @ (fac * z).reshape(b.phi_y.shape[1], b.phi_x.shape[1]) @ b.phi_x.T

    def transpose_apply(self, fac, v):
        b = self.basis
        return fac * (b.phi_y.T @ v @ b.phi_x).reshape(-1)

    def weighted_gram(self, fac, wn, noise_scale):
        return fac[:, None] * self.pre.gram * fac[None, :] / noise_scale**2


# ---------------------------------------------------------------- Kronecker

def _kron_uniform_evidence(spec, state, amp, scale, resid, noise_scale):
    return kronecker.log_likelihood_uniform(spec.terms[0], amp[0], scale[0], state * noise_scale**2, resid)


class KroneckerSolver(Solver):
    """Exact single-term separable GP on the full grid (:mod:`cube3d.spatial.kronecker`)."""

    name = "kronecker"

    def __init__(self, spec: KernelSpec, shape, w, min_scale, boundary_factor, seed=0):
        kronecker.check_kronecker_inputs(spec, np.asarray(w))
        self.spec, self.kind = spec, spec.terms[0]
        self.w = jnp.asarray(w)
        self.uniform = bool(kronecker.is_uniform_full(np.asarray(w)))
        self.noise_var = float(1.0 / np.asarray(w).ravel()[0]) if self.uniform else None
        self.evidence_proxy = None if self.uniform else HSGPSolver(spec, shape, w, min_scale, boundary_factor)
        self.key = jax.random.PRNGKey(seed)

    @property
    def evidence(self):
        if self.uniform:
            return Evidence(_kron_uniform_evidence, jnp.asarray(self.noise_var))
        return self.evidence_proxy.evidence

    def log_evidence(self, amp, scale, resid, noise_scale=1.0):
        if self.uniform:
            return kronecker.log_likelihood_uniform(self.kind, amp[0], scale[0], self.noise_var * noise_scale**2, resid)
        return self.evidence_proxy.log_evidence(amp, scale, resid, noise_scale)

    def posterior(self, amp, scale, resid, noise_scale=1.0):
        w = self.w / noise_scale**2
        mean = kronecker.posterior_mean(self.kind, amp[0], scale[0], resid, w)[0]
        std = kronecker.posterior_std_samples(self.kind, amp[0], scale[0], resid, w, self.key).std
        return FieldPosterior(mean, std**2)


#: name -> class, in the order of ``GPConfig.solver`` (after ``"auto"``)
SOLVER_CLASSES = {cls.name: cls for cls in (DenseSolver, HSGPSolver, KroneckerSolver)}


def make_solver(name, spec: KernelSpec, shape, w, config, min_scale) -> Solver:
    """Build the solver ``name`` (``auto``, ``dense``, ``hsgp``, ``kronecker``) for one field.

    Raises :class:`~cube3d.errors.InputError` with the solver to use instead when the
    dense solver would need more than ``config.max_dense`` spaxels, or when the Hilbert
    basis cannot resolve ``min_scale``.
    """
    n_obs = int(np.sum(np.asarray(w) > 0))
    if n_obs == 0:
        raise InputError("gp: every spaxel of the field is masked (no finite per-spaxel fit with a positive error)")
    if name == "auto":
        name = "dense" if n_obs <= config.max_dense else "hsgp"
    if name == "dense":
        if n_obs > config.max_dense:
            raise InputError(
                f"gp solver 'dense': {n_obs} spaxels need about {dense_bytes(n_obs) / 2**30:.1f} GiB "
                f"(limit max_dense={config.max_dense}); use solver='hsgp' (any kernel) or 'kronecker' (separable)")
        return DenseSolver(spec, shape, w)
    if name == "hsgp":
        floor = hsgp_min_scale(spec, shape, config)
        if min_scale < floor * (1 - 1e-9):
            raise InputError(
                f"gp solver 'hsgp': length scales down to {min_scale:.3g} spaxels need more than max_basis="
                f"{config.max_basis} basis functions per axis on a {shape[0]}x{shape[1]} grid (floor {floor:.3g}); "
                "raise the scale minimum or max_basis, or use solver='kronecker' (separable) or 'dense' (N <= max_dense)")
        return HSGPSolver(spec, shape, w, min_scale, config.boundary_factor)
    if name == "kronecker":
        return KroneckerSolver(spec, shape, w, max(min_scale, hsgp_min_scale(spec, shape, config)),
                               config.boundary_factor, config.seed)
    raise InputError(f"gp solver {name!r}: use auto, {', '.join(SOLVER_CLASSES)}")
