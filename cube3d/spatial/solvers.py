"""One interface over the GP solvers: log evidence and posterior of a field on the grid.

Each solver is built for one field's noise weights ``w`` (ny, nx; 0 = unobserved) and
offers ``log_evidence(amp, scale, resid)`` (differentiable; the log marginal likelihood
of the residual data about the mean) and ``posterior(amp, scale, resid)`` (mean and
variance maps of the zero-mean GP part).

- ``dense``: tinygp on the observed spaxels, exact; memory ~ 24 N^2 bytes.
- ``hsgp``: Hilbert-space reduced rank (:mod:`cube3d.spatial.hsgp`); memory ~ N M.
- ``kronecker``: exact separable kernel; posterior mean by conjugate gradients with the
  Kronecker matrix-vector product, standard deviation by posterior sampling, evidence
  exact on a full grid with equal noise and from the Hilbert-space form of the same
  separable kernel otherwise (:mod:`cube3d.spatial.kronecker`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from . import hsgp
from .kernels import KernelSpec, tinygp_kernel

__all__ = ["make_solver", "dense_bytes", "hsgp_min_scale"]


def dense_bytes(n):
    """Approximate peak memory of the dense solver for ``n`` observed spaxels (bytes)."""
    return 24.0 * float(n) ** 2


def hsgp_min_scale(spec: KernelSpec, shape, config):
    """Shortest length scale (spaxels) that ``config.max_basis`` functions per axis resolve."""
    c_nu = max(hsgp._C_NU[k] for k in spec.terms)
    half = max((max(shape) - 1) / 2.0, 0.5)
    return c_nu * config.boundary_factor * half / config.max_basis


def _dense_evidence(spec, state, amp, scale, resid, noise_scale):
    from tinygp import GaussianProcess

    points, noise, index = state
    gp = GaussianProcess(tinygp_kernel(spec, amp, scale), points, diag=noise * noise_scale**2)
    return gp.log_probability(resid.reshape(-1)[index])


def _hsgp_evidence(spec, state, amp, scale, resid, noise_scale):
    basis, pre = state
    return hsgp.log_evidence(spec, basis, pre, amp, scale, resid, noise_scale)


def _kron_uniform_evidence(spec, state, amp, scale, resid, noise_scale):
    from . import kronecker

    return kronecker.log_likelihood_uniform(spec.terms[0], amp[0], scale[0], state * noise_scale**2, resid)


class DenseSolver:
    name = "dense"

    def __init__(self, spec, shape, w):
        ny, nx = shape
        yy, xx = np.mgrid[:ny, :nx]
        self.points = jnp.asarray(np.c_[yy.ravel(), xx.ravel()], dtype=float)
        self.obs = np.asarray(w).ravel() > 0
        self.noise = jnp.asarray(1.0 / np.asarray(w).ravel()[self.obs])
        self.spec, self.shape = spec, shape
        # a module-level function and array state: the optimiser's compiled objective is reused
        self.evidence = (_dense_evidence, (self.points[self.obs], self.noise, jnp.asarray(np.flatnonzero(self.obs))))

    def _gp(self, amp, scale, noise_scale):
        from tinygp import GaussianProcess

        return GaussianProcess(tinygp_kernel(self.spec, amp, scale), self.points[self.obs],
                               diag=self.noise * noise_scale**2)

    def log_evidence(self, amp, scale, resid, noise_scale=1.0):
        return self._gp(amp, scale, noise_scale).log_probability(resid.reshape(-1)[self.obs])

    def posterior(self, amp, scale, resid, noise_scale=1.0):
        cond = self._gp(amp, scale, noise_scale).condition(resid.reshape(-1)[self.obs], self.points).gp
        return cond.loc.reshape(self.shape), cond.variance.reshape(self.shape)


class HSGPSolver:
    name = "hsgp"

    def __init__(self, spec, shape, w, min_scale, boundary_factor):
        m = hsgp.basis_size(spec, shape, min_scale, boundary_factor)
        self.basis = hsgp.make_basis(shape, m, boundary_factor)
        self.pre = hsgp.precompute(self.basis, jnp.asarray(w))
        self.spec = spec
        self.evidence = (_hsgp_evidence, (self.basis, self.pre))

    def log_evidence(self, amp, scale, resid, noise_scale=1.0):
        return hsgp.log_evidence(self.spec, self.basis, self.pre, amp, scale, resid, noise_scale)

    def posterior(self, amp, scale, resid, noise_scale=1.0):
        return hsgp.posterior(self.spec, self.basis, self.pre, amp, scale, resid, noise_scale)


class KroneckerSolver:
    name = "kronecker"

    def __init__(self, spec, shape, w, min_scale, boundary_factor, seed=0):
        from . import kronecker

        kronecker.check_kronecker_inputs(spec, np.asarray(w))
        self.kron = kronecker
        self.spec, self.kind = spec, spec.terms[0]
        self.w = jnp.asarray(w)
        self.uniform = bool(kronecker.is_uniform_full(np.asarray(w)))
        self.noise_var = float(1.0 / np.asarray(w).ravel()[0]) if self.uniform else None
        self.evidence_proxy = None if self.uniform else HSGPSolver(spec, shape, w, min_scale, boundary_factor)
        self.key = jax.random.PRNGKey(seed)
        self.evidence = ((_kron_uniform_evidence, jnp.asarray(self.noise_var)) if self.uniform
                         else self.evidence_proxy.evidence)

    def log_evidence(self, amp, scale, resid, noise_scale=1.0):
        if self.uniform:
            return self.kron.log_likelihood_uniform(self.kind, amp[0], scale[0], self.noise_var * noise_scale**2, resid)
        return self.evidence_proxy.log_evidence(amp, scale, resid, noise_scale)

    def posterior(self, amp, scale, resid, noise_scale=1.0):
        w = self.w / noise_scale**2
        mean = self.kron.posterior_mean(self.kind, amp[0], scale[0], resid, w)[0]
        std = self.kron.posterior_std_samples(self.kind, amp[0], scale[0], resid, w, self.key).std
        return mean, std**2


def make_solver(name, spec: KernelSpec, shape, w, config, min_scale):
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
    raise InputError(f"gp solver {name!r}: use auto, dense, hsgp or kronecker")
