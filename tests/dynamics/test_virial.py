"""Virial shape parameters and projected fourth moments."""

import warnings

import jax
import jax.numpy as jnp
import numpy
import pytest
from jax.test_util import check_grads
from scipy import integrate

from dynamics import (
    G,
    NFW,
    BaesVanHese,
    ConstantBeta,
    Isotropic,
    OsipkovMerritt,
    Plummer,
    Zhao,
    kurtosis_los,
    sigma_los4,
    virial_shape_parameters,
)
from dynamics.jeans import sigma_los2_profile

RTOL = 1e-8


@pytest.fixture(autouse=True)
def _quiet_quad():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        yield


def _radial_moment(fun, power, split=0.3):
    """int_0^inf fun(R) R^power dR by scipy quad: [0, split] in R, then in ln R to 1e5 splits."""
    f = lambda R: fun(R) * R**power
    g = lambda x: f(numpy.exp(x)) * numpy.exp(x)
    edges = numpy.log(split) + numpy.array([0.0, 2.0, 5.0, 10.0, 15.0])
    total = integrate.quad(f, 0, split, epsabs=0, epsrel=1e-13, limit=200)[0]
    for a, b in zip(edges[:-1], edges[1:]):
        total += integrate.quad(g, a, b, epsabs=0, epsrel=1e-13, limit=200)[0]
    return total


def test_plummer_virial_shape_parameters_against_quad():
    # isotropic self-consistent Plummer: nu sigma_r^2 = rho G M / (6 sqrt(r^2 + a^2))
    m, a = 2e6, 0.3
    p = Plummer(m, a)
    rho = lambda r: 3 * m / (4 * numpy.pi * a**3) * (1 + (r / a) ** 2) ** -2.5
    mass = lambda r: m * r**3 / (r**2 + a**2) ** 1.5
    s2 = lambda r: G * m / (6 * numpy.sqrt(r**2 + a**2))
    vs1 = 0.4 * _radial_moment(lambda r: G * mass(r) * rho(r) * 5 * s2(r), 1)
    vs2 = 4 / 35 * _radial_moment(lambda r: G * mass(r) * rho(r) * 7 * s2(r), 3)
    got = jax.jit(virial_shape_parameters)(p, p, Isotropic())
    assert float(got[0]) == pytest.approx(vs1, rel=RTOL)
    assert float(got[1]) == pytest.approx(vs2, rel=RTOL)


@pytest.mark.parametrize("model", [Isotropic(), ConstantBeta(0.35), ConstantBeta(-0.6)],
                         ids=["iso", "radial", "tangential"])
def test_virial_shape_parameters_are_moments_of_projected_fourth_moment(model):
    # Richardson & Fairbairn (2014): v_s1 = int Sigma <v^4> R dR, v_s2 = int Sigma <v^4> R^3 dR
    stars, halo = Plummer(1e6, 0.3), NFW(1e7, 1.0)
    f = jax.jit(lambda R: stars.surface_density(R) * sigma_los4(R, stars, stars + halo, model))
    g = lambda R: float(f(R))
    vs1, vs2 = jax.jit(virial_shape_parameters)(stars, stars + halo, model)
    assert float(vs1) == pytest.approx(_radial_moment(g, 1), rel=RTOL)
    assert float(vs2) == pytest.approx(_radial_moment(g, 3), rel=RTOL)


@pytest.mark.parametrize("model", [OsipkovMerritt(0.3), BaesVanHese(-0.4, 0.7, 0.5, 2.0)], ids=["om", "bvh"])
def test_projected_virial_theorem_for_second_moment(model):
    # int Sigma sigma_los^2 R dR = (2/3) int G M nu r dr, whatever beta(r) (Binney & Tremaine 4.249)
    stars, halo = Plummer(1e6, 0.3), Zhao(3e7, 1.2, 1.5, 3.5, 0.5)
    f = jax.jit(lambda R: stars.surface_density(R)
                * sigma_los2_profile(R, stars, stars + halo, model, grid=False))
    lhs = _radial_moment(lambda R: float(f(R)), 1)
    dens = jax.jit(lambda r: stars.density(r))
    mass = jax.jit(lambda r: (stars + halo).enclosed_mass(r))
    rhs = 2 / 3 * _radial_moment(lambda r: G * float(mass(r)) * float(dens(r)), 1)
    assert lhs == pytest.approx(rhs, rel=RTOL)


def test_plummer_isotropic_kurtosis_closed_form():
    # f(E) ~ E^(7/2): locally the 1-D velocity distribution is (1 - v^2/(2 Psi))^(9/2) (kurtosis
    # 36/14), and nu <v^2k> ~ Psi^(5+k); projecting Psi = G M (R^2 + a^2 + z^2)^(-1/2) gives a
    # radius-independent LOS kurtosis (36/14) B(1/2, 3) B(1/2, 2) / B(1/2, 5/2)^2.
    from scipy.special import beta as B

    p = Plummer(1e6, 0.3)
    expected = 36 / 14 * B(0.5, 3) * B(0.5, 2) / B(0.5, 2.5) ** 2
    got = jax.jit(kurtosis_los)(jnp.asarray([0.003, 0.1, 0.3, 1.0, 3.0]), p, p)
    numpy.testing.assert_allclose(got, expected, rtol=RTOL)


def test_gradients_and_batching():
    stars = Plummer(1e6, 0.3)

    def vsp(lp):
        p = jnp.exp(lp)
        return jnp.log(jnp.stack(virial_shape_parameters(stars, stars + NFW(p[0], p[1]), ConstantBeta(0.2))))

    check_grads(jax.jit(vsp), (jnp.log(jnp.asarray([1e7, 1.0])),), order=1, modes=("rev",))
    batched = jax.jit(jax.vmap(vsp))(jnp.log(jnp.asarray([[1e7, 1.0], [2e7, 0.5]])))
    numpy.testing.assert_allclose(batched[1], vsp(jnp.log(jnp.asarray([2e7, 0.5]))), rtol=1e-12)


def test_bad_input_raises():
    p = Plummer(1e6, 0.3)
    with pytest.raises(ValueError, match="Isotropic or ConstantBeta"):
        sigma_los4(0.1, p, p, OsipkovMerritt(0.5))
    with pytest.raises(ValueError, match="R must be"):
        sigma_los4(numpy.array([numpy.nan]), p, p)
    with pytest.raises(ValueError, match="mass"):
        virial_shape_parameters(p, None)
