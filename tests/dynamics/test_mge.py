"""MGE: projection/deprojection, potential, spherical Profile API, fits, bad input."""

import jax
import jax.numpy as jnp
import numpy
import pytest
from scipy import integrate, special

from dynamics import MGE, NFW, G, Hernquist, Isotropic, Plummer, Zhao, fit_mge, fit_mge_weights, sigma_los
from dynamics.jam_cyl import circular_velocity2, potential_rz
from dynamics.mge import ARCSEC_PC_PER_MPC

pytestmark = pytest.mark.timeout(300)

FLAT = MGE(numpy.array([3e9, 5e8, 4e7]), numpy.array([0.08, 0.6, 2.5]), numpy.array([0.85, 0.55, 0.7]))
ROUND = MGE(numpy.array([3e9, 5e8, 4e7]), numpy.array([0.08, 0.6, 2.5]), numpy.ones(3))


def _los(x, yp, zp, inc):
    """Galaxy (R, z) of the sky point (x, y') at line-of-sight coordinate z'."""
    i = numpy.radians(inc)
    y = -yp * numpy.cos(i) + zp * numpy.sin(i)
    z = yp * numpy.sin(i) + zp * numpy.cos(i)
    return numpy.hypot(x, y), z


@pytest.mark.parametrize("inc", [60.0, 75.0, 90.0])
def test_reprojection_recovers_surface_density(inc):
    dens = jax.jit(lambda R, z: FLAT.density_rz(R, z, inc))
    for x, yp in [(0.0, 0.0), (0.3, 0.1), (-1.0, 0.7), (2.0, -3.0)]:
        f = lambda zp: float(dens(*_los(x, yp, zp, inc)))
        got = integrate.quad(f, -numpy.inf, numpy.inf, epsabs=0, epsrel=1e-13, limit=400)[0]
        numpy.testing.assert_allclose(got, float(FLAT.projected(x, yp)), rtol=1e-10)


def test_intrinsic_axis_ratio_and_totals():
    nu0, q_int = FLAT.deproject(60.0)
    cos2 = numpy.cos(numpy.radians(60.0)) ** 2
    numpy.testing.assert_allclose(q_int**2 * (1 - cos2) + cos2, FLAT.q**2, rtol=1e-14)
    # total of each Gaussian = (2 pi)^{3/2} nu0 sigma^3 q_int
    numpy.testing.assert_allclose((2 * numpy.pi) ** 1.5 * nu0 * FLAT.sigma**3 * q_int, FLAT.total(), rtol=1e-14)


def _phi_T(R, z, m, s, q):
    """Cappellari (2002) eq. 17 by scipy in T (reference)."""
    e2 = 1 - q**2
    f = lambda T: numpy.exp(-T**2 / (2 * s**2) * (R**2 + z**2 / (1 - e2 * T**2))) / numpy.sqrt(1 - e2 * T**2)
    return -numpy.sqrt(2 / numpy.pi) * G * m / s * integrate.quad(f, 0, 1, epsabs=0, epsrel=1e-13, limit=200)[0]


def _phi_3d(R, z, m, s, q):
    """Brute-force potential of an oblate Gaussian: -G int rho / |x - x'| d^3x', with the
    azimuthal integral done analytically (elliptic K) and the (R', z') integral by scipy."""
    from scipy.special import ellipk

    rho0 = m / ((2 * numpy.pi) ** 1.5 * s**3 * q)

    def inner(zp, Rp):
        a = (R + Rp) ** 2 + (z - zp) ** 2
        k2 = 4 * R * Rp / a
        # int_0^{2pi} dphi / sqrt(R^2 + R'^2 - 2 R R' cos phi + dz^2) = 4 K(k^2) / sqrt(a)
        return rho0 * numpy.exp(-(Rp**2 + (zp / q) ** 2) / (2 * s**2)) * Rp * 4 * ellipk(k2) / numpy.sqrt(a)

    pts = [R] if R > 0 else None
    val = integrate.dblquad(inner, 0, 12 * s, -12 * q * s, 12 * q * s, epsabs=0, epsrel=1e-10)[0] \
        if pts is None else sum(
            integrate.dblquad(inner, a, b, -12 * q * s, 12 * q * s, epsabs=0, epsrel=1e-10)[0]
            for a, b in ((0, R), (R, 12 * s)))
    return -G * val


