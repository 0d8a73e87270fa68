"""Haloes by virial mass and concentration against their definitions and astropy's cosmology."""

import numpy as np
import pytest

from dynamics import NFW
from dynamics.halos import RHO_CRIT, gnfw_from_m200, nfw_from_m200, r200_from_m200


def test_critical_density_matches_astropy():
    cosmology = pytest.importorskip("astropy.cosmology")
    import astropy.units as u

    rho = cosmology.FlatLambdaCDM(H0=70.0, Om0=0.3).critical_density0.to_value(u.Msun / u.kpc**3)
    assert RHO_CRIT == pytest.approx(rho, rel=1e-4)      # G and Msun of astropy vs ours


@pytest.mark.parametrize("m200, c", [(1e12, 8.0), (3e14, 4.0), (1e9, 20.0)])
def test_nfw_holds_m200_within_r200(m200, c):
    halo = nfw_from_m200(m200, c)
    r200 = float(r200_from_m200(m200))
    assert float(halo.enclosed_mass(r200)) == pytest.approx(m200, rel=1e-12)
    assert float(halo.r_s) == pytest.approx(r200 / c, rel=1e-12)
    mean_density = m200 / (4.0 / 3.0 * np.pi * r200**3)
    assert mean_density == pytest.approx(200.0 * RHO_CRIT, rel=1e-12)


def test_gnfw_with_gamma_one_is_nfw():
    r = np.geomspace(0.01, 300.0, 7)
    a, b = gnfw_from_m200(1e12, 8.0, 1.0), nfw_from_m200(1e12, 8.0)
    assert isinstance(b, NFW)
    np.testing.assert_allclose(np.asarray(a.density(r)), np.asarray(b.density(r)), rtol=1e-9)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.5])
def test_gnfw_holds_m200_within_r200(gamma):
    from scipy import integrate

    halo = gnfw_from_m200(1e12, 10.0, gamma)
    r200 = float(r200_from_m200(1e12))
    rho = lambda r: float(halo.density(r))                                           # noqa: E731
    mass = integrate.quad(lambda lr: 4 * np.pi * np.exp(3 * lr) * rho(np.exp(lr)), np.log(r200) - 40,
                          np.log(r200), epsrel=1e-11, limit=200)[0]
    assert mass == pytest.approx(1e12, rel=1e-8)
