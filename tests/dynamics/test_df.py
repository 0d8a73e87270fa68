"""Distribution functions: Eddington / Osipkov-Merritt inversions against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from dynamics import NFW, Hernquist, Plummer, Zhao
from dynamics.constants import G
from dynamics.df import (
    df_moments,
    eddington_df,
    hernquist_df,
    osipkov_merritt_df,
    plummer_df,
)

M, A = 1e7, 0.3
RADII = np.array([0.01, 0.1, 0.3, 1.0, 3.0, 30.0])


@pytest.fixture(scope="module")
def plummer():
    return Plummer(M, A)


@pytest.fixture(scope="module")
def iso_df(plummer):
    return eddington_df(plummer, plummer)


def _psi0_plummer():
    return G * M / A


def test_closed_forms_integrate_to_density():
    # independent check of the closed forms by scipy quadrature: rho = 4 pi int f v^2 dv
    p = Plummer(M, A)
    h = Hernquist(M, A)
    for r in (0.05, 0.3, 2.0):
        for r_a in (np.inf, 0.4):
            psi = G * M / np.sqrt(r**2 + A**2)
            k2 = 1.0 + r**2 / r_a**2
            # OM: isotropic in (v_r, k v_t) -> rho k^2 = 4 pi int f(psi - w^2/2) w^2 dw
            val, _ = integrate.quad(
                lambda w: float(plummer_df(psi - 0.5 * w * w, 0.0, M, A, r_a)) * w * w,
                0.0, np.sqrt(2 * psi), epsabs=0, epsrel=1e-12)
            assert 4 * np.pi * val / k2 == pytest.approx(float(p.density(r)), rel=1e-9)
        psi = G * M / (r + A)
        val, _ = integrate.quad(lambda v: float(hernquist_df(psi - 0.5 * v * v, M, A)) * v * v,
                                0.0, np.sqrt(2 * psi), epsabs=0, epsrel=1e-12)
        assert 4 * np.pi * val == pytest.approx(float(h.density(r)), rel=1e-9)


def test_plummer_isotropic_matches_closed_form(iso_df):
    e = jnp.linspace(1e-3, 0.999, 23) * _psi0_plummer()
    ratio = iso_df(e) / plummer_df(e, 0.0, M, A)
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-9)
    # f is proportional to E^{7/2}
    np.testing.assert_allclose(iso_df(e) / e**3.5, iso_df(e[0]) / e[0] ** 3.5, rtol=1e-9)
    assert iso_df(-1.0) == 0.0
    assert iso_df.is_physical()


@pytest.mark.parametrize("r_a", [0.5, 3.0])
def test_plummer_osipkov_merritt_matches_closed_form(plummer, r_a):
    om = osipkov_merritt_df(plummer, plummer, r_a)
    q = jnp.linspace(1e-3, 0.999, 23) * _psi0_plummer()
    np.testing.assert_allclose(om.of_q(q) / plummer_df(q, 0.0, M, A, r_a), 1.0, rtol=1e-7)
    # f(E, L) depends on Q = E - L^2 / (2 r_a^2)
    e, ang = 0.6 * _psi0_plummer(), 2.0
    np.testing.assert_allclose(om(e, ang), plummer_df(e, ang, M, A, r_a), rtol=1e-7)


def test_osipkov_merritt_positivity_threshold(plummer):
    # Plummer OM is physical iff r_a >= 3a/4 (f(Q=Psi0) >= 0 in the closed form)
    assert osipkov_merritt_df(plummer, plummer, 0.8 * A).is_physical()
    assert not osipkov_merritt_df(plummer, plummer, 0.7 * A).is_physical()


def test_hernquist_cusp_matches_closed_form():
    h = Hernquist(M, A)
    d = eddington_df(h, h)
    e = jnp.array([1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99, 0.999]) * G * M / A
    np.testing.assert_allclose(d(e) / hernquist_df(e, M, A), 1.0, rtol=2e-6)


def test_moments_reproduce_plummer_closed_forms(plummer, iso_df):
    rho, s_r2, s_t2 = df_moments(iso_df, RADII, plummer)
    np.testing.assert_allclose(rho, plummer.density(RADII), rtol=1e-9)
    # isotropic Plummer: sigma^2 = G M / (6 sqrt(r^2 + a^2))
    np.testing.assert_allclose(s_r2, G * M / (6 * np.sqrt(RADII**2 + A**2)), rtol=1e-9)
    np.testing.assert_allclose(s_t2, s_r2, rtol=1e-12)


def _om_sigma_r2_quad(tracer, mass, r_a, r):
    # Jeans equation with beta = r^2/(r^2+r_a^2): integrating factor (1 + r^2/r_a^2)
    def integrand(s):
        return float(tracer.density(s) * (1 + s**2 / r_a**2) * G * mass.enclosed_mass(s) / s**2)

    val = integrate.quad(integrand, r, np.inf, epsabs=0, epsrel=1e-11, limit=200)[0]
    return val / (float(tracer.density(r)) * (1 + r**2 / r_a**2))


@pytest.mark.parametrize("halo_kind, r_a", [("nfw", np.inf), ("nfw", 0.4), ("zhao", np.inf)])
def test_density_and_jeans_moments_tracer_in_halo(halo_kind, r_a):
    # a tracer in an external (cuspy) potential: the DF's moments reproduce rho and the
    # Jeans sigma_r (scipy quadrature), with beta(r) = r^2/(r^2 + r_a^2)
    tracer = Plummer(1.0, A)
    halo = NFW(1e8, 0.5) if halo_kind == "nfw" else Zhao(1e8, 0.5, 2.0, 5.0, 0.5)
    d = eddington_df(tracer, halo) if np.isinf(r_a) else osipkov_merritt_df(tracer, halo, r_a)
    r = np.array([0.02, 0.1, 0.3, 1.0, 3.0])
    rho, s_r2, s_t2 = df_moments(d, r, halo)
    np.testing.assert_allclose(rho, tracer.density(r), rtol=5e-6)
    ref = np.array([_om_sigma_r2_quad(tracer, halo, r_a, ri) for ri in r])
    np.testing.assert_allclose(s_r2, ref, rtol=5e-6)
    np.testing.assert_allclose(1 - s_t2 / s_r2, r**2 / (r**2 + r_a**2), atol=1e-12)


def test_jit_equals_eager_and_gradient(plummer):
    e = 0.3 * _psi0_plummer()
    eager = eddington_df(plummer, plummer, n_grid=32, n_quad=48)(e)
    jitted = jax.jit(lambda p: eddington_df(p, p, n_grid=32, n_quad=48)(e))(plummer)
    np.testing.assert_allclose(jitted, eager, rtol=1e-13)

    # d f / d r_s through the whole inversion vs the closed form's derivative
    def f_of_rs(rs):
        p = Plummer(M, rs)
        return eddington_df(p, p, n_grid=32, n_quad=48)(e)

    g = jax.grad(f_of_rs)(A)
    g_ref = jax.grad(lambda rs: plummer_df(e, 0.0, M, rs))(A)
    np.testing.assert_allclose(g, g_ref, rtol=1e-7)


def test_bad_input(plummer):
    with pytest.raises(ValueError, match="r_a"):
        osipkov_merritt_df(plummer, plummer, 0.0)
    with pytest.raises(ValueError, match="r_a"):
        osipkov_merritt_df(plummer, plummer, -1.0)
    with pytest.raises(ValueError, match="r_a"):
        osipkov_merritt_df(plummer, plummer, np.nan)
    with pytest.raises(ValueError, match="r_min"):
        eddington_df(plummer, plummer, r_min=1.0, r_max=0.5)
    with pytest.raises(ValueError, match="r_min"):
        eddington_df(plummer, plummer, r_min=0.0)
    with pytest.raises(ValueError, match="n_grid"):
        eddington_df(plummer, plummer, n_grid=4)
