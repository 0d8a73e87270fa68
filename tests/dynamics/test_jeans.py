"""Spherical Jeans models against closed forms, scipy brute force and the Jeans equation."""

import jax
import jax.numpy as jnp
import mpmath
import numpy
import pytest
from jax.test_util import check_grads
from scipy import integrate, special

from dynamics import (
    G,
    NFW,
    BaesVanHese,
    ConstantBeta,
    Hernquist,
    Isotropic,
    OsipkovMerritt,
    Plummer,
    Zhao,
    sigma_los,
    sigma_r,
)
from dynamics.jeans import sigma_r2_profile

mpmath.mp.dps = 40
RTOL = 1e-8

sigma_los_jit = jax.jit(sigma_los, static_argnames="grid")
sigma_r_jit = jax.jit(sigma_r)


# ----------------------------------------------------------------------------- closed forms
def test_plummer_isotropic_sigma_los_and_sigma_r():
    m, a = 3e6, 0.3
    p = Plummer(m, a)
    R = jnp.geomspace(1e-3, 30.0, 9)
    expected = 3 * numpy.pi * G * m / (64 * numpy.sqrt(R**2 + a**2))     # Dejonghe 1987
    for grid in (False, True):
        got = sigma_los_jit(R, p, p, Isotropic(), grid=grid) ** 2
        numpy.testing.assert_allclose(got, expected, rtol=RTOL)
    numpy.testing.assert_allclose(sigma_r_jit(R, p, p, Isotropic()) ** 2,
                                  G * m / (6 * numpy.sqrt(R**2 + a**2)), rtol=RTOL)


def test_hernquist_isotropic_sigma_r():
    # Hernquist (1990) eq. 10
    m, a = 2e10, 1.5
    h = Hernquist(m, a)
    r = numpy.array([0.01, 0.3, 1.5, 4.0, 7.0])

    def ref(x):
        x = mpmath.mpf(x)
        return G * m / (12 * a) * (12 * x * (x + a) ** 3 / a**4 * mpmath.log((x + a) / x)
                                   - x / (x + a) * (25 + 52 * x / a + 42 * (x / a) ** 2 + 12 * (x / a) ** 3))
    expected = numpy.array([float(ref(x)) for x in r])
    numpy.testing.assert_allclose(sigma_r_jit(jnp.asarray(r), h, h, Isotropic()) ** 2, expected, rtol=RTOL)


def test_hernquist_isotropic_sigma_los_projection_of_eq10():
    # Sigma sigma_los^2 = 2 int_R^inf rho sigma_r^2 r dr / sqrt(r^2 - R^2) with Hernquist (1990) eqs. 2,
    # 10 and 32 (mpmath, r = R cosh t); isotropic, self-consistent
    m, a = 2e10, 1.5
    h = Hernquist(m, a)
    R = numpy.array([0.05, 1.0, 6.0])

    def rho_s2(x):
        rho = m * a / (2 * mpmath.pi * x * (x + a) ** 3)
        s2 = G * m / (12 * a) * (12 * x * (x + a) ** 3 / a**4 * mpmath.log((x + a) / x)
                                 - x / (x + a) * (25 + 52 * x / a + 42 * (x / a) ** 2 + 12 * (x / a) ** 3))
        return rho * s2

    def ref(Rv):
        Rv = mpmath.mpf(Rv)
        p = 2 * mpmath.quad(lambda t: rho_s2(Rv * mpmath.cosh(t)) * Rv * mpmath.cosh(t), [0, 1, 4, 12, 40])
        return p / float(h.surface_density(float(Rv)))
    expected = numpy.array([float(ref(x)) for x in R])
    for grid in (False, True):
        numpy.testing.assert_allclose(sigma_los_jit(jnp.asarray(R), h, h, Isotropic(), grid=grid) ** 2,
                                      expected, rtol=RTOL)


def test_nfw_isotropic_sigma_r_lokas_mamon():
    # Lokas & Mamon (2001) eq. 14, written for x = r / r_s
    rho_s, r_s = 1e7, 2.0
    n = NFW(rho_s, r_s)
    xs = numpy.array([0.05, 0.5, 1.0, 3.0, 10.0])

    def ref(x):
        x = mpmath.mpf(x)
        bracket = (mpmath.pi**2 - mpmath.log(x) - 1 / x - 1 / (1 + x) ** 2 - 6 / (1 + x)
                   + (1 + 1 / x**2 - 4 / x - 2 / (1 + x)) * mpmath.log(1 + x)
                   + 3 * mpmath.log(1 + x) ** 2 + 6 * mpmath.polylog(2, -x))
        return 4 * mpmath.pi * G * rho_s * r_s**2 * x * (1 + x) ** 2 / 2 * bracket
    expected = numpy.array([float(ref(x)) for x in xs])
    numpy.testing.assert_allclose(sigma_r_jit(jnp.asarray(r_s * xs), n, n, Isotropic()) ** 2, expected,
                                  rtol=RTOL)


