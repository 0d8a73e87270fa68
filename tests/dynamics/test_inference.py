"""Discrete-star inference: likelihood against a direct formula, gradients, simulate-and-recover."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density
from scipy import stats

from dynamics import NFW, ConstantBeta, Isotropic, Plummer, Profile, sigma_los
from dynamics.inference import (
    CONSTANT_BETA,
    NFW_HALO,
    OSIPKOV_MERRITT,
    ZHAO_HALO,
    Family,
    ModelConfig,
    StarData,
    build_models,
    dwarf_model,
    fit_nuts,
    foreground_sigma,
    log_likelihood,
    make_log_likelihood,
    member_variance,
    nfw_halo_at,
    osipkov_merritt_at,
    param_names,
    radius_grid,
    zhao_halo_at,
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
    cfg = ModelConfig(halo=ZHAO_HALO, anisotropy=CONSTANT_BETA)
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


@pytest.mark.parametrize("halo", [NFW_HALO, ZHAO_HALO], ids=["nfw", "zhao"])
def test_mass_normalisation_parameter(halo):
    cfg = ModelConfig(halo=halo, anisotropy=Isotropic(), mass_radius=0.4)
    names = param_names(cfg)
    assert names[0] == "log10_m_ref" and "log10_rho_s" not in names
    params = dict(log10_m_ref=7.2, log10_r_s=0.2, gamma=0.6, v_sys=0.0)
    _, mass, _ = build_models(params, cfg)
    assert float(mass.enclosed_mass(0.4)) == pytest.approx(10**7.2, rel=1e-10)
    if halo is NFW_HALO:
        # closed form: M(<r) = 4 pi rho_s r_s^3 [ln(1 + x) - x / (1 + x)]
        x = 0.4 / 10**0.2
        rho_s = 10**7.2 / (4 * np.pi * 10**0.6 * (np.log1p(x) - x / (1 + x)))
        assert float(mass.rho_s) == pytest.approx(rho_s, rel=1e-12)


def test_reference_radius_families():
    """u_s and beta_ref give back r_s and r_a, the slope and beta at r_ref, on the old supports."""
    r_ref = 0.33
    nfw, zhao, om = nfw_halo_at(r_ref), zhao_halo_at(r_ref), osipkov_merritt_at(r_ref)
    assert list(nfw.priors) == ["log10_rho_s", "u_s"] and nfw.amplitude == "log10_rho_s"
    assert list(zhao.priors) == ["log10_rho_s", "u_s", "gamma"]
    assert zhao.priors["gamma"] == ZHAO_HALO.priors["gamma"]
    # the same support as log10_r_s in (-1, 1.5) and log10_r_a in (-2, 1.5)
    np.testing.assert_allclose(nfw.priors["u_s"],
                               (r_ref / (r_ref + 10**1.5), r_ref / (r_ref + 0.1)))
    np.testing.assert_allclose(om.priors["beta_ref"], (r_ref**2 / (r_ref**2 + 10**3.0),
                                                       r_ref**2 / (r_ref**2 + 1e-4)))
    r_s, r_a, gamma = 1.7, 0.5, 0.6
    u = r_ref / (r_ref + r_s)
    halo = nfw.build({"log10_rho_s": 7.0, "u_s": u})
    ref = NFW(1e7, r_s)
    r = jnp.geomspace(0.01, 5.0, 7)
    np.testing.assert_allclose(halo.density(r), ref.density(r), rtol=1e-12)
    # NFW 1997 eq. 1: d ln rho / d ln r = -(1 + 2 u_s) at r_ref
    slope = jax.grad(lambda x: jnp.log(halo.density(jnp.exp(x))))(jnp.log(r_ref))
    np.testing.assert_allclose(slope, -(1.0 + 2.0 * u), rtol=1e-10)
    z = zhao.build({"log10_rho_s": 7.0, "u_s": u, "gamma": gamma})
    slope = jax.grad(lambda x: jnp.log(z.density(jnp.exp(x))))(jnp.log(r_ref))
    np.testing.assert_allclose(slope, -(gamma + (3.0 - gamma) * u), rtol=1e-8)
    z1 = zhao.build({"log10_rho_s": 7.0, "u_s": u, "gamma": 1.0})
    np.testing.assert_allclose(z1.density(r), ref.density(r), rtol=1e-10)
    aniso = om.build({"beta_ref": r_ref**2 / (r_ref**2 + r_a**2)})
    np.testing.assert_allclose(aniso.r_a, r_a, rtol=1e-12)
    np.testing.assert_allclose(aniso.beta(r_ref), r_ref**2 / (r_ref**2 + r_a**2), rtol=1e-12)
    # through the model: log10_m_ref replaces the amplitude, and the likelihood is the old one's
    cfg_new = ModelConfig(halo=nfw, anisotropy=om, mass_radius=r_ref)
    cfg_old = ModelConfig(halo=NFW_HALO, anisotropy=OSIPKOV_MERRITT, mass_radius=r_ref)
    assert param_names(cfg_new) == ["log10_m_ref", "u_s", "beta_ref", "v_sys"]
    new = dict(log10_m_ref=6.9, u_s=u, beta_ref=r_ref**2 / (r_ref**2 + r_a**2), v_sys=1.0)
    old = dict(log10_m_ref=6.9, log10_r_s=np.log10(r_s), log10_r_a=np.log10(r_a), v_sys=1.0)
    data = StarData(jnp.geomspace(0.05, 1.0, 9), jnp.linspace(-20.0, 20.0, 9), jnp.full(9, 2.0))
    np.testing.assert_allclose(log_likelihood(new, data, cfg_new),
                               log_likelihood(old, data, cfg_old), rtol=1e-10)
    for make in (nfw_halo_at, zhao_halo_at, osipkov_merritt_at):
        for bad in (0.0, -1.0, np.nan):
            with pytest.raises(ValueError, match="r_ref"):
                make(bad)


def test_log_likelihood_against_direct_formula(radii):
    # free tracer scale, foreground mixture: the full likelihood written out with scipy
    rng = np.random.default_rng(1)
    n = radii.shape[0]
    v = 30.0 + 10.0 * rng.normal(size=n)
    err = rng.uniform(1.0, 3.0, n)
    data = StarData(radii, jnp.asarray(v), jnp.asarray(err))
    R_max = float(radii.max()) * 1.01
    cfg = ModelConfig(halo=NFW_HALO, anisotropy=OSIPKOV_MERRITT, foreground=True, tracer_r_s=None,
                      R_max=R_max)
    params = dict(log10_rho_s=7.4, log10_r_s=0.1, log10_r_a=-0.3, log10_r_plummer=-0.6,
                  v_sys=31.0, f_fg=0.2, fg_mean=20.0, log10_fg_ratio=0.5)
    assert param_names(cfg) == list(params)
    got = log_likelihood(params, data, cfg, radius_grid(radii, 32))

    tracer, mass, aniso = build_models(params, cfg)
    s2 = np.asarray(sigma_los2_profile(radii, tracer, mass, aniso, grid=False))
    a = 10 ** -0.6
    R = np.asarray(radii)
    p_mem = 2 * R * a**2 / (R**2 + a**2) ** 2 / (R_max**2 / (R_max**2 + a**2))
    p_fg = 2 * R / R_max**2
    sigma_fg = 10**0.5 * np.sqrt(s2.max())  # ordered dispersions: a ratio to the largest sigma_los
    assert float(foreground_sigma(params, data, cfg)) == pytest.approx(sigma_fg, rel=1e-12)
    like = (0.8 * stats.norm.pdf(v, 31.0, np.sqrt(s2 + err**2)) * p_mem
            + 0.2 * stats.norm.pdf(v, 20.0, np.sqrt(sigma_fg**2 + err**2)) * p_fg)
    assert float(got) == pytest.approx(np.sum(np.log(like)), rel=1e-9, abs=1e-6)


def test_gradient_against_finite_differences(radii):
    rng = np.random.default_rng(2)
    data = StarData(radii, jnp.asarray(8.0 * rng.normal(size=radii.shape[0])), radii * 0 + 2.0)
    cfg = ModelConfig(halo=ZHAO_HALO, anisotropy=CONSTANT_BETA)
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


class DensityOnlyNFW(Profile):
    """A user profile: the NFW density alone (mass and potential from the base class)."""

    rho_s: jax.Array
    r_s: jax.Array

    def density(self, r):
        x = r / self.r_s
        return self.rho_s / (x * (1.0 + x) ** 2)

    def scale_radius(self):
        return self.r_s


@pytest.mark.parametrize("mass_radius", [None, 0.33], ids=["rho", "m_ref"])
def test_user_profile_runs_through_the_model(radii, mass_radius):
    # the user's own profile, sampled in its own coordinates (log10 density, linear r_s in
    # kpc) with its own priors, gives the built-in NFW's likelihood at the same halo
    user = Family(lambda p: DensityOnlyNFW(10.0 ** p["log10_rho"], p["r_s"]),
                  {"log10_rho": (5.0, 9.0), "r_s": (0.2, 5.0)}, amplitude="log10_rho")
    rng = np.random.default_rng(3)
    err = jnp.asarray(rng.uniform(1.0, 3.0, radii.shape[0]))
    data = StarData(radii, jnp.asarray(30.0 + 9.0 * rng.normal(size=radii.shape[0])), err)
    grid = radius_grid(radii, 32)
    mine = ModelConfig(halo=user, anisotropy=OSIPKOV_MERRITT, mass_radius=mass_radius)
    builtin = ModelConfig(halo=NFW_HALO, anisotropy=OSIPKOV_MERRITT, mass_radius=mass_radius)
    norm = "log10_rho" if mass_radius is None else "log10_m_ref"
    assert param_names(mine) == [norm, "r_s", "log10_r_a", "v_sys"]
    params = {norm: 7.3, "r_s": 1.4, "log10_r_a": -0.3, "v_sys": 31.0}
    same = {"log10_rho_s" if mass_radius is None else "log10_m_ref": 7.3,
            "log10_r_s": np.log10(1.4), "log10_r_a": -0.3, "v_sys": 31.0}

    ll = log_likelihood(params, data, mine, grid)
    assert float(ll) == pytest.approx(float(log_likelihood(same, data, builtin, grid)), rel=1e-9)
    # the numpyro model samples the family's parameters under its priors: log density =
    # log L + sum of -ln(hi - lo) (v_sys keeps the default prior)
    widths = [4.0 if mass_radius is None else 6.0, 4.8, 3.5, 2000.0]
    value, _ = log_density(dwarf_model, (data,), dict(config=mine, grid=grid), params)
    assert np.isfinite(float(value))
    assert float(value) == pytest.approx(float(ll) - np.sum(np.log(widths)), rel=1e-12)
    # the model's dispersion is dynamics.sigma_los of the user's profile
    tracer, mass, aniso = build_models(params, mine)
    assert isinstance(mass, DensityOnlyNFW)
    if mass_radius is not None:
        assert float(mass.enclosed_mass(mass_radius)) == pytest.approx(10**7.3, rel=1e-10)
    np.testing.assert_allclose(member_variance(params, data, mine, grid),
                               sigma_los(radii, tracer, mass, aniso) ** 2 + err**2, rtol=1e-5)


def test_fixed_profile_and_anisotropy_objects(radii):
    # fixed objects sample nothing and equal the families with every parameter fixed
    data = StarData(radii, radii * 0 + 3.0, radii * 0 + 2.0)
    grid = radius_grid(radii, 32)
    fixed = ModelConfig(halo=NFW(10**7.4, 10**0.1), anisotropy=ConstantBeta(0.0))
    family = ModelConfig(halo=NFW_HALO, anisotropy=CONSTANT_BETA,
                         fixed={"log10_rho_s": 7.4, "log10_r_s": 0.1, "beta_sym": 0.0})
    assert param_names(fixed) == param_names(family) == ["v_sys"]
    np.testing.assert_allclose(log_likelihood({"v_sys": 1.0}, data, fixed, grid),
                               log_likelihood({"v_sys": 1.0}, data, family, grid), rtol=1e-14)


def test_configs_share_no_mutable_state():
    first, second = ModelConfig(), ModelConfig()
    with pytest.raises(TypeError):
        first.priors["v_sys"] = (0.0, 1.0)
    with pytest.raises(TypeError):
        first.fixed["gamma"] = 1.0
    with pytest.raises(TypeError):
        first.halo.priors["gamma"] = (0.0, 3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.anisotropy = OSIPKOV_MERRITT
    assert dict(second.priors) == {} and dict(second.fixed) == {}
    assert dict(second.halo.priors)["gamma"] == (0.0, 1.5)
    # the caller's dicts are copied: changing them later changes no config
    priors, fixed = {"v_sys": (0.0, 80.0)}, {"gamma": 1.0}
    third = ModelConfig(priors=priors, fixed=fixed)
    priors["v_sys"] = (-1.0, 1.0)
    fixed["beta_sym"] = 0.0
    assert dict(third.priors) == {"v_sys": (0.0, 80.0)} and dict(third.fixed) == {"gamma": 1.0}
    assert param_names(third) == ["log10_rho_s", "log10_r_s", "beta_sym", "v_sys"]
    assert dict(ModelConfig().priors) == {} and dict(ModelConfig().fixed) == {}


def test_simulate_and_recover_with_foreground():
    # 300 stars (20% foreground) from a Plummer tracer in an NFW halo, beta = 0.2
    tracer, halo = Plummer(1.0, 0.25), NFW(10**7.5, 1.0)
    truth = dict(log10_m_ref=np.log10(float(halo.enclosed_mass(0.33))), log10_r_s=0.0,
                 beta_sym=0.2 / 1.8, log10_r_plummer=np.log10(0.25), v_sys=40.0, f_fg=0.2,
                 fg_mean=10.0)
    mock = mock_stars(jax.random.PRNGKey(0), 300, tracer, halo, ConstantBeta(0.2), v_sys=40.0,
                      v_err=(1.0, 3.0), foreground_fraction=0.2, foreground_mean=10.0,
                      foreground_sigma=40.0, foreground_r_max=1.5)
    # the foreground dispersion is sampled as its ratio to the members' largest sigma_los
    sig_max = float(jnp.max(sigma_los(mock.R, tracer, halo, ConstantBeta(0.2))))
    truth["log10_fg_ratio"] = np.log10(40.0 / sig_max)
    cfg = ModelConfig(halo=NFW_HALO, anisotropy=CONSTANT_BETA, foreground=True, tracer_r_s=None,
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
    with pytest.raises(ValueError, match="amplitude"):
        param_names(ModelConfig(halo=NFW(1e7, 1.0), mass_radius=0.3))
    with pytest.raises(ValueError, match="amplitude"):
        Family(lambda p: NFW(1e7, 1.0), {"log10_r_s": (-1.0, 1.0)}, amplitude="log10_rho_s")
    with pytest.raises(ValueError, match="declared twice"):
        param_names(ModelConfig(anisotropy=Family(lambda p: ConstantBeta(0.0), {"v_sys": (0.0, 1.0)})))
    with pytest.raises(ValueError, match="lo < hi"):
        param_names(ModelConfig(anisotropy=Family(lambda p: ConstantBeta(0.0), {"b": (1.0, 0.0)})))
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
