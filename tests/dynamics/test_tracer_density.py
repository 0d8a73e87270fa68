"""Plummer scale of discrete tracers from their positions; its MGE expansion."""

import numpy as np
import pytest

from dynamics import Plummer
from dynamics.tracer_density import fit_plummer_scale, plummer_mge


def _projected_plummer(rng, n, a, r_max):
    # inverse of P(<R) = R^2 / (R^2 + a^2), truncated at r_max
    u = rng.uniform(0, r_max**2 / (r_max**2 + a**2), n)
    return a * np.sqrt(u / (1 - u))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_the_scale_of_a_truncated_sample(seed):
    rng = np.random.default_rng(seed)
    R = _projected_plummer(rng, 4000, 2.0, 6.0)
    a = fit_plummer_scale(R, r_max=6.0)
    assert a == pytest.approx(2.0, rel=0.05)          # ~1.5% statistical scatter at n = 4000


def test_bad_radii():
    with pytest.raises(ValueError, match="radii"):
        fit_plummer_scale([1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="radii"):
        fit_plummer_scale([1.0, 2.0])


def test_mge_reproduces_the_surface_density():
    a = 3.0
    mge = plummer_mge(a)
    R = np.geomspace(a / 20, 20 * a, 41)
    exact = np.asarray(Plummer(1.0, a).surface_density(R))
    np.testing.assert_allclose(np.asarray(mge.surface_density(R)), exact, rtol=1e-4)
