"""Hilbert-space reduced-rank GP (Solin & Saerkkae 2020) against tinygp's dense GP.

Measured on the 14 x 12 problem below (data drawn from the prior plus unequal noise,
about 20 per cent masked, amp 1.5, scale 3 spaxels, boundary factor 2.5), relative error
of the log evidence:

- squared exponential, m = 30 per axis: 3.7e-9 (the floor set by the boundary; the same
  at m = 25 and 40);
- Matern-5/2, m = 80 per axis: 8.0e-7 (m = 60: 2.0e-6, m = 100: 3.5e-7);
- Matern-3/2, m = 12 / 24 / 48 per axis: 1.2e-2 / 1.2e-3 / 8.2e-5 (algebraic spectral tail:
  1e-6 is out of reach at feasible m).

Posterior (m = 30 squared exponential, m = 40 Matern-5/2): mean 8e-8 / 2.2e-4 of max |mean|,
variance 1.0e-6 / 2.0e-3 relative.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from tinygp import GaussianProcess

from cube3d.errors import InputError
from cube3d.spatial import hsgp
from cube3d.spatial.kernels import KernelSpec, covariance, tinygp_kernel

SHAPE = (14, 12)
AMP, SCALE = 1.5, 3.0


def grid_points(ny, nx):
    yy, xx = np.mgrid[:ny, :nx]
    return jnp.asarray(np.c_[yy.ravel(), xx.ravel()], dtype=float)


def make_problem(spec, seed=3, shape=SHAPE, amp=AMP, scale=SCALE):
    """Residuals drawn from the GP prior plus noise (sd 0.58-1.8), ~20% masked."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.3, 3.0, size=shape)
    w[rng.uniform(size=shape) < 0.2] = 0.0
    x = grid_points(*shape)
    k = np.asarray(covariance(spec, [amp], [scale], x, x))
    f = np.linalg.cholesky(k + 1e-10 * np.eye(len(k))) @ rng.normal(size=len(k))
    noise = rng.normal(size=len(k)) / np.sqrt(np.where(w.ravel() > 0, w.ravel(), 1.0))
    return jnp.asarray(w), jnp.asarray((f + noise).reshape(shape))


def dense_gp(spec, w, amp=AMP, scale=SCALE):
    x = grid_points(*w.shape)
    obs = np.asarray(w).ravel() > 0
    gp = GaussianProcess(tinygp_kernel(spec, jnp.atleast_1d(amp), jnp.atleast_1d(scale)), x[obs],
                         diag=1.0 / np.asarray(w).ravel()[obs])
    return gp, obs, x


def dense_log_evidence(spec, w, r):
    gp, obs, _ = dense_gp(spec, w)
    return float(gp.log_probability(r.ravel()[obs]))


def hsgp_log_evidence(spec, w, r, m, bf=2.5):
    basis = hsgp.make_basis(w.shape, (m, m), bf)
    pre = hsgp.precompute(basis, w)
    return float(hsgp.log_evidence(spec, basis, pre, jnp.asarray([AMP]), jnp.asarray([SCALE]), r))


def rel_err(spec, m, seed=3):
    w, r = make_problem(spec, seed)
    ref = dense_log_evidence(spec, w, r)
    return abs(hsgp_log_evidence(spec, w, r, m) - ref) / abs(ref)


@pytest.mark.parametrize("separable", [False, True])
def test_log_evidence_expsquared(separable):
    err = rel_err(KernelSpec(("expsquared",), separable), 30)
    assert err < 5e-8, err  # measured 3.7e-9 (isotropic)


def test_log_evidence_matern52():
    err = rel_err(KernelSpec(("matern52",), False), 80)
    assert err < 1e-6, err  # measured 8.0e-7


def test_log_evidence_matern32_converges():
    spec = KernelSpec(("matern32",), False)
    w, r = make_problem(spec)
    ref = dense_log_evidence(spec, w, r)
    errs = [abs(hsgp_log_evidence(spec, w, r, m) - ref) / abs(ref) for m in (12, 24, 48)]
    # measured 1.2e-2, 1.2e-3, 8.2e-5: each doubling of m gains at least a factor 4
    assert errs[1] < errs[0] / 4 and errs[2] < errs[1] / 4, errs
    assert errs[2] < 2e-4, errs


def test_sum_of_terms():
    spec = KernelSpec(("matern52", "expsquared"), False)
    w, r = make_problem(KernelSpec(("expsquared",), False), seed=5)
    amp, scale = jnp.asarray([0.5, 1.5]), jnp.asarray([4.0, 3.0])
    gp, obs, _ = dense_gp(spec, w, amp, scale)
    ref = float(gp.log_probability(r.ravel()[obs]))
    basis = hsgp.make_basis(SHAPE, (30, 30), 2.5)
    val = float(hsgp.log_evidence(spec, basis, hsgp.precompute(basis, w), amp, scale, r))
    assert abs(val - ref) / abs(ref) < 2e-5, (val, ref)