# ----------------------------------------------------------------------------- scipy brute force
STARS = dict(m_tot=1e6, r_s=0.25)
HALO = dict(rho_s=3e7, r_s=1.2, alpha=1.5, beta=3.5, gamma=0.5)


def _zhao_mass(r):
    a, b, g = HALO["alpha"], HALO["beta"], HALO["gamma"]
    x = (r / HALO["r_s"]) ** a
    p, q = (3 - g) / a, (b - 3) / a
    return (4 * numpy.pi * HALO["rho_s"] * HALO["r_s"] ** 3 / a * special.beta(p, q)
            * special.betainc(p, q, x / (1 + x)))       # Zhao (1996) eq. 5


def _nu(r):
    return (1 + (r / STARS["r_s"]) ** 2) ** -2.5


def _mass(r):
    return STARS["m_tot"] * r**3 / (r**2 + STARS["r_s"] ** 2) ** 1.5 + _zhao_mass(r)


@pytest.fixture(autouse=True)
def _quiet_quad():
    # scipy quad warns about its own round-off at epsrel 1e-12; the assertions judge accuracy
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        yield


def _brute_sigma_los2(R, beta, lnf):
    """Double integral: Jeans integral for nu sigma_r^2 inside the projection (r = R cosh t)."""
    def nu_s2(r):
        f = lambda s: numpy.exp(lnf(s) - lnf(r)) * _nu(s) * G * _mass(s) / s**2
        return integrate.quad(f, r, numpy.inf, epsabs=0, epsrel=1e-12, limit=200)[0]

    def proj(t):
        r = R * numpy.cosh(t)
        return (1 - beta(r) / numpy.cosh(t) ** 2) * nu_s2(r) * r
    num = 2 * integrate.quad(proj, 0, 40, epsabs=0, epsrel=1e-11, limit=200)[0]
    den = 2 * integrate.quad(lambda t: _nu(R * numpy.cosh(t)) * R * numpy.cosh(t), 0, 40,
                             epsabs=0, epsrel=1e-13, limit=200)[0]
    return num / den


BRUTE = [
    ("isotropic", Isotropic(), lambda r: 0.0, lambda r: 0.0),
    ("om", OsipkovMerritt(0.4), lambda r: r**2 / (r**2 + 0.16), lambda r: numpy.log(r**2 + 0.16)),
    ("constant", ConstantBeta(0.3), lambda r: 0.3, lambda r: 0.6 * numpy.log(r)),
    ("tangential", ConstantBeta(-0.5), lambda r: -0.5, lambda r: -1.0 * numpy.log(r)),
    ("bvh", BaesVanHese(-0.1, 0.5, 0.5, 2.0),
     lambda r: (-0.1 + 0.5 * (r / 0.5) ** 2) / (1 + (r / 0.5) ** 2),
     lambda r: -0.2 * numpy.log(r) + 2 * 0.6 / 2.0 * numpy.log1p((r / 0.5) ** 2)),
]


@pytest.mark.parametrize("name, model, beta, lnf", BRUTE, ids=[b[0] for b in BRUTE])
def test_sigma_los_against_scipy_brute_force(name, model, beta, lnf):
    stars, halo = Plummer(**STARS), Zhao(**HALO)
    R = numpy.array([0.02, 0.3, 1.5])
    got = numpy.asarray(sigma_los_jit(jnp.asarray(R), stars, stars + halo, model, grid=False)) ** 2
    expected = [_brute_sigma_los2(x, beta, lnf) for x in R]
    numpy.testing.assert_allclose(got, expected, rtol=RTOL)


# ----------------------------------------------------------------------------- identities
@pytest.mark.parametrize("model", [ConstantBeta(0.4), OsipkovMerritt(0.5), BaesVanHese(-0.3, 0.6, 0.4, 3.0)],
                         ids=["constant", "om", "bvh"])
def test_jeans_equation_residual(model):
    # d(nu sigma_r^2)/dr + 2 beta nu sigma_r^2 / r = -nu G M / r^2, by autodiff
    stars, halo = Plummer(**STARS), Zhao(**HALO)
    mass = stars + halo

    def pressure(r):
        return stars.density(r) * sigma_r2_profile(r, stars, mass, model)

    @jax.jit
    def residual(r):
        dp = jax.grad(pressure)(r)
        lhs = dp + 2 * model.beta(r) * pressure(r) / r
        rhs = -stars.density(r) * G * mass.enclosed_mass(r) / r**2
        return lhs / rhs - 1.0

    for r in (0.03, 0.25, 1.0, 4.0):
        assert abs(float(residual(r))) < 1e-8


