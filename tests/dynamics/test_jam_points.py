"""V_rms at scattered points by product grid + interpolation, against jam_vrms point by point."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import MGE, NFW, JamSettings, jam_vrms
from dynamics.jam_points import jam_vrms_points, point_grid

TRACER = MGE.from_observed([2e4, 5e3, 8e2, 60.0], [0.4, 2.0, 8.0, 30.0], [0.85, 0.75, 0.7, 0.65], 20.0)
MASS = TRACER.scaled(3.0) + NFW(3e6, 15.0)
SETTINGS = JamSettings(quad=(8, 6))
KW = dict(inclination=65.0, beta=0.15, m_bh=3e8, settings=SETTINGS)


def _scattered(seed, n, r_lo, r_hi):
    rng = np.random.default_rng(seed)
    R = np.geomspace(r_lo, r_hi, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    return R * np.cos(phi), R * np.sin(phi)


def test_discrete_tracers_without_psf():
    x, y = _scattered(0, 60, 0.05, 12.0)
    direct = np.asarray(jam_vrms(x, y, TRACER, MASS, **KW))
    interp = np.asarray(jam_vrms_points(x, y, TRACER, MASS, n_grid=64, **KW))
    assert np.max(np.abs(interp / direct - 1)) < 1e-4


def test_rotated_spaxels_with_psf():
    g = (np.arange(8) - 3.5) * 0.1
    X, Y = (a.ravel() for a in np.meshgrid(g, g))
    t = np.radians(37.0)
    x, y = X * np.cos(t) + Y * np.sin(t), -X * np.sin(t) + Y * np.cos(t)
    kw = dict(KW, psf_sigma=0.08, pixel_size=0.1)
    direct = np.asarray(jam_vrms(x, y, TRACER, MASS, **kw))
    interp = np.asarray(jam_vrms_points(x, y, TRACER, MASS, n_grid=48, **kw))
    assert np.max(np.abs(interp / direct - 1)) < 1e-4


def test_gradient_matches_the_direct_path():
    x, y = _scattered(1, 12, 0.2, 5.0)
    grid = point_grid(x, y, 64)

    def loss(fn, ml, inc):
        v = fn(x, y, TRACER, TRACER.scaled(ml) + NFW(3e6, 15.0), inclination=inc, beta=0.1, settings=SETTINGS)
        return jnp.sum(v)

    g_direct = jax.grad(lambda m, i: loss(jam_vrms, m, i), argnums=(0, 1))(3.0, 65.0)
    g_interp = jax.grad(lambda m, i: loss(lambda *a, **k: jam_vrms_points(*a, grid=grid, **k), m, i),
                        argnums=(0, 1))(3.0, 65.0)
    # d/d(inclination) is small (0.35 km/s/deg for a sum of ~2000 km/s): 1e-5 of the values is 1e-4 of it
    np.testing.assert_allclose(np.asarray(g_interp), np.asarray(g_direct), rtol=3e-4)


def test_bad_grid():
    with pytest.raises(ValueError, match="n_grid"):
        point_grid([1.0], [1.0], 4)
    with pytest.raises(ValueError, match="finite"):
        point_grid([np.nan], [1.0])
