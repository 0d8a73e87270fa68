"""Rotation table of the first moment (dynamics.jam_cyl_rotation) against the per-point Jeans solution."""

import jax
import jax.numpy as jnp
import numpy
import pytest

from dynamics import MGE, NFW, JamSettings, fit_mge_weights
from dynamics import jam_cyl
from dynamics.jam import _setup
from dynamics.jam_cyl_rotation import interpolate, rotation_table

pytestmark = pytest.mark.timeout(300)

TRACER = MGE.from_observed([3e5, 4e4, 2e3, 60.0], [0.05, 0.5, 4.0, 30.0], [0.9, 0.8, 0.7, 0.6], 16.5)
INC, BETA, M_BH = 65.0, numpy.array([0.3, 0.1, 0.0, -0.1]), 2e8


def test_table_interpolates_the_jeans_solution():
    _, _, tr, ms, _ = _setup(jnp.zeros(1), jnp.zeros(1), TRACER, TRACER.scaled(3.0), INC, BETA, M_BH, 0.0,
                             None, 0.0, JamSettings())
    m_h, s_h = fit_mge_weights(NFW(1e7, 8.0), 0.0005, 30.0, 32)
    flat = (ms[0][:-1], ms[1][:-1], ms[2][:-1])
    # the per-point rule with the halo as extra round Gaussians and the point mass last
    ms_all = (jnp.concatenate([ms[0][:-1], m_h, ms[0][-1:]]), jnp.concatenate([ms[1][:-1], s_h, ms[1][-1:]]),
              jnp.concatenate([ms[2][:-1], jnp.zeros(32), ms[2][-1:]]),
              jnp.concatenate([ms[3][:-1], jnp.zeros(32, bool), ms[3][-1:]]))
    per_k = [tuple(a[k:k + 1] for a in tr) for k in range(4)]
    f = jax.jit(lambda R, z, t: jam_cyl.intrinsic_moments(R, z, t, ms_all, (16, 10)))

    def exact(R, z):
        out = []
        for k in range(4):
            sz, vp, nu = f(R, z, per_k[k])
            out.append(vp - tr[3][k] * sz)
        return numpy.array(out)

    def nu(R, z):
        return numpy.asarray(tr[0] * jnp.exp(-(R**2 + (z / tr[2]) ** 2) / (2 * tr[1] ** 2)))

    rng = numpy.random.default_rng(3)
    pts = numpy.concatenate([numpy.exp(rng.uniform(numpy.log(1e-4), numpy.log(3.0), (12, 2))),
                             [[0.0, 0.01], [0.02, 0.0]]])
    errs = {}
    for n in (128, 256):
        table = rotation_table(tr, flat, (m_h, s_h), M_BH, 10.0, n, (12, 8))
        # the table holds excess / nu; compare the excess itself (nu underflows far out)
        got = numpy.array([nu(R, z) * numpy.asarray(interpolate(table, R, z)) for R, z in pts])
        ref = numpy.array([exact(R, z) for R, z in pts])
        scale = numpy.abs(ref).max(axis=0)             # per Gaussian
        errs[n] = numpy.max(numpy.abs(got - ref) / scale)
    # worst next to the black hole (scale-free there), ~1e-7 elsewhere
    assert errs[128] < 3e-5
    # fourth-order convergence: halving the step divides the error by about 16
    assert errs[256] < errs[128] / 4


def test_first_moment_with_halo_and_black_hole_against_brute_force():
    # far from the centre (the table's logarithmic outskirts) and near it, rotation of the
    # whole tracer (no clipping kink on these lines of sight): scipy quadrature of the
    # per-point Jeans solution along the line of sight
    from scipy import integrate

    from dynamics import jam_velocity

    halo = NFW(1e7, 8.0)
    settings = JamSettings(halo_range=(0.0005, 30.0))
    _, _, tr, ms, _ = _setup(jnp.zeros(1), jnp.zeros(1), TRACER, TRACER.scaled(3.0), INC, 0.1, M_BH, 0.0, None,
                             0.0, JamSettings())
    m_h, s_h = fit_mge_weights(halo, 0.0005, 30.0, 32)
    ms_all = (jnp.concatenate([ms[0][:-1], m_h, ms[0][-1:]]), jnp.concatenate([ms[1][:-1], s_h, ms[1][-1:]]),
              jnp.concatenate([ms[2][:-1], jnp.zeros(32), ms[2][-1:]]),
              jnp.concatenate([ms[3][:-1], jnp.zeros(32, bool), ms[3][-1:]]))
    f = jax.jit(lambda R, z: jam_cyl.intrinsic_moments(R, z, tr, ms_all, (16, 10)))
    inc = numpy.radians(INC)
    b = 1.0 / (1.0 - 0.1)
    x, y = numpy.array([0.02, 1.5]), numpy.array([0.01, 0.3])
    got = jam_velocity(x, y, TRACER, TRACER.scaled(3.0) + halo, inclination=INC, beta=0.1, m_bh=M_BH,
                       rotation="total", settings=settings)
    for xk, yk, g in zip(x, y, numpy.asarray(got)):
        def integrand(zp):
            yy, zz = -yk * numpy.cos(inc) + zp * numpy.sin(inc), yk * numpy.sin(inc) + zp * numpy.cos(inc)
            R = numpy.hypot(xk, yy)
            sz, vp, nu = f(R, zz)
            return numpy.sqrt(float(nu) * max(float(vp - b * sz), 0.0)) * xk / R * numpy.sin(inc)

        edges = numpy.concatenate([-numpy.geomspace(1e-7, 20.0, 60)[::-1], numpy.geomspace(1e-7, 20.0, 60)])
        ref = sum(integrate.quad(integrand, a, c, epsabs=0, epsrel=1e-10, limit=200)[0]
                  for a, c in zip(edges[:-1], edges[1:])) / float(TRACER.projected(xk, yk))
        numpy.testing.assert_allclose(g, ref, rtol=2e-5)
