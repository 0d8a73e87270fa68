"""Joint fits on small mocks: the Laplace approximation recovers the truth.

NUTS on the same model, and its convergence report, run through the command line
(tests/cube3d/test_dynamics_cli.py); coverage on repeated mocks: tests/benchmarks/validate_joint.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import MGE, xla_options
from dynamics.joint_fit import (REFINE_OFFSET, SUMMARY_COLUMNS, _hessian_fd, _newton_offset, _problem, _refine,
                                fit_laplace)
from dynamics.joint_mocks import mock_discrete, mock_ifu
from dynamics.joint_model import JointConfig
from dynamics.tracer_density import plummer_mge

TRACER = MGE.from_observed([2e4, 5e3, 8e2, 60.0], [0.4, 2.0, 8.0, 30.0], [0.85, 0.75, 0.7, 0.65], 20.0)
TRUTH = dict(ml=3.0, inclination=60.0, beta_z=0.1, kappa=0.8, beta_z_discrete=0.0, f_out=0.05)


@pytest.fixture(scope="module")
def small():
    cfg = JointConfig(tracer=TRACER, halo="none", discrete_tracer=plummer_mge(3.0), outlier_sigma=600.0)
    ifu, _ = mock_ifu(jax.random.PRNGKey(0), TRUTH, cfg, n_side=8, pixel_size=0.1, angle=25.0, psf_sigma=0.07)
    stars = mock_discrete(jax.random.PRNGKey(1), TRUTH, cfg, n=60, a=3.0, r_max=10.0, outlier_fraction=0.05)
    return cfg, ifu, stars.data


def test_laplace_recovers_the_truth(small):
    cfg, ifu, stars = small
    res = fit_laplace(jax.random.PRNGKey(2), ifu, stars, cfg, radii=(1.0,), n_draws=2000)
    assert res.converged, res.problems
    rows = {r["name"]: r for r in res.summary}
    assert list(res.summary[0]) == list(SUMMARY_COLUMNS)
    assert set(rows) == {"ml", "inclination", "beta_z", "kappa", "beta_z_discrete", "f_out",
                         "log10_mass_total_1kpc", "log10_mass_stars_1kpc"}
    for name, true in TRUTH.items():
        r = rows[name]
        half = 0.5 * (r["p84"] - r["p16"])
        assert 0 < half and abs(r["p50"] - true) < 3.5 * half, (name, r)
    assert np.isnan(rows["ml"]["r_hat"])                        # no chains: no R-hat
    assert set(res.info["predictions"]) == {"v_model", "vrms_model", "vrms_discrete"}


def test_nuts_potential_has_the_gradient_of_the_laplace_potential(small):
    """fit_nuts gives numpyro ``potential_value``: -log p whose gradient (a custom VJP) is the one
    the compiled ``potential`` returns with it; checked against central differences of the value."""
    cfg, ifu, stars = small
    prob = _problem(ifu, stars, cfg)
    u = jnp.asarray(prob.to_unconstrained(TRUTH)) + 0.1
    value, grad = jax.value_and_grad(prob.potential_value)(u)
    want_value, want_grad = prob.potential(u)
    assert float(value) == float(want_value)
    np.testing.assert_array_equal(grad, want_grad)
    h = 1e-4
    fd = [(prob.potential_value(u.at[i].add(h)) - prob.potential_value(u.at[i].add(-h))) / (2 * h)
          for i in range(u.size)]
    # a wrong sign, scale or order of the pullback would be off by O(1); the 1% allows for the
    # kinks that the first moment's quadrature leaves in -log p (_hessian_fd): beta_z's
    # difference quotient is 0.3% from the gradient here, the others within 5e-5
    np.testing.assert_allclose(grad, fd, rtol=1e-2)


def test_newton_offset_is_the_remaining_step_in_posterior_sd():
    hess = np.array([[4.0, 1.0], [1.0, 2.0]])
    mode, x = np.array([0.3, -0.2]), np.array([0.5, 0.1])
    cov = np.linalg.inv(hess)
    expected = np.max(np.abs(x - mode) / np.sqrt(np.diag(cov)))       # one Newton step lands on the mode
    assert np.isclose(_newton_offset(hess, hess @ (x - mode)), expected, rtol=1e-12)
    assert _newton_offset(np.diag([1.0, -1.0]), np.ones(2)) == np.inf
    assert _newton_offset(np.diag([1.0, np.nan]), np.ones(2)) == np.inf


def test_refine_stops_at_the_mode_and_returns_the_hessian_there():
    a = jnp.array([[3.0, 1.2, 0.0], [1.2, 2.0, -0.5], [0.0, -0.5, 1.0]])
    potential = jax.jit(jax.value_and_grad(lambda u: 0.5 * u @ a @ u + 0.3 * jnp.sum(u ** 4)))   # mode at 0
    x0 = np.array([1.5, -1.0, 0.8])
    res, hess = _refine(potential, x0, _hessian_fd(potential, jnp.asarray(x0)))
    assert "StopIteration" in str(res.message)               # stopped by the offset, not by scipy's tolerance
    x = np.asarray(res.x)
    assert _newton_offset(hess, np.asarray(potential(jnp.asarray(x))[1])) <= REFINE_OFFSET
    # the Hessian at res.x (its steps came from the Hessian before, hence not to the last digit), not at x0
    assert np.allclose(hess, _hessian_fd(potential, jnp.asarray(x), like=hess), atol=1e-2)
    assert not np.allclose(hess, _hessian_fd(potential, jnp.asarray(x0)), atol=1.0)
    sd = np.sqrt(np.diag(np.linalg.inv(hess)))
    assert np.max(np.abs(x) / sd) < 2 * REFINE_OFFSET and res.nhev <= 8


def test_the_potential_and_predictions_are_compiled_with_the_options(small, monkeypatch):
    """The JAM likelihood's value and gradient and the predictions, the largest programs of a
    joint fit, get the compile options of dynamics.xla_options (tests/dynamics/test_xla_options.py)."""
    cfg, ifu, stars = small
    assert isinstance(_problem(ifu, stars, cfg).potential, xla_options._Program)
    made = []

    class Made(Exception):
        pass

    def recording(fun, jit_kwargs):  # stops before anything compiles
        made.append(jit_kwargs)
        raise Made

    monkeypatch.setattr(xla_options, "_Program", recording)
    from dynamics.joint_fit import _predict_many

    with pytest.raises(Made):
        _predict_many([dict(TRUTH)], ifu, None, cfg)
    assert made == [{}]
