"""Spherically aligned JAM (C20): Jeans equations, scipy brute force, limits, jampy."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy  # noqa: E402
import pytest  # noqa: E402
from scipy import integrate  # noqa: E402

from dynamics import G, MGE, ConstantBeta, sigma_los  # noqa: E402
from dynamics import jam_cyl  # noqa: E402
from dynamics.jam_sph import (  # noqa: E402
    SphSettings,
    intrinsic_moments_sph,
    projected_second_moment_sph,
    split_mass,
)

TRACER = MGE(numpy.array([1e9, 2e8, 3e7]), numpy.array([0.1, 0.5, 2.0]), numpy.array([0.9, 0.6, 0.75]))
MASS = MGE(numpy.array([3e9, 6e8, 9e7, 2e7]), numpy.array([0.1, 0.5, 2.0, 6.0]), numpy.array([0.9, 0.6, 0.75, 0.95]))
BETA = numpy.array([0.3, -0.2, 0.1])
INC = 70.0
M_BH = 3e7
FINE = SphSettings(radial=(24, 10), mass=48, los=(16, 10))


def _pieces(tracer=TRACER, mass=MASS, inc=INC, beta=BETA, m_bh=M_BH, halo=None):
    """(tr, ms) tuples: tracer deprojected, mass MGE (+ round halo Gaussians) + black hole."""
    nu0, p = tracer.deproject(inc)
    tr = (nu0, tracer.sigma, p, 1.0 / (1.0 - jnp.broadcast_to(jnp.asarray(beta, dtype=float), nu0.shape)))
    _, qm = mass.deproject(inc)
    tot, sig, e2 = [mass.total()], [mass.sigma], [1.0 - qm**2]
    if halo is not None:
        tot.append(jnp.asarray(halo[0]))
        sig.append(jnp.asarray(halo[1]))
        e2.append(jnp.zeros(len(halo[1])))
    tot.append(jnp.array([m_bh]))
    sig.append(jnp.ones(1))
    e2.append(jnp.zeros(1))
    point = numpy.zeros(sum(len(t) for t in tot), dtype=bool)
    point[-1] = True
    return tr, (jnp.concatenate(tot), jnp.concatenate(sig), jnp.concatenate(e2), point)


def _density(R, z, tr):
    nu0, s, p, _ = tr
    return jnp.sum(nu0 * jnp.exp(-(R**2 + (z / p) ** 2) / (2.0 * s**2)))


def _potential(R, z, ms):
    m, s, e2, point = ms
    flat = ~point
    phi = jam_cyl.potential_rz(R, z, m[flat], s[flat], jnp.sqrt(1.0 - e2[flat]))
    return phi - G * jnp.sum(m[point]) / jnp.sqrt(R**2 + z**2)


# ----------------------------------------------------------------------------- Jeans equations
_TR, _MS = _pieces()


@jax.jit
def _jeans_terms(R, z):
    """Terms of the radial and theta Jeans equations (spherical alignment) at (R, z)."""
    tr, ms = _TR, _MS
    st = SphSettings(radial=(12, 8), mass=32)
    mom = lambda a, b: jnp.stack(intrinsic_moments_sph(a, b, tr, ms, st))
    Xr, Xt, Xp = mom(R, z)
    dR, dz = jax.jacfwd(mom, argnums=(0, 1))(R, z)
    pR, pz = jax.grad(_potential, argnums=(0, 1))(R, z, ms)
    nu = _density(R, z, tr)
    r = jnp.hypot(R, z)
    st_, ct = R / r, z / r
    d_r = st_ * dR + ct * dz                   # d/dr
    d_t = ct * dR - st_ * dz                   # (1/r) d/dtheta
    phi_r, phi_t = st_ * pR + ct * pz, ct * pR - st_ * pz
    # spherically aligned (<v_r v_theta> = 0): radial and theta equations
    radial = jnp.stack([d_r[0], (2 * Xr - Xt - Xp) / r, nu * phi_r])
    theta = jnp.stack([d_t[1], (Xt - Xp) * (ct / st_) / r, nu * phi_t])
    return radial, theta


@pytest.mark.parametrize("R,z", [(0.05, 0.03), (0.4, 0.25), (1.5, 0.2), (0.2, 1.1)])
def test_jeans_equations(R, z):
    for terms in _jeans_terms(R, z):
        terms = numpy.asarray(terms)
        assert abs(terms.sum()) < 1e-7 * numpy.abs(terms).max()


def test_boundary_condition_and_anisotropy():
    tr, ms = _pieces()
    # sigma_theta^2 = (1 - beta) sigma_r^2 per Gaussian: the sums obey it for equal beta
    tr1, ms1 = _pieces(beta=0.25)
    a = intrinsic_moments_sph(0.2, 0.1, tr1, ms1)
    numpy.testing.assert_allclose(a[1], 0.75 * a[0], rtol=1e-13)
    centre = intrinsic_moments_sph(0.3, 0.1, tr, ms)
    for R, z in [(30.0, 0.0), (0.0, 30.0), (25.0, 20.0)]:
        far = intrinsic_moments_sph(R, z, tr, ms)
        for f, c in zip(far, centre):
            assert 0.0 <= float(f) < 1e-30 * float(c)


# ----------------------------------------------------------------------------- brute force
def _h_brute(R, z, ms):
    """(dPhi/dz) / z by scipy quad over T (derivative of Cappellari 2002 eq. 17)."""
    m, s, e2, point = (numpy.asarray(a) for a in ms)
    out = G * float(numpy.sum(m[point])) / (R**2 + z**2) ** 1.5
    for mj, sj, ej in zip(m[~point], s[~point], e2[~point]):
        f = lambda T: T**2 * numpy.exp(-T**2 * (R**2 + z**2 / (1 - ej * T**2)) / (2 * sj**2)) / (1 - ej * T**2) ** 1.5
        out += numpy.sqrt(2 / numpy.pi) * G * mj / sj**3 * integrate.quad(f, 0, 1, epsabs=0, epsrel=1e-13,
                                                                            limit=200)[0]
    return out


@pytest.mark.parametrize("R,z", [(0.03, 0.01), (0.3, 0.2), (1.0, 0.8)])
def test_radial_against_scipy(R, z):
    """nu <v_r^2> of each tracer Gaussian: integral from infinity along the characteristic
    R' r'^-beta = R r^-beta of the radial equation (C20 sec. 4), scipy quad."""
    tr, ms = _pieces()
    mass = MGE(numpy.array([3e9, 6e8]), numpy.array([0.1, 0.5]), numpy.array([0.9, 0.6]))
    tr, ms = _pieces(mass=mass)
    r = numpy.hypot(R, z)
    nu0, s, p, b = (numpy.asarray(a) for a in tr)
    for k in range(3):
        beta = 1 - 1 / b[k]

        def integrand(rp):
            Rp2 = R**2 * (rp / r) ** (2 * beta)
            zp2 = rp**2 - Rp2
            nu = nu0[k] * numpy.exp(-(Rp2 + zp2 / p[k] ** 2) / (2 * s[k] ** 2))
            return (rp / r) ** (2 * beta) * nu * _h_brute(numpy.sqrt(Rp2), numpy.sqrt(zp2), ms) * rp

        pts = [r + x for x in (s[k] / 10, s[k], 3 * s[k])]
        ref = integrate.quad(integrand, r, r + 12 * s[k], points=pts, epsabs=0, epsrel=1e-12, limit=400)[0]
        one = tuple(a[k:k + 1] for a in tr)
        got = intrinsic_moments_sph(R, z, one, ms, FINE)
        numpy.testing.assert_allclose(got[0], ref, rtol=1e-8)
        numpy.testing.assert_allclose(got[1], ref / b[k], rtol=1e-8)


@pytest.mark.parametrize("x,y", [(0.02, 0.01), (0.4, -0.3)])
def test_projection_against_scipy(x, y):
    """Default line-of-sight rule vs scipy quad over z' of the (same) intrinsic moments."""
    tr, ms = _pieces()
    inc = numpy.radians(INC)
    si, ci = numpy.sin(inc), numpy.cos(inc)
    mom = jax.jit(lambda a, b: jnp.stack(intrinsic_moments_sph(a, b, tr, ms)))

    def integrand(zp):
        yg, zg = -y * ci + zp * si, y * si + zp * ci
        R = numpy.hypot(x, yg)
        r = numpy.hypot(R, zg)
        Xr, Xt, Xp = numpy.asarray(mom(R, zg))
        n_r = (yg * si + zg * ci) / r
        n_t = (zg * yg / R * si - R * ci) / r
        return n_r**2 * Xr + n_t**2 * Xt + (x / R * si) ** 2 * Xp

    d = numpy.hypot(x, y)
    pts = [-d, 0.0, d]
    ref = sum(integrate.quad(integrand, a, b, points=pts if a < 0 < b else None, epsabs=0, epsrel=1e-10,
                             limit=400)[0] for a, b in ((-20.0, -2.0), (-2.0, 2.0), (2.0, 20.0)))
    got = projected_second_moment_sph(x, y, tr, ms, inc)
    numpy.testing.assert_allclose(got, ref, rtol=1e-6)


