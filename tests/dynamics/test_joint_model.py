"""The joint model's pieces: parameters and priors, the discrete part against the spherical
`dwarf_model`, bin averages, derived masses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import MGE, Isotropic
from dynamics.halos import nfw_from_m200
from dynamics.inference import ModelConfig, StarData, log_likelihood as dwarf_log_likelihood
from dynamics.jeans import sigma_los
from dynamics.joint_model import (DiscreteData, IfuData, JointConfig, derived_masses, log_likelihood_parts,
                                  membership_probability, param_names, predict_discrete, predict_ifu,
                                  prior_bounds)
from dynamics.tracer_density import plummer_mge
from dynamics import Plummer

FLAT = MGE.from_observed([2e4, 5e3, 8e2, 60.0], [0.4, 2.0, 8.0, 30.0], [0.85, 0.75, 0.7, 0.65], 20.0)
ROUND = MGE.from_observed([2e4, 5e3, 8e2, 60.0], [0.4, 2.0, 8.0, 30.0], [1.0, 1.0, 1.0, 1.0], 20.0)
PARAMS = dict(ml=3.0, inclination=60.0, beta_z=0.0, kappa=0.7, log10_m200=12.3, concentration=9.0,
              beta_z_discrete=0.0, f_out=0.1)


def test_parameters_follow_the_data_and_the_model():
    cfg = JointConfig(tracer=FLAT, halo="gnfw", black_hole=True, discrete_tracer=plummer_mge(3.0), outlier_sigma=500.0)
    assert param_names(cfg, True, True) == ["ml", "inclination", "beta_z", "kappa", "log10_m_bh", "log10_m200",
                                            "concentration", "gamma", "beta_z_discrete", "f_out"]
    assert param_names(JointConfig(tracer=FLAT, halo="none"), True, False) == ["ml", "inclination", "beta_z", "kappa"]
    # stars alone carry no rotation term
    assert "kappa" not in param_names(cfg, False, True)
    lo, hi = prior_bounds(cfg, True, True)["inclination"]
    assert lo == pytest.approx(np.degrees(np.arccos(0.65)) + 0.5) and hi == 90.0
    fixed = JointConfig(tracer=FLAT, halo="nfw", fixed={"concentration": 10.0}, priors={"ml": (1.0, 5.0)})
    assert "concentration" not in param_names(fixed, True, False)
    assert prior_bounds(fixed, True, False)["ml"] == (1.0, 5.0)


def test_an_mge_too_flat_for_any_inclination_is_refused():
    flat = MGE.from_observed([1e3], [2.0], [0.005], 20.0)
    with pytest.raises(ValueError, match="inclination"):
        prior_bounds(JointConfig(tracer=flat), True, False)
    with pytest.raises(ValueError, match="halo"):
        JointConfig(tracer=FLAT, halo="burkert")


def test_discrete_part_matches_the_spherical_dwarf_model():
    """Round stars, NFW halo, isotropic round tracer: cylindrical JAM = spherical Jeans."""
    a = 4.0
    cfg = JointConfig(tracer=ROUND, halo="nfw", discrete_tracer=plummer_mge(a))
    rng = np.random.default_rng(3)
    R = np.geomspace(0.3, 25.0, 40)
    phi = rng.uniform(0, 2 * np.pi, R.size)
    v_err = rng.uniform(5.0, 30.0, R.size)
    v = rng.normal(0.0, 150.0, R.size)
    data = DiscreteData(R * np.cos(phi), R * np.sin(phi), v, v_err, np.ones(R.size))
    p = {k: PARAMS[k] for k in param_names(cfg, False, True)}
    mass = ROUND.scaled(p["ml"]) + nfw_from_m200(10 ** p["log10_m200"], p["concentration"])
    sph = np.asarray(sigma_los(R, Plummer(1.0, a), mass, Isotropic()))
    jam = np.asarray(predict_discrete(p, data, cfg))
    assert np.max(np.abs(jam / sph - 1)) < 1e-4
    ll_joint = float(log_likelihood_parts(p, None, data, cfg)[1])
    dwarf = ModelConfig(halo=mass, anisotropy=Isotropic(), tracer_r_s=a, fixed={"v_sys": 0.0})
    ll_dwarf = float(dwarf_log_likelihood({}, StarData(R, v, v_err), dwarf))
    assert ll_joint == pytest.approx(ll_dwarf, abs=1e-3)


def test_outlier_mixture_and_membership_prior():
    cfg = JointConfig(tracer=ROUND, halo="nfw", discrete_tracer=plummer_mge(4.0), outlier_sigma=600.0)
    R = np.array([1.0, 3.0, 8.0])
    data = DiscreteData(R, 0 * R, np.array([50.0, -900.0, 120.0]), np.full(3, 10.0), np.array([1.0, 0.5, 0.9]))
    p = {k: PARAMS[k] for k in param_names(cfg, False, True)}
    vrms = np.asarray(predict_discrete(p, data, cfg))

    def normal(v, var):
        return np.exp(-0.5 * v * v / var) / np.sqrt(2 * np.pi * var)

    pm = data.p_member * (1 - p["f_out"])
    expect = np.sum(np.log(pm * normal(data.v, vrms**2 + 100.0) + (1 - pm) * normal(data.v, 600.0**2 + 100.0)))
    assert float(log_likelihood_parts(p, None, data, cfg)[1]) == pytest.approx(expect, rel=1e-12)
    member = pm * normal(data.v, vrms**2 + 100.0)
    prob = member / (member + (1 - pm) * normal(data.v, 600.0**2 + 100.0))
    np.testing.assert_allclose(np.asarray(membership_probability(p, data, cfg)), prob, rtol=1e-10)
    assert prob[1] < 1e-3 < 0.5 < prob[0]                     # the -900 km/s star is an outlier


def _four_by_four():
    """A rotating MGE (no halo), 4 x 4 spaxels of 0.2 kpc, one per bin: ``(config, ifu, params)``."""
    cfg = JointConfig(tracer=FLAT, halo="none")
    g = (np.arange(4) - 1.5) * 0.2
    x, y = (c.ravel() for c in np.meshgrid(g, g))
    one = np.ones(x.size)
    ifu = IfuData(x, y, np.arange(x.size), one, one, one, one, one, psf_sigma=(0.1,), pixel_size=0.2)
    return cfg, ifu, {k: PARAMS[k] for k in param_names(cfg, True, False)}


def test_bins_are_luminosity_weighted_averages_of_their_spaxels():
    cfg, single, p = _four_by_four()
    x, y = single.x, single.y
    v1, vrms1 = (np.asarray(a) for a in predict_ifu(p, single, cfg))
    binid = np.array([0, 0, 1, 1] * 4)
    w = np.asarray(FLAT.projected(x, y))
    binned = single._replace(binid=binid, weight=w, v=np.ones(2), v_err=np.ones(2), vrms=np.ones(2),
                             vrms_err=np.ones(2))
    v2, vrms2 = (np.asarray(a) for a in predict_ifu(p, binned, cfg))
    for b in (0, 1):
        s = binid == b
        assert v2[b] == pytest.approx(np.sum(w[s] * v1[s]) / np.sum(w[s]), rel=1e-12, abs=1e-12)
        assert vrms2[b] == pytest.approx(np.sqrt(np.sum(w[s] * vrms1[s] ** 2) / np.sum(w[s])), rel=1e-12)
    assert v2[0] == pytest.approx(-v2[1], abs=1e-9)      # odd in x: the two halves rotate oppositely


def test_derived_masses_add_up():
    cfg = JointConfig(tracer=FLAT, halo="nfw", black_hole=True)
    p = dict(PARAMS, log10_m_bh=8.5)
    out = jax.jit(lambda q: derived_masses(q, cfg, (1.0, 10.0)))({k: jnp.asarray(v) for k, v in p.items()})
    for tag in ("1kpc", "10kpc"):
        total = 10 ** float(out[f"log10_mass_total_{tag}"])
        parts = 10 ** float(out[f"log10_mass_stars_{tag}"]) + 10 ** float(out[f"log10_mass_dark_{tag}"]) + 10**8.5
        assert total == pytest.approx(parts, rel=1e-12)
    halo = nfw_from_m200(10 ** p["log10_m200"], p["concentration"])
    assert 10 ** float(out["log10_mass_dark_10kpc"]) == pytest.approx(float(halo.enclosed_mass(10.0)), rel=1e-12)
    assert 10 ** float(out["log10_mass_stars_10kpc"]) == pytest.approx(
        float(FLAT.scaled(3.0).mass_in_sphere(10.0, 60.0)), rel=1e-12)


def test_predictions_outside_jit_are_one_program_per_data_set(monkeypatch):
    """predict_ifu with concrete parameters compiles one program for the data (not one per
    operation), runs it again for equal data, sees data changed in place, and gives what the
    same code traced inside a jit gives."""
    from dynamics import joint_model

    cfg, ifu, p = _four_by_four()
    x = ifu.x
    traces = []
    real = joint_model.jam_velocity

    def counting(*args, **kwargs):  # runs once per trace of the prediction
        traces.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(joint_model, "jam_velocity", counting)
    v1, vrms1 = (np.asarray(a) for a in predict_ifu(p, ifu, cfg))
    v2, _ = (np.asarray(a) for a in predict_ifu(dict(p), ifu._replace(x=x.copy()), cfg))
    assert len(traces) == 1                                    # equal data: the same program
    np.testing.assert_array_equal(v1, v2)
    inline = jax.jit(lambda q: predict_ifu(q, ifu, cfg))(p)  # traced inline, not through the cache
    assert len(traces) == 2
    np.testing.assert_allclose(np.asarray(inline[0]), v1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(inline[1]), vrms1, rtol=1e-12)
    ifu.x[:] = -ifu.x                                          # changed in place: a new program
    v3, _ = (np.asarray(a) for a in predict_ifu(p, ifu, cfg))
    assert len(traces) == 3
    np.testing.assert_allclose(v3, -v1, rtol=1e-9, atol=1e-9)  # the rotation is odd in x
    # jax arrays whose printed forms agree (numpy prints the ends of long arrays) are told apart
    wide = jnp.linspace(-0.3, 0.3, 2000)
    a = ifu._replace(x=wide, y=jnp.zeros(2000))
    b = a._replace(x=wide.at[1000].set(0.25))
    assert repr(a.x) == repr(b.x)
    assert joint_model._digest(a) != joint_model._digest(b)
    assert joint_model._digest(a) == joint_model._digest(a._replace(x=jnp.array(wide)))
