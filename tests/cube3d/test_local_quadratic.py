"""The profiled chi^2 quadratic model used by the joint spatial fit."""

import numpy as np
import pytest

from cube3d.errors import InputError
from cube3d.fit import FitConfig, FitInput, fit_spectra, local_quadratic
from tests.cube3d.test_fit import OFFSET, VELSCALE, _mock, _templates


@pytest.fixture(scope="module")
def setup(repo_data):
    fine, coarse = _templates(repo_data)
    truth, obs, ivar = _mock(fine, 8, sn=30, seed=3, h_scale=0.0)
    cfg = FitConfig(moments=2, degree=4, chunk_size=4)
    data = FitInput(obs, ivar, coarse, OFFSET, VELSCALE)
    res = fit_spectra(data, cfg)
    return data, cfg, res


def test_gradient_vanishes_and_covariance_matches_at_the_fit(setup):
    data, cfg, res = setup
    q = local_quadratic(data, res.params, cfg)
    # at the optimum the gradient is ~0 compared with the curvature scale 1/err
    assert np.all(np.abs(q["grad"] * res.errors) < 2e-2)
    np.testing.assert_allclose(np.sqrt(np.diagonal(q["cov"], axis1=1, axis2=2)), res.errors, rtol=1e-3)
    dof = q["chi2"] / res.chi2  # res.chi2 is per degree of freedom: n_good - free parameters
    assert np.all((dof > res.n_good - 20) & (dof < res.n_good))


def test_gradient_and_hessian_match_finite_differences_of_profiled_chi2(setup):
    data, cfg, res = setup
    theta = res.params + np.array([25.0, -20.0])  # away from the optimum
    q = local_quadratic(data, theta, cfg)
    for k, h in enumerate([0.5, 0.5]):
        step = np.zeros(2)
        step[k] = h
        up = local_quadratic(data, theta + step, cfg)["chi2"]
        dn = local_quadratic(data, theta - step, cfg)["chi2"]
        fd_grad = 0.25 * (up - dn) / h  # d(chi2/2)
        np.testing.assert_allclose(q["grad"][:, k], fd_grad, rtol=2e-3, atol=1e-3 * np.abs(fd_grad).max())
        # Gauss-Newton curvature at the optimum (the residual-curvature term it drops
        # averages out there; away from it, it does not)
        q0 = local_quadratic(data, res.params, cfg)
        h = 4.0
        step[k] = h
        up = local_quadratic(data, res.params + step, cfg)["chi2"]
        dn = local_quadratic(data, res.params - step, cfg)["chi2"]
        fd_curv = 0.5 * (up - 2 * q0["chi2"] + dn) / h**2
        # The dropped term sum(w r d2m) is noise-driven with zero mean at the optimum
        # (~10% per spectrum here): the mean ratio is close to 1, each one within 30%.
        ratio = q0["hess"][:, k, k] / fd_curv
        assert abs(np.mean(ratio) - 1) < 0.08 and np.all(np.abs(ratio - 1) < 0.3), ratio


def test_rejects_bad_input(setup):
    data, cfg, res = setup
    with pytest.raises(InputError, match="kinematics"):
        local_quadratic(data, res.params[:, :1], cfg)
    with pytest.raises(InputError, match="mdegree"):
        local_quadratic(data, res.params, cfg._replace(mdegree=2))
