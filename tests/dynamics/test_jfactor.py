"""J- and D-factors: NFW closed forms (Evans, Sanders & Geringer-Sameth 2016), scipy brute force."""

import warnings

import jax
import jax.numpy as jnp
import numpy
import pytest
from jax.test_util import check_grads
from scipy import integrate

from dynamics import NFW, Burkert, Plummer, d_factor, j_factor
from dynamics.constants import D_UNIT, DEG, J_UNIT

RTOL = 1e-8


def _chi(x):
    # Hernquist (1990) eq. 33 / Bartelmann (1996)
    return numpy.arccosh(1 / x) / numpy.sqrt(1 - x**2) if x < 1 else numpy.arccos(1 / x) / numpy.sqrt(x**2 - 1)


def test_nfw_total_j_factor():
    # ESG16: for D >> D theta >> r_s the cone holds the whole rho^2, J -> 4 pi rho_s^2 r_s^3 / (3 D^2)
    rho_s, r_s, dist = 1e7, 1.0, 1e6
    theta = 1e3 * r_s / dist / DEG
    expected = 4 * numpy.pi / 3 * rho_s**2 * r_s**3 / dist**2 * J_UNIT
    assert float(j_factor(NFW(rho_s, r_s), dist, theta)) == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("x", [0.3, 1.0, 2.0, 10.0])
def test_nfw_d_factor_distant_limit(x):
    # ESG16 eq. 5 in the distant limit: D = M_proj(D theta) / D^2, with the NFW projected mass
    # M_proj(X r_s) = 4 pi rho_s r_s^3 [ln(X/2) + X(X)] (Bartelmann 1996)
    rho_s, r_s, dist = 1e7, 1.0, 1e5
    theta = x * r_s / dist / DEG
    m_proj = 4 * numpy.pi * rho_s * r_s**3 * (numpy.log(x / 2) + (_chi(x) if x != 1 else 1.0))
    expected = m_proj / dist**2 * D_UNIT
    assert float(d_factor(NFW(rho_s, r_s), dist, theta)) == pytest.approx(expected, rel=RTOL)


def test_plummer_total_d_factor():
    m, dist = 1e6, 1e9
    theta = 1e5 / dist / DEG
    assert float(d_factor(Plummer(m, 1.0), dist, theta)) == pytest.approx(m / dist**2 * D_UNIT, rel=RTOL)


def _brute(profile, power, dist, theta_deg):
    """2 pi int_0^theta sin(psi) int_0^inf rho(r(l, psi))^power dl dpsi with scipy quad."""
    rho = jax.jit(lambda r: profile.density(r))
    theta = theta_deg * DEG

    def inner(psi):
        f = lambda l: float(rho(numpy.sqrt(max(l * l + dist * dist - 2 * l * dist * numpy.cos(psi), 0.0))))**power
        mid = dist * numpy.cos(psi)
        a = integrate.quad(f, 0, mid, epsabs=0, epsrel=1e-11, limit=200)[0]
        b = integrate.quad(f, mid, numpy.inf, epsabs=0, epsrel=1e-11, limit=200)[0]
        return 2 * numpy.pi * numpy.sin(psi) * (a + b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return integrate.quad(inner, 0, theta, epsabs=0, epsrel=1e-10, limit=100)[0]


@pytest.mark.parametrize("profile, dist, theta", [
    (Burkert(3e7, 0.8), 20.0, 8.0),
    (Plummer(1e8, 2.0), 10.0, 30.0),
], ids=["burkert-near", "plummer-wide"])
def test_against_scipy_brute_force(profile, dist, theta):
    assert float(j_factor(profile, dist, theta)) == pytest.approx(
        _brute(profile, 2, dist, theta) * J_UNIT, rel=RTOL)
    assert float(d_factor(profile, dist, theta)) == pytest.approx(
        _brute(profile, 1, dist, theta) * D_UNIT, rel=RTOL)


def test_broadcasting_jit_vmap_and_gradients():
    halo = NFW(1e7, 0.7)
    theta = jnp.asarray([0.1, 0.5, 2.0])
    dist = jnp.asarray([[30.0], [80.0]])
    out = j_factor(halo, dist, theta)
    assert out.shape == (2, 3)
    numpy.testing.assert_allclose(jax.jit(j_factor)(halo, dist, theta), out, rtol=1e-13)
    numpy.testing.assert_allclose(j_factor(halo, 80.0, 0.5), out[1, 1], rtol=1e-13)
    batched = jax.jit(jax.vmap(lambda rs: d_factor(NFW(1e7, rs), 80.0, 0.5)))(jnp.asarray([0.5, 0.7]))
    numpy.testing.assert_allclose(batched[1], d_factor(halo, 80.0, 0.5), rtol=1e-13)
    assert bool(jnp.all(jnp.diff(out, axis=1) > 0))           # J grows with the cone

    def logj(p):
        e = jnp.exp(p)
        return jnp.log(jnp.stack([j_factor(NFW(e[0], e[1]), e[2], e[3]),
                                  d_factor(NFW(e[0], e[1]), e[2], e[3])]))

    check_grads(jax.jit(logj), (jnp.log(jnp.asarray([1e7, 0.7, 80.0, 0.5])),), order=1, modes=("rev",))


@pytest.mark.parametrize("args, match", [
    ((NFW(1e7, 1.0), 80.0, 0.0), "theta"),
    ((NFW(1e7, 1.0), 80.0, 95.0), "theta"),
    ((NFW(1e7, 1.0), -80.0, 0.5), "distance"),
    ((NFW(1e7, 1.0), numpy.nan, 0.5), "distance"),
    (("nfw", 80.0, 0.5), "profile"),
])
def test_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        j_factor(*args)
    with pytest.raises(ValueError, match=match):
        d_factor(*args)
