"""Mock generators: sampler moments against closed forms and Jeans predictions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dynamics import ConstantBeta, Isotropic, NFW, OsipkovMerritt, Plummer
from dynamics.constants import G
from dynamics.df import df_moments, eddington_df, osipkov_merritt_df
from dynamics.jeans import sigma_los
from dynamics.mocks import (
    mock_stars,
    sample_plummer,
    sample_radii,
    sample_velocities_df,
)

M, A = 1e7, 0.3


def _plummer_sigma_los2(R):
    # isotropic Plummer: sigma_los^2 = 3 pi G M / (64 sqrt(R^2 + a^2))
    return 3 * np.pi * G * M / (64 * np.sqrt(R**2 + A**2))


def _assert_dispersion_profile(R, v, pred_sigma2, n_bins=10):
    """Variance of v in quantile bins of R against a prediction (z-scores, chi^2)."""
    R, v = np.asarray(R), np.asarray(v)
    edges = np.quantile(R, np.linspace(0, 1, n_bins + 1))
    z = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (R >= lo) & (R <= hi)
        vb = v[sel]
        var = np.mean(vb**2)  # the mean is zero by construction
        se = np.sqrt((np.mean(vb**4) - var**2) / sel.sum())
        z.append((var - np.mean(pred_sigma2(R[sel]))) / se)
    z = np.array(z)
    assert np.all(np.abs(z) < 4.0), z
    assert np.sum(z**2) < stats.chi2.ppf(0.999, n_bins), z


@pytest.fixture(scope="module")
def plummer_sample():
    return sample_plummer(jax.random.PRNGKey(0), 20000, M, A)


def test_plummer_sampler_positions_ks(plummer_sample):
    x = np.asarray(plummer_sample.x)
    r = np.linalg.norm(x, axis=1)
    R = np.hypot(x[:, 0], x[:, 1])
    assert stats.kstest(r, lambda s: s**3 / (s**2 + A**2) ** 1.5).pvalue > 0.01
    assert stats.kstest(R, lambda s: s**2 / (s**2 + A**2)).pvalue > 0.01
    # isotropic directions: cos(theta) uniform on [-1, 1]
    assert stats.kstest(x[:, 2] / r, stats.uniform(-1, 2).cdf).pvalue > 0.01


def test_plummer_sampler_velocity_moments(plummer_sample):
    x, v = np.asarray(plummer_sample.x), np.asarray(plummer_sample.v)
    R = np.hypot(x[:, 0], x[:, 1])
    _assert_dispersion_profile(R, v[:, 2], _plummer_sigma_los2)
    # virial theorem: <v^2> = 3 pi G M / (32 a)
    v2 = np.sum(v**2, axis=1)
    expected = 3 * np.pi * G * M / (32 * A)
    assert abs(v2.mean() - expected) < 4 * v2.std() / np.sqrt(v2.size)
    # speed law: q^2 = (v / v_esc)^2 ~ Beta(3/2, 9/2) (AHW74 eq. A4)
    r = np.linalg.norm(x, axis=1)
    q2 = v2 / (2 * G * M / np.sqrt(r**2 + A**2))
    assert stats.kstest(q2, stats.beta(1.5, 4.5).cdf).pvalue > 0.01


def test_sample_radii_general_profile():
    # inverse-transform sampler against the tracer's own mass profile (Plummer CDF)
    r = np.asarray(sample_radii(jax.random.PRNGKey(3), 20000, Plummer(1.0, A)))
    assert stats.kstest(r, lambda s: s**3 / (s**2 + A**2) ** 1.5).pvalue > 0.01


@pytest.fixture(scope="module")
def plummer_df_iso():
    p = Plummer(M, A)
    return eddington_df(p, p)


def test_df_speed_sampler_exact_law(plummer_df_iso):
    # stars at one radius: q^2 ~ Beta(3/2, 9/2) for the isotropic Plummer DF
    p = Plummer(M, A)
    r = jnp.full(20000, 0.4)
    v_r, v_t = sample_velocities_df(jax.random.PRNGKey(4), r, plummer_df_iso, p)
    v2 = np.asarray(v_r**2 + jnp.sum(v_t**2, axis=1))
    q2 = v2 / (2 * G * M / np.sqrt(0.4**2 + A**2))
    assert stats.kstest(q2, stats.beta(1.5, 4.5).cdf).pvalue > 0.01


@pytest.mark.parametrize("r0", [0.1, 0.8])
def test_df_velocity_sampler_osipkov_merritt_moments(r0):
    # radial and tangential dispersions of OM samples vs the DF moments
    p = Plummer(M, A)
    om = osipkov_merritt_df(p, p, 0.5)
    n = 20000
    v_r, v_t = sample_velocities_df(jax.random.PRNGKey(5), jnp.full(n, r0), om, p)
    _, s_r2, s_t2 = df_moments(om, r0, p)
    for sample, pred in ((np.asarray(v_r), s_r2), (np.asarray(v_t[:, 0]), s_t2),
                         (np.asarray(v_t[:, 1]), s_t2)):
        var = np.mean(sample**2)
        se = np.sqrt((np.mean(sample**4) - var**2) / n)
        assert abs(var - float(pred)) < 4 * se


def test_mock_stars_plummer_df(plummer_df_iso):
    p = Plummer(M, A)
    mock = mock_stars(jax.random.PRNGKey(6), 20000, p, p, Isotropic(), v_sys=50.0, v_err=0.0,
                      df=plummer_df_iso)
    assert mock.R.shape == (20000,) and bool(jnp.all(mock.member))
    assert stats.kstest(np.asarray(mock.R), lambda s: s**2 / (s**2 + A**2)).pvalue > 0.01
    np.testing.assert_allclose(mock.v, 50.0 + mock.v_los, rtol=0, atol=1e-9)
    _assert_dispersion_profile(mock.R, mock.v_los, _plummer_sigma_los2)


def test_mock_stars_osipkov_merritt_in_halo_matches_jeans():
    tracer, halo = Plummer(1.0, A), NFW(3e7, 1.0)
    aniso = OsipkovMerritt(0.6)
    mock = mock_stars(jax.random.PRNGKey(7), 20000, tracer, halo, aniso, v_err=0.0)
    _assert_dispersion_profile(
        mock.R, mock.v_los,
        lambda R: np.asarray(sigma_los(jnp.asarray(R), tracer, halo, aniso)) ** 2)


def test_mock_stars_jeans_method_constant_beta():
    tracer, halo = Plummer(1.0, A), NFW(3e7, 1.0)
    aniso = ConstantBeta(0.4)
    mock = mock_stars(jax.random.PRNGKey(11), 10000, tracer, halo, aniso, v_err=0.0)
    _assert_dispersion_profile(
        mock.R, mock.v_los,
        lambda R: np.asarray(sigma_los(jnp.asarray(R), tracer, halo, aniso)) ** 2, n_bins=8)


def test_errors_and_foreground(plummer_df_iso):
    p = Plummer(M, A)
    kw = dict(v_sys=100.0, v_err=(1.0, 3.0), foreground_fraction=0.25, foreground_mean=20.0,
              foreground_sigma=40.0, foreground_r_max=2.0, df=plummer_df_iso)
    mock = mock_stars(jax.random.PRNGKey(9), 2000, p, p, **kw)
    again = mock_stars(jax.random.PRNGKey(9), 2000, p, p, **kw)
    np.testing.assert_array_equal(mock.v, again.v)  # explicit keys: reproducible
    other = mock_stars(jax.random.PRNGKey(10), 2000, p, p, **kw)
    assert not np.allclose(mock.v, other.v)

    member = np.asarray(mock.member)
    assert member.sum() == 1500
    err = np.asarray(mock.v_err)
    assert err.min() >= 1.0 and err.max() <= 3.0
    fg_v = np.asarray(mock.v)[~member]
    fg_sd = np.sqrt(40.0**2 + np.mean(err[~member] ** 2))
    assert abs(fg_v.mean() - 20.0) < 4 * fg_sd / np.sqrt(fg_v.size)
    assert abs(fg_v.std() / fg_sd - 1) < 4 / np.sqrt(2 * fg_v.size)
    R_fg = np.asarray(mock.R)[~member]
    assert R_fg.max() <= 2.0
    # uniform on the disc: (R / R_max)^2 uniform
    assert stats.kstest((R_fg / 2.0) ** 2, "uniform").pvalue > 0.01
    assert np.all(np.isnan(np.asarray(mock.r)[~member]))
    # member errors: (v - v_sys - v_los) / v_err is standard normal
    z = (np.asarray(mock.v) - 100.0 - np.asarray(mock.v_los))[member] / err[member]
    assert stats.kstest(z, "norm").pvalue > 0.01


def test_bad_input(plummer_df_iso):
    p = Plummer(M, A)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="foreground_fraction"):
        mock_stars(key, 10, p, p, foreground_fraction=1.0, df=plummer_df_iso)
    with pytest.raises(ValueError, match="method"):
        mock_stars(key, 10, p, p, method="exact")
    with pytest.raises(ValueError, match="method='df'"):
        mock_stars(key, 10, p, p, ConstantBeta(0.2), method="df")
    with pytest.raises(ValueError, match="v_err"):
        mock_stars(key, 10, p, p, v_err=jnp.ones(3), df=plummer_df_iso)
    with pytest.raises(ValueError, match="v_err"):
        mock_stars(key, 10, p, p, v_err=(3.0, 1.0), df=plummer_df_iso)
    with pytest.raises(ValueError, match="n must be"):
        mock_stars(key, 0, p, p, df=plummer_df_iso)
    with pytest.raises(ValueError, match="r_s"):
        sample_plummer(key, 10, M, -1.0)
    with pytest.raises(ValueError, match="m_tot"):
        sample_plummer(key, 10, 0.0, A)
    with pytest.raises(ValueError, match="r_min"):
        sample_radii(key, 10, p, r_min=2.0, r_max=1.0)