def test_potential_against_quadrature_and_poisson():
    m, s, q = numpy.array([2e10]), numpy.array([1.3]), numpy.array([0.3])
    pot = jax.jit(lambda R, z: potential_rz(R, z, m, s, q))
    for R, z in [(0.0, 0.0), (0.01, 0.02), (1.0, 0.5), (5.0, 3.0), (40.0, 1.0), (300.0, 0.0)]:
        numpy.testing.assert_allclose(float(pot(R, z)), _phi_T(R, z, m[0], s[0], q[0]), rtol=1e-11)
    # far field: point mass
    numpy.testing.assert_allclose(float(pot(3e3, 2e3)), -G * m[0] / numpy.hypot(3e3, 2e3), rtol=1e-6)
    # brute-force 3-D quadrature at two points
    for R, z in [(0.7, 0.2), (2.5, 0.0)]:
        numpy.testing.assert_allclose(float(pot(R, z)), _phi_3d(R, z, m[0], s[0], q[0]), rtol=1e-8)
    # Poisson: laplacian (autodiff) = 4 pi G rho
    lap = jax.jit(lambda R, z: jax.hessian(pot, 0)(R, z) + jax.grad(pot, 0)(R, z) / R + jax.hessian(pot, 1)(R, z))
    rho0 = m[0] / ((2 * numpy.pi) ** 1.5 * s[0] ** 3 * q[0])
    for R, z in [(0.2, 0.1), (1.0, 0.3), (2.0, 0.0)]:
        rho = rho0 * numpy.exp(-(R**2 + (z / q[0]) ** 2) / (2 * s[0] ** 2))
        numpy.testing.assert_allclose(float(lap(R, z)), 4 * numpy.pi * G * rho, rtol=1e-9)


def test_circular_velocity():
    m, s, q = jnp.array([2e10, 5e9]), jnp.array([1.3, 0.2]), jnp.array([0.3, 0.9])
    pot = lambda R: potential_rz(R, 0.0, m, s, q)
    for R in [0.05, 1.0, 10.0]:
        vc2 = float(circular_velocity2(R, m, s, q))
        numpy.testing.assert_allclose(vc2, R * float(jax.grad(pot)(R)), rtol=1e-10)
        ref = 0.0                     # R dPhi/dR from C02 eq. 17 differentiated, scipy in T
        for mm, ss, qq in zip(m.tolist(), s.tolist(), q.tolist()):
            f = lambda T: (T * R / ss) ** 2 * numpy.exp(-(T * R / ss) ** 2 / 2) / numpy.sqrt(1 - (1 - qq**2) * T**2)
            ref += numpy.sqrt(2 / numpy.pi) * G * mm / ss * integrate.quad(f, 0, 1, epsabs=0, epsrel=1e-13)[0]
        numpy.testing.assert_allclose(vc2, ref, rtol=1e-11)
    # the MGE method: round case equals G M(r) / r
    r = jnp.array([0.05, 0.5, 3.0])
    numpy.testing.assert_allclose(ROUND.circular_velocity(r, 90.0) ** 2,
                                  G * ROUND.enclosed_mass(r) / r, rtol=1e-11)


