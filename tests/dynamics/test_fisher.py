"""Fisher forecasts: closed forms, expected vs observed information, NUTS posterior widths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import NFW, ConstantBeta, Plummer
from dynamics.fisher import expected_fisher_gaussian, fisher_forecast, observed_fisher
from dynamics.inference import (
    CONSTANT_BETA,
    NFW_HALO,
    ModelConfig,
    StarData,
    fit_nuts,
    member_variance,
    radius_grid,
)
from dynamics.mocks import mock_stars

CFG = ModelConfig(halo=NFW_HALO, anisotropy=CONSTANT_BETA, tracer_r_s=0.25, fixed={"log10_r_s": 0.0},
                  priors={"v_sys": (0.0, 60.0)})
TRUTH = dict(log10_rho_s=7.5, beta_sym=0.0, v_sys=30.0)


@pytest.fixture(scope="module")
def mock():
    m = mock_stars(jax.random.PRNGKey(1), 1000, Plummer(1.0, 0.25), NFW(10**7.5, 1.0),
                   ConstantBeta(0.0), v_sys=30.0, v_err=2.0)
    return StarData(m.R, m.v, m.v_err)


def test_expected_fisher_linear_gaussian_closed_form():
    # mu = A theta, V = exp(B theta): F = A^T V^-1 A + 1/2 B^T B
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.normal(size=(50, 3)))
    B = jnp.asarray(0.1 * rng.normal(size=(50, 3)))
    theta = jnp.array([0.3, -0.2, 0.5])
    V = jnp.exp(B @ theta)
    F = expected_fisher_gaussian(lambda t: A @ t, lambda t: jnp.exp(B @ t), theta)
    np.testing.assert_allclose(F, (A / V[:, None]).T @ A + 0.5 * B.T @ B, rtol=1e-12)
    # observed information of the same model, averaged over data, tends to F; for the
    # mean-only part it is exact for any data
    y = A @ theta + rng.normal(size=50) * np.sqrt(V)
    ll = lambda t: -0.5 * jnp.sum((y - A @ t) ** 2 / V)
    np.testing.assert_allclose(observed_fisher(ll, theta), (A / V[:, None]).T @ A, rtol=1e-12)


def test_systemic_velocity_information_is_sum_of_inverse_variances(mock):
    fc = fisher_forecast(mock, CFG, TRUTH)
    var = member_variance(TRUTH, mock, CFG, radius_grid(mock.R, 32))
    k = fc.names.index("v_sys")
    assert float(fc.fisher[k, k]) == pytest.approx(float(jnp.sum(1.0 / var)), rel=1e-12)
    others = [i for i in range(len(fc.names)) if i != k]
    np.testing.assert_allclose(fc.fisher[k, others], 0.0, atol=1e-12)
    np.testing.assert_allclose(fc.covariance @ fc.fisher, np.eye(len(fc.names)), atol=1e-9)


def test_fisher_matches_nuts_posterior_widths(mock):
    expected = fisher_forecast(mock, CFG, TRUTH)
    observed = fisher_forecast(mock, CFG, TRUTH, kind="observed")
    # observed and expected information agree to the sampling noise of 1000 stars
    np.testing.assert_allclose(observed.sigma, expected.sigma, rtol=0.2)
    res = fit_nuts(jax.random.PRNGKey(2), mock, CFG, num_warmup=300, num_samples=600, num_chains=1)
    width = np.array([np.std(res.samples[n]) for n in expected.names])
    np.testing.assert_allclose(np.asarray(expected.sigma), width, rtol=0.3)


def test_bad_input(mock):
    with pytest.raises(ValueError, match="kind"):
        fisher_forecast(mock, CFG, TRUTH, kind="hessian")
    with pytest.raises(ValueError, match="truth lacks"):
        fisher_forecast(mock, CFG, {"v_sys": 30.0})
    fg = ModelConfig(halo=NFW_HALO, anisotropy=CONSTANT_BETA, foreground=True)
    truth = dict(log10_rho_s=7.5, log10_r_s=0.0, beta_sym=0.0, v_sys=30.0, f_fg=0.1,
                 fg_mean=0.0, log10_fg_ratio=0.5)
    with pytest.raises(ValueError, match="foreground"):
        fisher_forecast(mock, fg, truth)