# ----------------------------------------------------------------------------- limits
def test_isotropic_equals_cylindrical():
    tr, ms = _pieces(beta=0.0)
    for R, z in [(0.05, 0.02), (0.3, 0.4), (1.0, 0.1), (3.0, 2.0)]:
        a = intrinsic_moments_sph(R, z, tr, ms, FINE)
        sz2, vp2, _ = jam_cyl.intrinsic_moments(R, z, tr, ms)
        numpy.testing.assert_allclose(a, [sz2, sz2, vp2], rtol=1e-8)
    inc = numpy.radians(INC)
    proj = jax.jit(lambda a, b: projected_second_moment_sph(a, b, tr, ms, inc, FINE))
    for x, y in [(0.05, 0.02), (1.0, 0.1)]:
        got = proj(x, y)
        ref = jam_cyl.projected_second_moment(x, y, tr, ms, numpy.sin(inc) ** 2)
        numpy.testing.assert_allclose(got, ref, rtol=1e-8)


@pytest.mark.parametrize("closed_form", [True, False])
def test_round_constant_beta_equals_spherical_jeans(closed_form):
    """Round MGE, constant beta: Sigma sigma_los^2 of the spherical Jeans model (jeans.py).

    ``closed_form=False`` sends the round mass Gaussians through the ``v`` quadrature."""
    mge = MGE.from_observed([2e4, 3e3, 4e2], [0.3, 2.0, 8.0], [1.0, 1.0, 1.0], 16.5)
    mass = mge.scaled(4.0)
    beta = 0.3
    tr, ms = _pieces(tracer=mge, mass=mass, inc=60.0, beta=beta, m_bh=0.0)
    st = SphSettings(round_mass=None if closed_form else (False, False, False, True))
    R = numpy.array([0.01, 0.05, 0.2, 0.5, 1.5])
    ref = numpy.asarray(sigma_los(jnp.asarray(R), mge, mass, ConstantBeta(beta), grid=False)) ** 2
    ref = ref * numpy.asarray(mge.surface_density(jnp.asarray(R)))
    proj = jax.jit(jax.vmap(lambda a, b, inc: projected_second_moment_sph(a, b, tr, ms, inc, st),
                            in_axes=(0, 0, None)))
    for ang in (0.0, 1.0):
        for inc in (40.0, 90.0):
            got = proj(jnp.asarray(R * numpy.cos(ang)), jnp.asarray(R * numpy.sin(ang)), numpy.radians(inc))
            numpy.testing.assert_allclose(got, ref, rtol=1e-6)