def test_noise_scale_is_a_factor_on_the_errors():
    # noise_scale multiplies every error: the same as dense with diag = noise_scale^2 / w
    spec = KernelSpec(("expsquared",), False)
    w, r = make_problem(spec)
    basis = hsgp.make_basis(SHAPE, (25, 25), 2.5)
    pre = hsgp.precompute(basis, w)
    a, s = jnp.asarray([AMP]), jnp.asarray([SCALE])
    gp, obs, x = dense_gp(spec, w / 1.7**2)
    ref = float(gp.log_probability(r.ravel()[obs]))
    assert abs(float(hsgp.log_evidence(spec, basis, pre, a, s, r, 1.7)) - ref) / abs(ref) < 5e-8
    cond = gp.condition(r.ravel()[obs], x).gp
    mean, var = hsgp.posterior(spec, basis, pre, a, s, r, 1.7)
    np.testing.assert_allclose(mean, cond.loc.reshape(SHAPE), atol=1e-6 * float(jnp.max(jnp.abs(cond.loc))))
    np.testing.assert_allclose(var, cond.variance.reshape(SHAPE), rtol=1e-5)
    check_grads(jax.jit(lambda n: hsgp.log_evidence(spec, basis, pre, a, s, r, n)), (1.3,), order=1, modes=("rev",))


@pytest.mark.parametrize("kind, m, tol_mean, tol_var", [("expsquared", 30, 1e-6, 1e-5),
                                                         ("matern52", 40, 5e-4, 5e-3)])
def test_posterior_matches_dense(kind, m, tol_mean, tol_var):
    spec = KernelSpec((kind,), False)
    w, r = make_problem(spec)
    gp, obs, x = dense_gp(spec, w)
    cond = gp.condition(r.ravel()[obs], x).gp
    mean_ref, var_ref = cond.loc.reshape(SHAPE), cond.variance.reshape(SHAPE)
    basis = hsgp.make_basis(SHAPE, (m, m), 2.5)
    mean, var = hsgp.posterior(spec, basis, hsgp.precompute(basis, w), jnp.asarray([AMP]), jnp.asarray([SCALE]), r)
    assert mean.shape == var.shape == SHAPE
    assert float(jnp.max(jnp.abs(mean - mean_ref)) / jnp.max(jnp.abs(mean_ref))) < tol_mean
    assert float(jnp.max(jnp.abs(var - var_ref) / var_ref)) < tol_var
    # masked spaxels are predicted with more uncertainty than the average observed one
    masked = ~np.asarray(obs).reshape(SHAPE)
    assert float(jnp.mean(var[masked])) > float(jnp.mean(var[~masked]))


def test_precompute_gram_and_shapes():
    shape, m = (7, 5), (6, 4)
    w, _ = make_problem(KernelSpec(("expsquared",), False), shape=shape)
    basis = hsgp.make_basis(shape, m, 1.5)
    assert basis.phi_y.shape == (7, 6) and basis.phi_x.shape == (5, 4) and basis.size == 24
    pre = hsgp.precompute(basis, w)
    phi = np.kron(np.asarray(basis.phi_y), np.asarray(basis.phi_x))  # (N, M), row-major grid
    np.testing.assert_allclose(pre.gram, phi.T @ (np.asarray(w).ravel()[:, None] * phi), rtol=1e-12, atol=1e-13)
    assert pre.gram.shape == (24, 24)
    assert int(pre.n_obs) == int(np.sum(np.asarray(w) > 0))
    # eigenvalues of the 1-D Dirichlet Laplacian on [-L, L] (Solin & Saerkkae eq. 56), L = 1.5 * 3
    np.testing.assert_allclose(basis.lam_y, (np.pi * np.arange(1, 7) / (2 * 4.5)) ** 2, rtol=1e-14)


def test_low_rank_kernel_approximates_dense_kernel():
    # Phi diag(s^2) Phi^T ~ K (Solin & Saerkkae eq. 20) for the isotropic and separable forms
    shape = (9, 8)
    x = grid_points(*shape)
    basis = hsgp.make_basis(shape, (40, 40), 3.0)
    phi = np.kron(np.asarray(basis.phi_y), np.asarray(basis.phi_x))
    for sep in (False, True):
        spec = KernelSpec(("expsquared",), sep)
        s = np.asarray(hsgp.spectral_weights(spec, basis, jnp.asarray([2.0]), jnp.asarray([2.0])))
        k_hat = (phi * s**2) @ phi.T
        np.testing.assert_allclose(k_hat, covariance(spec, [2.0], [2.0], x, x), atol=1e-8)


