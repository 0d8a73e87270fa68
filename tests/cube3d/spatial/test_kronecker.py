"""Kronecker solver against tinygp's dense Gaussian process on small grids."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest
from tinygp import GaussianProcess

from cube3d.errors import InputError
from cube3d.spatial.kernels import KINDS, KernelSpec, tinygp_kernel
from cube3d.spatial.kronecker import (
    check_kronecker_inputs,
    is_uniform_full,
    log_likelihood_uniform,
    posterior_mean,
    posterior_std_samples,
)


def grid_points(ny, nx):
    """(y, x) spaxel coordinates in row-major order, matching ``field.reshape(-1)``."""
    yy, xx = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    return jnp.asarray(np.stack([yy.ravel(), xx.ravel()], axis=-1))


def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def dense_kernel(kind, amp, scale):
    return tinygp_kernel(KernelSpec((kind,), separable=True), jnp.atleast_1d(amp), jnp.atleast_1d(scale))


def dense_loglike(kind, amp, scale, noise_var, resid):
    x = grid_points(*resid.shape)
    return GaussianProcess(dense_kernel(kind, amp, scale), x, diag=noise_var).log_probability(resid.reshape(-1))


def dense_posterior(kind, amp, scale, resid, w, obs):
    """Mean and std from tinygp conditioned on the observed spaxels only (``obs`` static)."""
    x = grid_points(*resid.shape)
    idx = np.flatnonzero(obs)
    gp = GaussianProcess(dense_kernel(kind, amp, scale), x[idx], diag=1.0 / w.reshape(-1)[idx])
    post = gp.condition(resid.reshape(-1)[idx], x).gp
    return post.loc.reshape(resid.shape), jnp.sqrt(post.variance).reshape(resid.shape)


@pytest.fixture(scope="module")
def masked_problem():
    """12 x 10 grid, noise sigma varying by a factor 2.4, about 20 per cent masked."""
    rng = np.random.default_rng(1)
    shape = (12, 10)
    resid = jnp.asarray(rng.normal(size=shape))
    w = 100.0 * rng.uniform(0.5, 3.0, size=shape)
    w[rng.uniform(size=shape) < 0.2] = 0.0
    return resid, jnp.asarray(w), w > 0


@pytest.mark.parametrize("kind", KINDS)
def test_log_likelihood_matches_dense(kind):
    resid = jnp.asarray(np.random.default_rng(0).normal(size=(7, 9)))
    args = (1.3, 2.5, 0.2, resid)
    got, want = log_likelihood_uniform(kind, *args), dense_loglike(kind, *args)
    assert abs(got - want) <= 1e-10 * abs(want)


@pytest.mark.parametrize("kind", KINDS)
def test_log_likelihood_gradient_matches_dense(kind):
    resid = jnp.asarray(np.random.default_rng(3).normal(size=(12, 10)))
    args = (0.8, 3.0, 0.3, resid)
    argnums = (0, 1, 2, 3)  # amp, scale, noise_var, resid
    got = jax.grad(lambda *a: log_likelihood_uniform(kind, *a), argnums=argnums)(*args)
    want = jax.grad(lambda *a: dense_loglike(kind, *a), argnums=argnums)(*args)
    for g, h in zip(got, want):
        assert rel(g, h) < 1e-8


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1.5, 4.0])
def test_posterior_mean_matches_dense(kind, scale, masked_problem):
    resid, w, obs = masked_problem
    out = posterior_mean(kind, 2.0, scale, resid, w)
    want, _ = dense_posterior(kind, 2.0, scale, resid, w, obs)
    assert out.residual_norm <= 1e-10 and 0 < out.n_iter < 2000
    assert rel(out.mean, want) < 1e-6


@pytest.mark.parametrize("kind", ["matern32", "expsquared"])
def test_posterior_mean_gradient_matches_dense(kind, masked_problem):
    """Implicit differentiation of the CG solve against autodiff of the dense solve."""
    resid, w, obs = masked_problem
    c = jnp.asarray(np.random.default_rng(5).normal(size=resid.shape))

    def loss(fn):
        return lambda amp, scale, r, ww: jnp.sum(c * fn(amp, scale, r, ww))

    kron = loss(lambda *a: posterior_mean(kind, *a).mean)
    dense = loss(lambda *a: dense_posterior(kind, *a, obs)[0])
    got = jax.grad(kron, argnums=(0, 1, 2, 3))(2.0, 2.5, resid, w)
    want = jax.grad(dense, argnums=(0, 1, 2, 3))(2.0, 2.5, resid, w)
    for g, h in zip(got[:3], want[:3]):
        assert rel(g, h) < 1e-6
    # d mean / d w at a masked spaxel (w = 0) is real, the dense reference just omits it
    assert rel(jnp.where(obs, got[3], 0.0), want[3]) < 1e-6


def test_posterior_std_samples_matches_dense(masked_problem):
    """64 draws: the relative standard error of a sample std is 1/sqrt(2 * 63) = 8.9 per cent
    per spaxel, so the mean absolute deviation should be ~sqrt(2/pi) * 8.9 = 7.1 per cent (we
    allow 15), and the grid-averaged ratio, an average over ~100 partly correlated spaxels,
    should be within a few per cent (we allow 5)."""
    resid, w, obs = masked_problem
    kind, amp, scale = "matern52", 2.0, 2.5
    out = posterior_std_samples(kind, amp, scale, resid, w, jax.random.PRNGKey(0), n_samples=64)
    mean, std = dense_posterior(kind, amp, scale, resid, w, obs)
    ratio = out.std / std
    assert float(jnp.mean(jnp.abs(ratio - 1.0))) < 0.15
    assert abs(float(jnp.mean(ratio)) - 1.0) < 0.05
    # the sample mean scatters about the exact mean by std / sqrt(64)
    z = (out.mean - mean) / (std / 8.0)
    assert float(jnp.sqrt(jnp.mean(z**2))) < 1.5


def test_check_kronecker_inputs():
    w = np.ones((4, 5))
    check_kronecker_inputs(KernelSpec(("matern52",), separable=True), w, need_uniform=True)
    for spec in (KernelSpec(("matern52",), separable=False), KernelSpec(("matern32", "expsquared"), separable=True)):
        with pytest.raises(InputError, match="single separable term.*hsgp"):
            check_kronecker_inputs(spec, w)
    spec = KernelSpec(("expsquared",), separable=True)
    for bad in (np.zeros((4, 5)), -w, np.full((4, 5), np.nan), np.ones(5)):
        with pytest.raises(InputError, match="^w:"):
            check_kronecker_inputs(spec, bad)
    w[0, 0] = 0.0
    check_kronecker_inputs(spec, w)
    with pytest.raises(InputError, match="equal noise on a full grid"):
        check_kronecker_inputs(spec, w, need_uniform=True)
    assert is_uniform_full(np.full((3, 3), 2.0))
    assert not is_uniform_full(w) and not is_uniform_full(np.array([[1.0, 2.0]]))


def test_no_retrace_for_new_values():
    rng = np.random.default_rng(7)
    shape = (5, 6)
    fns = (log_likelihood_uniform, posterior_mean, posterior_std_samples)
    before = [f._cache_size() for f in fns]
    for amp, scale in ((1.0, 2.0), (0.5, 3.5)):
        resid, w = jnp.asarray(rng.normal(size=shape)), jnp.asarray(rng.uniform(1, 2, size=shape))
        log_likelihood_uniform("matern32", amp, scale, 0.1, resid)
        posterior_mean("matern32", amp, scale, resid, w)
        posterior_std_samples("matern32", amp, scale, resid, w, jax.random.PRNGKey(1), n_samples=4)
    assert [f._cache_size() - b for f, b in zip(fns, before)] == [1, 1, 1]