# ----------------------------------------------------------------------------- jit, grad, input
def test_jit_grad_and_traced_mass():
    one = MGE(numpy.array([1e9]), numpy.array([0.3]), numpy.array([0.7]))
    tr, ms = _pieces(tracer=one, mass=one.scaled(3.0), beta=0.2)
    rnd = tuple(bool(v) for v in ms[3])
    st = SphSettings(radial=(4, 4), mass=8, los=(3, 4), round_mass=rnd)
    f = jax.jit(lambda t, m, inc: projected_second_moment_sph(0.3, 0.2, t, m, inc, st))
    v = f(tr, ms, 1.2)
    g_inc, g_b, g_m = jax.jacfwd(lambda inc, b, m: f((tr[0], tr[1], tr[2], b), (m, *ms[1:]), inc),
                                 argnums=(0, 1, 2))(1.2, tr[3], ms[0])
    eps = 1e-5
    fd = (f(tr, ms, 1.2 + eps) - f(tr, ms, 1.2 - eps)) / (2 * eps)
    numpy.testing.assert_allclose(g_inc, fd, rtol=1e-6)
    assert numpy.all(numpy.isfinite(numpy.asarray(g_b))) and numpy.all(numpy.isfinite(numpy.asarray(g_m)))
    # linear in the masses
    numpy.testing.assert_allclose(jnp.dot(g_m, ms[0]), v, rtol=1e-10)
    with pytest.raises(ValueError, match="round_mass"):
        jax.jit(lambda m: projected_second_moment_sph(0.3, 0.2, tr, m, 1.2))(ms[:3] + (jnp.asarray(ms[3]),))
    with pytest.raises(ValueError, match="round_mass"):
        split_mass(ms, SphSettings(round_mass=(True,)))