def test_round_mge_is_a_profile():
    r = jnp.array([1e-3, 0.05, 0.5, 3.0, 20.0])
    rho = lambda s: float(ROUND.density(s))
    quad = lambda f, a, b: integrate.quad(f, a, b, epsabs=0, epsrel=1e-13, limit=200)[0]
    mass = [quad(lambda s: 4 * numpy.pi * s * s * rho(s), 0, x) for x in r.tolist()]
    numpy.testing.assert_allclose(ROUND.enclosed_mass(r), mass, rtol=1e-12)
    pot = [-G * (m / x + quad(lambda s: 4 * numpy.pi * s * rho(s), x, numpy.inf)) for m, x in zip(mass, r.tolist())]
    numpy.testing.assert_allclose(ROUND.potential(r), pot, rtol=1e-12)
    surf = [2 * quad(lambda z: rho(numpy.hypot(x, z)), 0, numpy.inf) for x in r.tolist()]
    numpy.testing.assert_allclose(ROUND.surface_density(r), surf, rtol=1e-12)
    numpy.testing.assert_allclose(ROUND.enclosed_mass(1e6), jnp.sum(ROUND.total()), rtol=1e-14)
    numpy.testing.assert_allclose(ROUND.potential(0.0), ROUND.potential(1e-7), rtol=1e-10)
    # the 3-D density deprojects like any MGE, at any inclination
    numpy.testing.assert_allclose(ROUND.density(r), ROUND.density_rz(r, 0.0, 37.0), rtol=1e-14)
    s = sigma_los(jnp.array([0.1, 1.0]), ROUND, ROUND.scaled(3.0), Isotropic())
    assert numpy.all(numpy.isfinite(s)) and numpy.all(s > 0)
    with pytest.raises(ValueError, match="round"):
        FLAT.density(1.0)


def test_from_observed_and_scaled():
    m = MGE.from_observed([100.0, 10.0], [1.0, 4.0], [0.9, 0.6], distance_mpc=10.0)
    kpc = 10.0 * numpy.pi / 0.648 * 1e-3
    numpy.testing.assert_allclose(m.sigma, numpy.array([1.0, 4.0]) * kpc, rtol=1e-15)
    numpy.testing.assert_allclose(m.surf, [1e8, 1e7], rtol=1e-15)
    assert ARCSEC_PC_PER_MPC == pytest.approx(4.84813681109536, rel=1e-14)
    numpy.testing.assert_allclose(m.scaled(2.5).surf, 2.5 * m.surf, rtol=1e-15)
    numpy.testing.assert_allclose(m.scaled(jnp.array([1.0, 2.0])).surf, m.surf * jnp.array([1.0, 2.0]))
    # M/L is differentiable
    g = jax.grad(lambda ml: jnp.sum(m.scaled(ml).total()))(3.0)
    numpy.testing.assert_allclose(g, jnp.sum(m.total()), rtol=1e-14)


@pytest.mark.parametrize("profile", [NFW(1e7, 10.0), Hernquist(1e11, 2.0), Plummer(1e9, 0.5),
                                     Zhao(1e7, 5.0, 2.0, 3.0, 1.5)], ids=lambda p: type(p).__name__)
def test_fit_mge_enclosed_mass(profile):
    for (a, b), n, tol in [((0.05, 50.0), 32, 2e-5), ((0.1, 10.0), 32, 5e-7), ((0.01, 100.0), 48, 1e-6)]:
        r = numpy.geomspace(a, b, 400)
        ref = numpy.asarray(profile.enclosed_mass(r))
        m = fit_mge(profile, a, b, n)
        assert numpy.all(m.surf >= 0) and numpy.all(m.q == 1)
        err = numpy.max(numpy.abs(numpy.asarray(m.enclosed_mass(r)) / ref - 1))
        assert err < tol, (a, b, n, err)
    # the differentiable variant (floor ~1e-8 from its ridge)
    w, s = fit_mge_weights(profile, 0.05, 50.0, 32)
    r = numpy.geomspace(0.05, 50.0, 400)
    x = r[:, None] / numpy.asarray(s)
    mm = numpy.sum(numpy.asarray(w) * (special.erf(x / numpy.sqrt(2)) - numpy.sqrt(2 / numpy.pi) * x * numpy.exp(-x**2 / 2)), 1)
    assert numpy.max(numpy.abs(mm / numpy.asarray(profile.enclosed_mass(r)) - 1)) < 2e-5


