"""Discrete-star inference: likelihood against a direct formula, gradients, simulate-and-recover."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from dynamics import NFW, ConstantBeta, Plummer
from dynamics.inference import (
    ModelConfig,
    StarData,
    build_models,
    fit_nuts,
    log_likelihood,
    make_log_likelihood,
    member_variance,
    param_names,
    radius_grid,
)
from dynamics.jeans import sigma_los2_profile
from dynamics.mocks import mock_stars


@pytest.fixture(scope="module")
def radii():
    # Plummer-distributed projected radii (a = 0.25 kpc), 3.5 decades
    u = np.random.default_rng(0).uniform(size=400)
    return jnp.asarray(0.25 / np.sqrt(1.0 / u - 1.0))


def test_radius_grid_interpolation(radii):
    data = StarData(radii, radii * 0, radii * 0 + 2.0)
    cfg = ModelConfig(halo="zhao", anisotropy="constant")
    params = dict(log10_rho_s=7.5, log10_r_s=0.0, gamma=0.7, beta_sym=0.3, v_sys=0.0)
    tracer, mass, aniso = build_models(params, cfg)
    ref = sigma_los2_profile(radii, tracer, mass, aniso, grid=False) + 4.0
    got = member_variance(params, data, cfg, radius_grid(radii, 32))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # the interpolation matrix reproduces polynomials in ln R of degree < n_nodes exactly
    g = radius_grid(radii, 12)
    x = np.log(np.asarray(radii))
    xn = np.log(np.asarray(g.R_nodes))
    np.testing.assert_allclose(g.weights @ (xn**5 - 2 * xn), x**5 - 2 * x, atol=1e-9)


@pytest.mark.parametrize("halo", ["nfw", "zhao"])
def test_mass_normalisation_parameter(halo):
    cfg = ModelConfig(halo=halo, anisotropy="isotropic", mass_radius=0.4)
    names = param_names(cfg)
    assert names[0] == "log10_m_ref" and "log10_rho_s" not in names
    params = dict(log10_m_ref=7.2, log10_r_s=0.2, gamma=0.6, v_sys=0.0)
    _, mass, _ = build_models(params, cfg)
    assert float(mass.enclosed_mass(0.4)) == pytest.approx(10**7.2, rel=1e-10)
    if halo == "nfw":
        # closed form: M(<r) = 4 pi rho_s r_s^3 [ln(1 + x) - x / (1 + x)]
        x = 0.4 / 10**0.2
        rho_s = 10**7.2 / (4 * np.pi * 10**0.6 * (np.log1p(x) - x / (1 + x)))
        assert float(mass.rho_s) == pytest.approx(rho_s, rel=1e-12)


def test_log_likelihood_against_direct_formula(radii):
    # free tracer scale, foreground mixture: the full likelihood written out with scipy
    rng = np.random.default_rng(1)
    n = radii.shape[0]
    v = 30.0 + 10.0 * rng.normal(size=n)
    err = rng.uniform(1.0, 3.0, n)
    data = StarData(radii, jnp.asarray(v), jnp.asarray(err))
    R_max = float(radii.max()) * 1.01
    cfg = ModelConfig(halo="nfw", anisotropy="om", foreground=True, tracer_r_s=None, R_max=R_max)
    params = dict(log10_rho_s=7.4, log10_r_s=0.1, log10_r_a=-0.3, log10_r_plummer=-0.6,
                  v_sys=31.0, f_fg=0.2, fg_mean=20.0, log10_fg_sigma=1.6)
    assert param_names(cfg) == list(params)
    got = log_likelihood(params, data, cfg, radius_grid(radii, 32))

    tracer, mass, aniso = build_models(params, cfg)
    s2 = np.asarray(sigma_los2_profile(radii, tracer, mass, aniso, grid=False))
    a = 10 ** -0.6
    R = np.asarray(radii)
    p_mem = 2 * R * a**2 / (R**2 + a**2) ** 2 / (R_max**2 / (R_max**2 + a**2))
    p_fg = 2 * R / R_max**2
    like = (0.8 * stats.norm.pdf(v, 31.0, np.sqrt(s2 + err**2)) * p_mem
            + 0.2 * stats.norm.pdf(v, 20.0, np.sqrt(10**3.2 + err**2)) * p_fg)
    assert float(got) == pytest.approx(np.sum(np.log(like)), rel=1e-9, abs=1e-6)


def test_gradient_against_finite_differences(radii):
    rng = np.random.default_rng(2)
    data = StarData(radii, jnp.asarray(8.0 * rng.normal(size=radii.shape[0])), radii * 0 + 2.0)
    cfg = ModelConfig(halo="zhao", anisotropy="constant")
    vg, names = make_log_likelihood(data, cfg)
    theta = jnp.array([7.5, 0.1, 0.8, 0.2, 0.3])
    value, grad = vg(theta)
    ll = lambda th: vg(th)[0]
    for k in range(theta.size):
        h = 1e-5 * max(1.0, abs(float(theta[k])))
        step = jnp.zeros_like(theta).at[k].set(h)
        fd = (ll(theta + step) - ll(theta - step)) / (2 * h)
        assert float(grad[k]) == pytest.approx(float(fd), rel=1e-5, abs=1e-4), names[k]
    # jitted value equals the eager likelihood
    eager = log_likelihood(dict(zip(names, theta)), data, cfg, radius_grid(radii, 32))
    np.testing.assert_allclose(value, eager, rtol=1e-12)


def test_simulate_and_recover_with_foreground():
    # 300 stars (20% foreground) from a Plummer tracer in an NFW halo, beta = 0.2
    tracer, halo = Plummer(1.0, 0.25), NFW(10**7.5, 1.0)
    truth = dict(log10_m_ref=np.log10(float(halo.enclosed_mass(0.33))), log10_r_s=0.0,
                 beta_sym=0.2 / 1.8, log10_r_plummer=np.log10(0.25), v_sys=40.0, f_fg=0.2,
                 fg_mean=10.0, log10_fg_sigma=np.log10(40.0))
    mock = mock_stars(jax.random.PRNGKey(0), 300, tracer, halo, ConstantBeta(0.2), v_sys=40.0,
                      v_err=(1.0, 3.0), foreground_fraction=0.2, foreground_mean=10.0,
                      foreground_sigma=40.0, foreground_r_max=1.5)
    cfg = ModelConfig(halo="nfw", anisotropy="constant", foreground=True, tracer_r_s=None,
                      R_max=1.5, priors={"v_sys": (0.0, 80.0), "fg_mean": (-100.0, 100.0),
                                         "log10_r_s": (-0.5, 0.5)}, mass_radius=0.33)
    res = fit_nuts(jax.random.PRNGKey(1), StarData(mock.R, mock.v, mock.v_err), cfg,
                   num_warmup=250, num_samples=300, num_chains=1, dense_mass=True)
    assert set(res.samples) == set(truth)
    assert res.num_divergences < 15
    for name, value in truth.items():
        s = np.asarray(res.samples[name])
        assert abs(s.mean() - value) < 3 * s.std(), (name, s.mean(), s.std(), value)
    # informative where the data are: v_sys to ~1 km/s, the foreground fraction to ~0.05
    assert np.std(res.samples["v_sys"]) < 1.5
    assert np.std(res.samples["f_fg"]) < 0.05
    # the enclosed mass within the half-light radius is recovered (a derived quantity)
    m_true = float(halo.enclosed_mass(0.25))
    draws = {k: np.asarray(v)[::10] for k, v in res.samples.items()}
    m_post = np.array([float(build_models({k: draws[k][i] for k in draws}, cfg)[1].enclosed_mass(0.25))
                       for i in range(len(draws["v_sys"]))])
    assert abs(np.log10(m_post).mean() - np.log10(m_true)) < 3 * np.log10(m_post).std()


def test_bad_input(radii):
    data = StarData(radii, radii * 0, radii * 0 + 1.0)
    with pytest.raises(ValueError, match="config.halo"):
        param_names(ModelConfig(halo="burkert"))
    with pytest.raises(ValueError, match="config.anisotropy"):
        param_names(ModelConfig(anisotropy="radial"))
    with pytest.raises(ValueError, match="R_max"):
        param_names(ModelConfig(tracer_r_s=None))
    with pytest.raises(ValueError, match="unknown parameter"):
        param_names(ModelConfig(fixed={"gamma_inner": 1.0}))
    with pytest.raises(ValueError, match="lo < hi"):
        param_names(ModelConfig(priors={"v_sys": (1.0, -1.0)}))
    with pytest.raises(ValueError, match="mass_radius"):
        param_names(ModelConfig(mass_radius=0.0))
    with pytest.raises(ValueError, match="tracer_r_s"):
        param_names(ModelConfig(tracer_r_s=-0.1))
    with pytest.raises(ValueError, match="1-D"):
        make_log_likelihood(StarData(radii, radii[:3], radii), ModelConfig())
    with pytest.raises(ValueError, match="finite"):
        make_log_likelihood(StarData(radii.at[0].set(jnp.nan), radii, radii), ModelConfig())
    with pytest.raises(ValueError, match="R must be > 0"):
        fit_nuts(jax.random.PRNGKey(0), StarData(-radii, radii, radii), ModelConfig())
    with pytest.raises(ValueError, match="n_nodes"):
        radius_grid(data.R, 1)
