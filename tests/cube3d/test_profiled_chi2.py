"""Profiled chi^2 at given kinematics (:func:`cube3d.fit.profiled_chi2`), the likelihood
the joint spatial fit takes the moments of away from its mode."""

import numpy as np
import pytest

from cube3d.errors import InputError
from cube3d.fit import FitConfig, FitInput, fit_spectra, local_quadratic, profiled_chi2
from cube3d.spatial.joint import likelihood_moments
from tests.cube3d.test_fit import OFFSET, VELSCALE, _mock, _templates


@pytest.fixture(scope="module")
def setup(repo_data):
    fine, coarse = _templates(repo_data)
    truth, obs, ivar = _mock(fine, 6, sn=30, seed=5, h_scale=0.0)
    cfg = FitConfig(moments=2, degree=4, chunk_size=4)
    data = FitInput(obs, ivar, coarse, OFFSET, VELSCALE)
    return data, cfg, fit_spectra(data, cfg)


def test_equals_the_chi2_of_the_quadratic_model_at_each_point(setup):
    data, cfg, res = setup
    offsets = np.array([[-60.0, 10.0], [0.0, 0.0], [35.0, -25.0]])
    kin = res.params[:, None, :] + offsets[None]
    c2 = profiled_chi2(data, kin, cfg)
    assert c2.shape == (len(res.params), 3)
    for j, d in enumerate(offsets):
        np.testing.assert_allclose(c2[:, j], local_quadratic(data, res.params + d, cfg)["chi2"], rtol=1e-9)
    assert np.all(c2[:, 1] < c2[:, 0]) and np.all(c2[:, 1] < c2[:, 2])  # the fit is the minimum


def test_likelihood_moments_in_v_match_the_fit_at_high_sn(setup):
    """At S/N 30 the likelihood in V is Gaussian: its mean is the fitted V and its
    standard deviation the conditional Laplace error 1 / sqrt(H_VV)."""
    data, cfg, res = setup
    q = local_quadratic(data, res.params, cfg)
    err = 1.0 / np.sqrt(q["hess"][:, 0, 0])
    grid = res.params[:, :1] + err[:, None] * np.linspace(-5.0, 5.0, 41)[None]
    kin = np.repeat(res.params[:, None, :], grid.shape[1], axis=1)
    kin[..., 0] = grid
    mean, var = likelihood_moments(profiled_chi2(data, kin, cfg), grid)
    assert np.all(np.abs(mean - res.params[:, 0]) < 0.1 * err)
    np.testing.assert_allclose(np.sqrt(var), err, rtol=0.1)


def test_rejects_bad_input(setup):
    data, cfg, res = setup
    with pytest.raises(InputError, match="kinematics"):
        profiled_chi2(data, res.params, cfg)  # no points axis
    with pytest.raises(InputError, match="kinematics"):
        profiled_chi2(data, res.params[:, None, :1], cfg)
    with pytest.raises(InputError, match="mdegree"):
        profiled_chi2(data, res.params[:, None, :], cfg._replace(mdegree=2))