def test_fit_mge_weights_differentiable():
    def total_inside(r_s):
        w, s = fit_mge_weights(NFW(1e7, r_s), 0.1, 10.0, 32)
        x = 2.0 / s
        return jnp.sum(w * (jax.scipy.special.erf(x / jnp.sqrt(2.0)) - jnp.sqrt(2 / jnp.pi) * x * jnp.exp(-x**2 / 2)))
    g = jax.grad(total_inside)(8.0)
    fd = (total_inside(8.0 + 1e-4) - total_inside(8.0 - 1e-4)) / 2e-4
    exact = jax.grad(lambda rs: NFW(1e7, rs).enclosed_mass(2.0))(8.0)
    numpy.testing.assert_allclose(g, fd, rtol=1e-6)
    numpy.testing.assert_allclose(g, exact, rtol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="q must be in"):
        MGE([1.0, 2.0], [1.0, 2.0], [0.5, 1.2])
    with pytest.raises(ValueError, match="q must be in"):
        MGE([1.0], [1.0], [0.0])
    with pytest.raises(ValueError, match="sigma must be"):
        MGE([1.0, 2.0], [1.0, -2.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="surf must be"):
        MGE([-1.0, 2.0], [1.0, 2.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="one length"):
        MGE([1.0, 2.0], [1.0, 2.0, 3.0], [0.5, 0.6])
    with pytest.raises(ValueError, match="inclination 50.0 deg cannot deproject Gaussians \\[1\\]"):
        FLAT.deproject(50.0)                   # cos^2(50) = 0.413 > 0.55^2 (not 0.7^2)
    with pytest.raises(ValueError, match="inclination must be"):
        FLAT.deproject(95.0)
    with pytest.raises(ValueError, match="distance_mpc"):
        MGE.from_observed([1.0], [1.0], [0.5], -3.0)
    with pytest.raises(ValueError, match="r_min < r_max"):
        fit_mge(NFW(1e7, 1.0), 2.0, 1.0)
    # traced values pass unchecked
    assert jax.jit(lambda q: MGE(jnp.ones(1), jnp.ones(1), q).total())(jnp.array([0.5])).shape == (1,)


def test_mass_in_sphere_against_scipy():
    """Luminosity within a sphere of a flattened MGE: 2-D scipy quadrature of the deprojected density."""
    mge = MGE(numpy.array([1e8, 1e7]), numpy.array([0.3, 2.0]), numpy.array([0.8, 0.6]))
    inc, r = 70.0, 1.0
    nu0, q_int = (numpy.asarray(v) for v in mge.deproject(inc))

    def density(z, R):
        return sum(n * numpy.exp(-(R**2 + (z / q) ** 2) / (2 * s**2)) for n, q, s in zip(nu0, q_int, [0.3, 2.0]))

    ref = 2 * integrate.dblquad(lambda z, R: 2 * numpy.pi * R * density(z, R), 0, r, 0,
                                lambda R: numpy.sqrt(max(r * r - R * R, 0.0)), epsabs=0, epsrel=1e-11)[0]
    assert float(mge.mass_in_sphere(r, inc)) == pytest.approx(ref, rel=1e-9)
    assert float(mge.mass_in_sphere(1e3, inc)) == pytest.approx(float(mge.total().sum()), rel=1e-12)


def test_mass_in_sphere_of_a_round_mge_is_its_enclosed_mass():
    mge = MGE(numpy.array([1e8, 1e7, 1e6]), numpy.array([0.3, 2.0, 9.0]), numpy.ones(3))
    for r in (0.1, 1.0, 10.0):
        assert float(mge.mass_in_sphere(r, 50.0)) == pytest.approx(float(mge.enclosed_mass(r)), rel=1e-10)