def _largest_intermediate(jaxpr):
    size = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            size = max(size, int(np.prod(v.aval.shape)) if hasattr(v.aval, "shape") else 0)
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else [p]):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    size = max(size, _largest_intermediate(getattr(inner, "jaxpr", inner)))
    return size


def test_memory_scales_with_n_not_n_squared():
    shape, m = (60, 50), (12, 12)
    n, big_m = 3000, 144
    spec = KernelSpec(("matern52",), False)
    basis = hsgp.make_basis(shape, m, 1.5)
    w = jnp.ones(shape)
    r = jnp.zeros(shape)
    pre_jaxpr = jax.make_jaxpr(hsgp.precompute)(basis, w)
    pre = hsgp.precompute(basis, w)
    ev_jaxpr = jax.make_jaxpr(lambda a, s: hsgp.log_evidence(spec, basis, pre, a, s, r))(jnp.ones(1), jnp.ones(1))
    post_jaxpr = jax.make_jaxpr(lambda a, s: hsgp.posterior(spec, basis, pre, a, s, r))(jnp.ones(1), jnp.ones(1))
    for jp in (pre_jaxpr, ev_jaxpr, post_jaxpr):
        biggest = _largest_intermediate(jp.jaxpr)
        # nothing N x N (9e6); at most M^2 or a chunk of 64 fields
        assert biggest <= max(big_m**2, 64 * n, 60 * 12 * 12), biggest


def test_large_grid_runs():
    shape = (300, 300)
    spec = KernelSpec(("matern52",), False)
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.uniform(0.5, 2.0, size=shape))
    r = jnp.asarray(np.sin(np.arange(300) / 20.0)[:, None] * np.cos(np.arange(300) / 25.0)[None, :])
    m = hsgp.basis_size(spec, shape, min_scale=60.0, boundary_factor=1.5)
    basis = hsgp.make_basis(shape, m, 1.5)
    pre = hsgp.precompute(basis, w)
    assert pre.gram.shape == (basis.size, basis.size)
    ev = hsgp.log_evidence(spec, basis, pre, jnp.asarray([1.0]), jnp.asarray([60.0]), r)
    mean, var = hsgp.posterior(spec, basis, pre, jnp.asarray([1.0]), jnp.asarray([60.0]), r)
    assert np.isfinite(float(ev)) and mean.shape == shape and np.all(np.asarray(var) > 0)
    # smooth signal with noise sd <= 1.4: the posterior mean recovers it
    assert float(jnp.sqrt(jnp.mean((mean - r) ** 2))) < 0.05


@pytest.mark.parametrize("spec", [KernelSpec(("matern52",), False), KernelSpec(("expsquared",), True),
                                  KernelSpec(("matern32", "expsquared"), False)], ids=str)
def test_log_evidence_gradient(spec):
    w, r = make_problem(KernelSpec(("expsquared",), False), seed=7)
    basis = hsgp.make_basis(SHAPE, (12, 12), 2.0)
    pre = hsgp.precompute(basis, w)
    amp = jnp.asarray([1.3, 0.4][: spec.n_terms])
    scale = jnp.asarray([2.5, 5.0][: spec.n_terms])
    check_grads(jax.jit(lambda a, s: hsgp.log_evidence(spec, basis, pre, a, s, r)), (amp, scale), order=1,
                modes=("rev",))


def test_basis_size_and_bad_boundary():
    spec = KernelSpec(("matern52",), False)
    # Riutort-Mayol et al. 2023: m = ceil(c_nu * c * S / scale), S the half-width
    assert hsgp.basis_size(spec, (21, 11), 2.0, 1.5) == (int(np.ceil(2.65 * 1.5 * 10 / 2.0)), 10)
    assert hsgp.basis_size(KernelSpec(("expsquared", "matern32")), (3, 3), 100.0) == (4, 4)
    with pytest.raises(InputError, match="boundary_factor"):
        hsgp.make_basis((5, 5), (4, 4), 1.0)


def test_basis_at_the_solver_floor_respects_max_basis():
    # regression: at min_scale = hsgp_min_scale(...) round-off gave max_basis + 1 functions
    from cube3d.spatial.config import GPConfig
    from cube3d.spatial.solvers import hsgp_min_scale

    for kind in ("matern32", "matern52", "expsquared"):
        spec = KernelSpec((kind,), False)
        for n in (8, 14, 15, 31, 77, 150):
            for max_basis, bf in ((36, 1.5), (50, 2.5), (100, 1.2)):
                floor = hsgp_min_scale(spec, (n, n), GPConfig(max_basis=max_basis, boundary_factor=bf))
                m = hsgp.basis_size(spec, (n, n), floor * (1 - 1e-9), bf)
                assert max(m) <= max(max_basis, 4), (kind, n, max_basis, bf, m)
                assert max(m) >= max_basis - 1 or max(m) == 4
