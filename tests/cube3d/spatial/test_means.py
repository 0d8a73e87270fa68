"""Mean fields: the rotating-disk velocity model, and its recovery through the two-step tier.

Recovery, 20 x 20 spaxels, pure arctan disk (v_sys 1000, v_amp 150 km/s, r_turn 3, pa 0.6
rad, q 0.6, centre (9.7, 10.2)) plus Gaussian noise of 5-15 km/s; measured for seeds
0 / 1 / 2: v_amp 149.1 / 155.2 / 144.5 km/s, pa 0.607 / 0.608 / 0.598 rad, q 0.586 / 0.564 /
0.624, v_sys 999.6 / 999.5 / 999.5 km/s, centre within 0.14 spaxel, velocity-field RMS
error 1.1 / 1.6 / 1.4 km/s against a raw 10 km/s, error factor 1.00 / 1.03 / 0.99.  The GP
part goes to a small amplitude (0.35-0.42 km/s), so the posterior std (GP part only, mean
parameters fixed at their MAP values) covers only 14-16% of spaxels at 1 sigma: the
uncertainty of the mean parameters is not propagated (type-II MAP plug-in).
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import pytest

from cube3d.spatial.config import GPConfig
from cube3d.spatial.means import constant_mean, disk_velocity, mean_parameters
from cube3d.spatial.twostep import two_step_fields

SHAPE = (20, 20)
TRUTH = dict(v_sys=1000.0, v_amp=150.0, r_turn=3.0, pa=0.6, q=0.6, y0=9.7, x0=10.2)


def disk_reference(p, y, x):
    """Independent form: rotate into the disk frame, deproject, V = v_sys + v(R) cos(theta)."""
    dy, dx = y - p["y0"], x - p["x0"]
    # unit vectors (y, x) of the receding major axis (angle pa from +y towards +x) and minor axis
    maj = np.array([np.cos(p["pa"]), np.sin(p["pa"])])
    mnr = np.array([-np.sin(p["pa"]), np.cos(p["pa"])])
    xd = dy * maj[0] + dx * maj[1]
    yd = (dy * mnr[0] + dx * mnr[1]) / p["q"]
    big_r = np.hypot(xd, yd)
    cos_t = np.where(big_r > 0, xd / np.where(big_r > 0, big_r, 1.0), 0.0)
    return p["v_sys"] + p["v_amp"] * 2 / np.pi * np.arctan(big_r / p["r_turn"]) * cos_t


def test_disk_matches_reference():
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]].astype(float)
    np.testing.assert_allclose(disk_velocity(TRUTH, jnp.asarray(yy), jnp.asarray(xx)),
                               disk_reference(TRUTH, yy, xx), rtol=0, atol=1e-9)


def test_disk_symmetries():
    p = dict(TRUTH)
    t = np.linspace(0.5, 8.0, 16)
    maj = np.array([np.cos(p["pa"]), np.sin(p["pa"])])
    mnr = np.array([-np.sin(p["pa"]), np.cos(p["pa"])])

    def v_at(direction, s):
        return np.asarray(disk_velocity(p, p["y0"] + s * direction[0], p["x0"] + s * direction[1]))

    # antisymmetric about the centre along the major axis, receding (> v_sys) at +pa
    np.testing.assert_allclose(v_at(maj, t) - p["v_sys"], -(v_at(maj, -t) - p["v_sys"]), atol=1e-9)
    assert np.all(v_at(maj, t) > p["v_sys"])
    # on the major axis cos(theta) = 1: the projected rotation curve itself
    np.testing.assert_allclose(v_at(maj, t) - p["v_sys"], p["v_amp"] * 2 / np.pi * np.arctan(t / p["r_turn"]),
                               rtol=1e-10)
    # zero (v_sys) along the minor axis and at the centre
    np.testing.assert_allclose(v_at(mnr, np.r_[-t, t]), p["v_sys"], atol=1e-9)
    assert float(disk_velocity(p, p["y0"], p["x0"])) == pytest.approx(p["v_sys"], abs=1e-9)
    # gradient finite at the centre (used by the optimiser)
    g = jax.grad(lambda y0: disk_velocity(dict(p, y0=y0), 9.7, 10.2))(p["y0"])
    assert np.isfinite(float(g))


def test_constant_mean():
    yy, xx = jnp.mgrid[:3, :4]
    np.testing.assert_allclose(constant_mean({"c": 2.5}, yy, xx), np.full((3, 4), 2.5))


def test_mean_parameters_starts():
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    v = np.asarray(disk_velocity(TRUTH, yy, xx))
    w = np.ones(SHAPE)
    rows = {r[0]: r for r in mean_parameters("disk", v, w, SHAPE)}
    assert set(rows) == {"v_sys", "v_amp", "r_turn", "pa", "q", "y0", "x0"}
    assert abs(rows["pa"][4] - TRUTH["pa"]) < 0.2  # gradient direction of the velocity field
    assert rows["v_sys"][4] == pytest.approx(np.mean(v))
    for name, tr, lo, hi, start in rows.values():
        if tr != "free":
            assert lo < start < hi, name
    (name, tr, _, _, start), = mean_parameters("constant", v, w, SHAPE)
    assert name == "c" and tr == "free" and start == pytest.approx(np.mean(v))


def test_disk_mean_recovered():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    v = np.asarray(disk_velocity(TRUTH, yy, xx))
    err = rng.uniform(5.0, 15.0, size=SHAPE)
    res = two_step_fields({"V": v + err * rng.normal(size=SHAPE)}, {"V": err}, np.ones(SHAPE, bool),
                          GPConfig(v_mean="disk"))
    f = res.fields["V"]
    mp = f.hyper.mean_params
    # tolerances about 3x the scatter over seeds 0-2 (module docstring)
    assert abs(mp["v_amp"] / TRUTH["v_amp"] - 1) < 0.08, mp
    assert abs((mp["pa"] - TRUTH["pa"] + np.pi) % (2 * np.pi) - np.pi) < 0.03, mp
    assert abs(mp["q"] - TRUTH["q"]) < 0.1, mp
    assert abs(mp["v_sys"] - TRUTH["v_sys"]) < 2.0, mp
    assert abs(mp["y0"] - TRUTH["y0"]) < 0.4 and abs(mp["x0"] - TRUTH["x0"]) < 0.4, mp
    assert 1.5 < mp["r_turn"] < 6.0, mp
    assert 0.85 < f.hyper.noise_scale < 1.15  # the stated errors are right
    # the mean plus GP field is far better than the raw data (10 km/s RMS)
    assert np.sqrt(np.mean((f.mean - v) ** 2)) < 3.0
    assert res.header_meta()["gp_v_mean_pa"] == pytest.approx(mp["pa"])