def test_limits_beta_to_zero_and_r_a_to_infinity():
    stars, halo = Plummer(**STARS), NFW(1e7, 1.0)
    R = jnp.geomspace(0.01, 3.0, 6)
    iso = sigma_los_jit(R, stars, stars + halo, Isotropic(), grid=False)
    for model in (ConstantBeta(1e-12), OsipkovMerritt(1e9), BaesVanHese(0.0, 0.0, 1.0, 2.0)):
        numpy.testing.assert_allclose(sigma_los_jit(R, stars, stars + halo, model, grid=False), iso,
                                      rtol=1e-10)
    numpy.testing.assert_allclose(sigma_r_jit(R, stars, stars + halo, OsipkovMerritt(1e9)),
                                  sigma_r_jit(R, stars, stars + halo, Isotropic()), rtol=1e-10)


@pytest.mark.parametrize("model", [OsipkovMerritt(0.4), BaesVanHese(-0.1, 0.5, 0.5, 2.0)], ids=["om", "bvh"])
def test_grid_path_matches_direct_path(model):
    stars, halo = Plummer(**STARS), Zhao(**HALO)
    R = jnp.geomspace(0.01, 2.0, 300)
    grid = sigma_los_jit(R, stars, stars + halo, model, grid=True)
    direct = sigma_los_jit(R[::15], stars, stars + halo, model, grid=False)
    numpy.testing.assert_allclose(grid[::15], direct, rtol=1e-8)


# ----------------------------------------------------------------------------- jax behaviour
def test_jit_eager_batching_shapes_and_no_retrace():
    stars, halo, om = Plummer(**STARS), NFW(1e7, 1.0), OsipkovMerritt(0.5)
    R = jnp.asarray([[0.05, 0.2], [0.6, 1.5]])
    eager = sigma_los(R, stars, stars + halo, om)
    assert eager.shape == (2, 2)
    numpy.testing.assert_allclose(sigma_los_jit(R, stars, stars + halo, om, grid=None), eager, rtol=1e-13)
    scalar = sigma_los_jit(R[1, 0], stars, stars + halo, om, grid=None)
    numpy.testing.assert_allclose(scalar, eager[1, 0], rtol=1e-13)
    rho = jnp.asarray([5e6, 1e7])
    batched = jax.jit(jax.vmap(lambda q: sigma_los(R, stars, stars + NFW(q, 1.0), om)))(rho)
    numpy.testing.assert_allclose(batched[1], eager, rtol=1e-13)
    traces = []

    @jax.jit
    def f(h, a):
        traces.append(1)
        return sigma_los(R, stars, stars + h, a)

    f(halo, om)
    f(NFW(2e7, 0.7), OsipkovMerritt(0.9))
    assert len(traces) == 1


def test_gradients_against_finite_differences():
    stars = Plummer(**STARS)
    R = jnp.asarray([0.05, 0.4, 1.5])

    def model(lp):
        p = jnp.exp(lp)
        halo = Zhao(p[0], p[1], p[2], 3.5, 0.5)
        return jnp.log(sigma_los(R, stars, stars + halo, BaesVanHese(-0.1, 0.5, p[3], 2.0)))

    check_grads(jax.jit(model), (jnp.log(jnp.asarray([3e7, 1.2, 1.5, 0.5])),), order=1, modes=("rev",))

    def radial(lp):
        p = jnp.exp(lp)
        return jnp.log(sigma_r(R, stars, stars + NFW(p[0], p[1]), OsipkovMerritt(p[2])))

    check_grads(jax.jit(radial), (jnp.log(jnp.asarray([1e7, 1.0, 0.5])),), order=1, modes=("rev",))


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises():
    p = Plummer(1e6, 0.3)
    with pytest.raises(ValueError, match="R must be"):
        sigma_los(numpy.array([0.1, numpy.nan]), p, p)
    with pytest.raises(ValueError, match="R must be"):
        sigma_los(numpy.array([-0.1, 0.2]), p, p)
    with pytest.raises(ValueError, match="r must be"):
        sigma_r(numpy.array([numpy.inf]), p, p)
    with pytest.raises(ValueError, match="tracer"):
        sigma_los(0.1, "plummer", p)
    with pytest.raises(ValueError, match="anisotropy"):
        sigma_los(0.1, p, p, 0.3)