# ----------------------------------------------------------------------------- jampy
def test_against_jampy():
    pytest.importorskip("jampy")
    pytest.importorskip("matplotlib").use("Agg")
    from jampy.axi.jam_axi_proj import jam_axi_proj

    surf = numpy.array([2e4, 5e3, 1e3, 2e2])
    sig = numpy.array([0.3, 1.2, 4.0, 12.0])
    q = numpy.array([0.85, 0.7, 0.65, 0.75])
    dist, inc, ml, mbh = 16.5, 65.0, 3.0, 2e8
    beta = numpy.array([0.2, 0.1, 0.0, -0.1])
    xb, yb = (a.ravel() for a in numpy.meshgrid(numpy.linspace(-10, 10, 4) + 0.13, numpy.linspace(-6, 6, 4) + 0.07))
    j = jam_axi_proj(surf, sig, q, surf * ml, sig, q, inc, mbh, dist, xb, yb, beta=beta, plot=False, quiet=True,
                     ml=1, align="sph")
    kpc = dist * numpy.pi / 0.648e3
    tracer = MGE.from_observed(surf, sig, q, dist)
    tr, ms = _pieces(tracer=tracer, mass=tracer.scaled(ml), inc=inc, beta=beta, m_bh=mbh)
    s2 = jax.jit(jax.vmap(lambda a, b: projected_second_moment_sph(a, b, tr, ms, numpy.radians(inc))))(
        jnp.asarray(xb * kpc), jnp.asarray(yb * kpc))
    ours = numpy.sqrt(numpy.asarray(s2) / numpy.asarray(tracer.projected(xb * kpc, yb * kpc)))
    rel = numpy.abs(j.model / (ours * numpy.sqrt(0.004301 / (G * 1e3))) - 1)
    # jampy's spherical alignment is good to ~4e-3 at its defaults (DESIGN.md); ours to ~1e-7
    assert numpy.median(rel) < 3e-3
    assert rel.max() < 1e-2


def test_jam_vrms_align_sph_isotropic_equals_cylindrical():
    from dynamics import NFW, JamSettings, jam_vrms

    mge = MGE.from_observed([2e4, 3e3, 4e2], [0.3, 2.0, 8.0], [0.8, 0.7, 0.6], 16.5)
    x, y = jnp.array([0.05, 0.3, -0.6]), jnp.array([0.1, -0.2, 0.4])
    kw = dict(inclination=70.0, beta=0.0, m_bh=1e8, settings=JamSettings(halo_range=(0.01, 20.0)))
    mass = mge.scaled(4.0) + NFW(1e7, 5.0)
    numpy.testing.assert_allclose(jam_vrms(x, y, mge, mass, align="sph", **kw), jam_vrms(x, y, mge, mass, **kw),
                                  rtol=1e-8)
    with pytest.raises(ValueError, match="align"):
        jam_vrms(x, y, mge, mass, align="spherical", **kw)
